"""Voiceprints: the binary record, its base64 form, and batch decoding into one matrix.

The record layout (docs/voiceprint-format.md) is fixed and little-endian, and its length is a
multiple of three bytes, so base64 carries no '=' padding. A request of many voiceprints of one
model is therefore decoded by joining the base64 texts and decoding them in one call, then
checking every record at once as rows of a byte matrix. Only when that fast path finds a problem
are items looked at one by one, to name the first bad item and why it is bad.

Version 2 (written now) adds a condition block after the version 1 header: the condition, the
effective bandwidth, an SNR estimate and score-normalisation statistics. Version 1 records stay
readable. A request may mix both: every record of one model and version has one length, so the
items are grouped by length (one C-level pass), each group joined and decoded as above, and the
rows scattered back into input order.
"""

from __future__ import annotations

import binascii
import itertools
import math
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt
import pybase64

from voxmatch.models.registry import (
    DEFAULT_MODEL_NAME,
    MODEL_NAME_MAX_BYTES,
    UnknownModelError,
    describe,
)

MAGIC = b"VXVP"
FORMAT_VERSION = 2
"""The version written."""
SUPPORTED_VERSIONS = (1, 2)
"""The versions read."""
_HEADER = struct.Struct(f"<4sHHf{MODEL_NAME_MAX_BYTES}s")
HEADER_SIZE = _HEADER.size  # 44
"""The header every version starts with: magic, version, dimension, speech length, model."""
_CONDITION_BLOCK = struct.Struct("<B3xffff")
"""Version 2, after the header: condition, 3 reserved zero bytes, bandwidth (Hz), SNR (dB),
cohort mean, cohort std."""
_CONDITION_OFFSET = HEADER_SIZE
_RESERVED = slice(HEADER_SIZE + 1, HEADER_SIZE + 4)
_CONDITION_FLOATS = slice(HEADER_SIZE + 4, HEADER_SIZE + _CONDITION_BLOCK.size)
_CRC_SIZE = 4
MAX_EMBEDDING_DIM = 8192
MAX_EMBEDDING_VALUE = 1e4
"""Largest magnitude of an embedding value. Real embeddings stay within a few hundred; the bound
keeps the squared norm of the largest embedding (8192 x 1e8) far inside float32, where values
near its maximum would give infinite norms and NaN scores."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)

FloatMatrix = npt.NDArray[np.float32]

WIDEBAND = 0
"""Condition code of a voiceprint made from audio with content above about 4 kHz; also the
documented condition of every version 1 voiceprint."""
NARROWBAND = 1
"""Condition code of a voiceprint made from telephone-band audio (nothing above about 4 kHz,
whatever the file's sample rate)."""


def embedding_offset(version: int = FORMAT_VERSION) -> int:
    """Where the embedding starts in a record of `version`: 44 (version 1) or 64 (version 2)."""
    return HEADER_SIZE if version == 1 else HEADER_SIZE + _CONDITION_BLOCK.size


def record_size(embedding_dim: int, version: int = FORMAT_VERSION) -> int:
    """Bytes of one voiceprint record: header (and condition block from version 2), embedding,
    zero padding to a multiple of 3, CRC."""
    unpadded = embedding_offset(version) + 4 * embedding_dim + _CRC_SIZE
    return unpadded + (-unpadded) % 3


class VoiceprintError(ValueError):
    """A voiceprint that cannot be used, with the index of the item and a short reason code.

    Reason codes: base64, magic, version, truncated, checksum, unknown-model, mixed-models,
    dimension, non-finite, range, speech-length, padding, type; from version 2 also condition,
    reserved, bandwidth, snr, cohort.
    """

    def __init__(self, index: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.reason = reason
        self.message = message


@dataclass(frozen=True, eq=False)
class Voiceprint:
    """One voice: a speaker embedding, the seconds of speech behind it, and its model's name,
    with what calibration needs to know of the audio it came from."""

    embedding: FloatMatrix
    speech_length: float
    model: str
    condition: int = WIDEBAND
    """`WIDEBAND` or `NARROWBAND`: which calibration its scores use."""
    bandwidth: float = 0.0
    """Effective bandwidth of the audio in Hz, detected from its content; 0 = not measured
    (version 1 voiceprints, embeddings wrapped from another system)."""
    snr: float = 0.0
    """Signal-to-noise estimate in dB; meaningful only where `bandwidth` is not 0."""
    cohort_mean: float = 0.0
    """Mean of the top-N cosines of this embedding against a cohort (`voxmatch.cohort`)."""
    cohort_std: float = 0.0
    """Their standard deviation; 0 together with `cohort_mean` 0 = not computed."""

    MAGIC: ClassVar[bytes] = MAGIC

    @classmethod
    def from_embedding(
        cls,
        vector: npt.ArrayLike,
        *,
        speech_length: float,
        model: str = DEFAULT_MODEL_NAME,
        condition: int = WIDEBAND,
        bandwidth: float = 0.0,
        snr: float = 0.0,
        cohort_mean: float = 0.0,
        cohort_std: float = 0.0,
    ) -> Voiceprint:
        """Wrap an embedding (from voxmatch or another system) as a voiceprint of `model`.

        The vector must have the model's embedding size and finite values of magnitude at most
        `MAX_EMBEDDING_VALUE`; the other fields are checked as decoding checks them.
        """
        description = describe(model)
        embedding = np.array(vector, dtype=np.float32).reshape(-1)
        if embedding.size != description.embedding_dim:
            raise VoiceprintError(
                0,
                "dimension",
                f"model {model!r} makes {description.embedding_dim}-dimensional embeddings, "
                f"got {embedding.size} values",
            )
        if not np.isfinite(embedding).all():
            raise VoiceprintError(0, "non-finite", "embedding holds NaN or infinite values")
        if (np.abs(embedding) > MAX_EMBEDDING_VALUE).any():
            raise _out_of_range(0)
        # The record stores float32: a larger value would become infinity there.
        if not (math.isfinite(speech_length) and 0 <= speech_length <= _FLOAT32_MAX):
            raise VoiceprintError(
                0, "speech-length", f"speech_length must be >= 0 seconds, got {speech_length}"
            )
        fields = _ConditionFields(
            np.array([condition], dtype=np.int64),
            np.zeros((1, 3), dtype=np.uint8),
            np.array([[bandwidth, snr, cohort_mean, cohort_std]], dtype=np.float64),
        )
        problem = fields.first_problem()
        if problem is not None:
            raise VoiceprintError(0, problem[1], problem[2])
        embedding.setflags(write=False)
        return cls(
            embedding=embedding,
            speech_length=float(speech_length),
            model=model,
            condition=int(condition),
            bandwidth=float(bandwidth),
            snr=float(snr),
            cohort_mean=float(cohort_mean),
            cohort_std=float(cohort_std),
        )

    def to_bytes(self) -> bytes:
        return VoiceprintBatch.of([self]).to_bytes_list()[0]

    def to_base64(self) -> str:
        return pybase64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Voiceprint:
        return decode_bytes_batch([data])[0]

    @classmethod
    def from_base64(cls, text: str) -> Voiceprint:
        return decode_base64_batch([text])[0]

    def __repr__(self) -> str:
        condition = "narrowband" if self.condition == NARROWBAND else "wideband"
        return (
            f"Voiceprint(model={self.model!r}, speech_length={self.speech_length:.2f}, "
            f"dim={self.embedding.size}, condition={condition}, bandwidth={self.bandwidth:.0f})"
        )


def _zeros_float32() -> npt.NDArray[np.float32]:
    return np.empty(0, np.float32)


@dataclass(frozen=True)
class VoiceprintBatch:
    """Many voiceprints of one model as a matrix: row i is item i of the input list.

    The per-row arrays after `model` may be left out: then every row is `WIDEBAND`, of
    unmeasured bandwidth (0), SNR 0 and no cohort statistics, as a version 1 voiceprint is.
    """

    embeddings: FloatMatrix
    speech_lengths: npt.NDArray[np.float32]
    model: str
    conditions: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    """`WIDEBAND` or `NARROWBAND` per row."""
    bandwidths: npt.NDArray[np.float32] = field(default_factory=_zeros_float32)
    """Effective bandwidth per row, Hz (0 = not measured)."""
    snrs: npt.NDArray[np.float32] = field(default_factory=_zeros_float32)
    """SNR estimate per row, dB."""
    cohort_means: npt.NDArray[np.float32] = field(default_factory=_zeros_float32)
    cohort_stds: npt.NDArray[np.float32] = field(default_factory=_zeros_float32)
    """Score-normalisation statistics per row (0 and 0 = not computed)."""

    def __post_init__(self) -> None:
        for name, dtype in _PER_ROW_FIELDS:
            values = getattr(self, name)
            if values.size == 0 and len(self) > 0:
                # Frozen: the default is filled in once, at construction (WIDEBAND is 0).
                object.__setattr__(self, name, np.zeros(len(self), dtype))
            elif values.shape != (len(self),):
                raise ValueError(f"{name} must hold one value per voiceprint")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __getitem__(self, index: int) -> Voiceprint:
        embedding = self.embeddings[index].copy()
        embedding.setflags(write=False)
        return Voiceprint(
            embedding,
            float(self.speech_lengths[index]),
            self.model,
            int(self.conditions[index]),
            float(self.bandwidths[index]),
            float(self.snrs[index]),
            float(self.cohort_means[index]),
            float(self.cohort_stds[index]),
        )

    def __iter__(self) -> Iterator[Voiceprint]:
        """The voiceprints in order, each a copy of its row (as `batch[i]` gives it)."""
        for index in range(len(self)):
            yield self[index]

    @classmethod
    def of(cls, voiceprints: Sequence[Voiceprint]) -> VoiceprintBatch:
        """Stack voiceprints of one model into a batch."""
        if not voiceprints:
            raise ValueError("no voiceprints given: a batch needs at least one")
        model = voiceprints[0].model
        for index, voiceprint in enumerate(voiceprints):
            if voiceprint.model != model:
                raise _mixed_models(index, voiceprint.model, model)

        def column(name: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
            return np.array([getattr(vp, name) for vp in voiceprints], dtype=dtype)

        return cls(
            embeddings=np.stack([vp.embedding for vp in voiceprints]),
            speech_lengths=column("speech_length", np.float32),
            model=model,
            conditions=column("condition", np.uint8),
            bandwidths=column("bandwidth", np.float32),
            snrs=column("snr", np.float32),
            cohort_means=column("cohort_mean", np.float32),
            cohort_stds=column("cohort_std", np.float32),
        )

    @classmethod
    def coerce(cls, voiceprints: VoiceprintBatch | Sequence[Voiceprint]) -> VoiceprintBatch:
        """The batch itself, or a batch of the voiceprints (for functions taking either)."""
        return voiceprints if isinstance(voiceprints, VoiceprintBatch) else cls.of(voiceprints)

    def to_bytes_list(self) -> list[bytes]:
        blob = self._encode()
        size = record_size(self.embeddings.shape[1])
        return [blob[start : start + size] for start in range(0, len(blob), size)]

    def to_base64_list(self) -> list[str]:
        """Base64 of every record; one encode call for the whole batch (no padding to split)."""
        size = record_size(self.embeddings.shape[1])
        text = pybase64.b64encode(self._encode()).decode("ascii")
        width = size // 3 * 4
        return [text[start : start + width] for start in range(0, len(text), width)]

    def _encode(self) -> bytes:
        return encode_records(
            self.embeddings,
            self.speech_lengths,
            self.model,
            conditions=self.conditions,
            bandwidths=self.bandwidths,
            snrs=self.snrs,
            cohort_means=self.cohort_means,
            cohort_stds=self.cohort_stds,
        )


_PER_ROW_FIELDS: tuple[tuple[str, type[np.generic]], ...] = (
    ("conditions", np.uint8),
    ("bandwidths", np.float32),
    ("snrs", np.float32),
    ("cohort_means", np.float32),
    ("cohort_stds", np.float32),
)


def encode_records(
    embeddings: FloatMatrix,
    speech_lengths: npt.NDArray[np.float32],
    model: str,
    *,
    conditions: npt.ArrayLike = WIDEBAND,
    bandwidths: npt.ArrayLike = 0.0,
    snrs: npt.ArrayLike = 0.0,
    cohort_means: npt.ArrayLike = 0.0,
    cohort_stds: npt.ArrayLike = 0.0,
) -> bytes:
    """Serialise rows of `embeddings` as consecutive version 2 voiceprint records.

    The condition fields are per row, or one value for every row.
    """
    count, dim = embeddings.shape
    size = record_size(dim)
    records = np.zeros((count, size), dtype=np.uint8)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, dim, 0.0, model.encode("utf-8"))
    records[:, :HEADER_SIZE] = np.frombuffer(header, dtype=np.uint8)
    records[:, 8:12] = _float_bytes(speech_lengths, count)
    records[:, _CONDITION_OFFSET] = np.broadcast_to(np.asarray(conditions, np.uint8), (count,))
    floats = np.empty((count, 4), dtype="<f4")
    for column, values in enumerate((bandwidths, snrs, cohort_means, cohort_stds)):
        floats[:, column] = values
    records[:, _CONDITION_FLOATS] = floats.view(np.uint8)
    offset = embedding_offset()
    body_end = offset + 4 * dim
    records[:, offset:body_end] = (
        np.ascontiguousarray(embeddings, dtype="<f4").view(np.uint8).reshape(count, 4 * dim)
    )
    crc_start = size - _CRC_SIZE
    blob = records.reshape(-1).data
    checksums = np.fromiter(
        (zlib.crc32(blob[row * size : row * size + crc_start]) for row in range(count)),
        dtype="<u4",
        count=count,
    )
    records[:, crc_start:] = checksums.view(np.uint8).reshape(count, 4)
    return records.tobytes()


def _float_bytes(values: npt.ArrayLike, count: int) -> npt.NDArray[np.uint8]:
    column = np.ascontiguousarray(np.broadcast_to(np.asarray(values, "<f4"), (count,)))
    return column.view(np.uint8).reshape(count, 4)


def decode_base64_batch(items: Sequence[str], model: str | None = None) -> VoiceprintBatch:
    """Decode base64 voiceprints into one batch, or raise VoiceprintError for the first bad one.

    `model`, when given, is the model every item must belong to (for instance the model of
    the other list of a comparison). Items of format versions 1 and 2 may be mixed.
    """
    if not items:
        raise ValueError("no voiceprints to decode")
    first = _decode_first(items[0])
    reference = _Reference.of(first)
    widths = [record_size(reference.dim, version) // 3 * 4 for version in SUPPORTED_VERSIONS]
    try:
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        if not _of_known_length(lengths, widths).all():
            # Surrounding whitespace (the newline ending a .vp file) is not part of the base64,
            # as for common base64 decoders; stripped in C, without a Python loop per item.
            items = list(map(str.strip, items))
            lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    except TypeError:
        raise _find_bad_base64(items) from None
    wrong_length = np.flatnonzero(~_of_known_length(lengths, widths))
    if wrong_length.size:
        raise _diagnose_base64(items, int(wrong_length[0]), reference.dim)
    groups = []
    for version, width in zip(SUPPORTED_VERSIONS, widths, strict=True):
        chosen, positions = _select(items, lengths == width)
        if positions is not None and positions.size == 0:
            continue
        try:
            joined = "".join(chosen)
        except TypeError:
            raise _find_bad_base64(items) from None
        try:
            raw = pybase64.b64decode(joined, validate=True)
        except (binascii.Error, ValueError):
            raise _find_bad_base64(items) from None
        del joined
        size = record_size(reference.dim, version)
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
        groups.append(_Group(version, records, positions))
    return _parse_groups(groups, len(items), reference, model)


def decode_bytes_batch(items: Sequence[bytes], model: str | None = None) -> VoiceprintBatch:
    """Decode binary voiceprints (as gRPC carries them) into one batch; versions may mix."""
    if not items:
        raise ValueError("no voiceprints to decode")
    first = items[0]
    _check_header_prefix(first, 0)
    if len(first) < HEADER_SIZE:
        raise _length_error(0, first, int.from_bytes(first[6:8], "little"))
    reference = _Reference.of(first)
    sizes = [record_size(reference.dim, version) for version in SUPPORTED_VERSIONS]
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    wrong_length = np.flatnonzero(~_of_known_length(lengths, sizes))
    if wrong_length.size:
        index = int(wrong_length[0])
        _check_header_prefix(items[index], index)
        raise _length_error(index, items[index], reference.dim)
    groups = []
    for version, size in zip(SUPPORTED_VERSIONS, sizes, strict=True):
        chosen, positions = _select(items, lengths == size)
        if positions is not None and positions.size == 0:
            continue
        records = np.frombuffer(b"".join(chosen), dtype=np.uint8).reshape(-1, size)
        groups.append(_Group(version, records, positions))
    return _parse_groups(groups, len(items), reference, model)


def _of_known_length(lengths: npt.NDArray[np.int64], known: list[int]) -> npt.NDArray[np.bool_]:
    mask: npt.NDArray[np.bool_] = lengths == known[0]
    for length in known[1:]:
        mask |= lengths == length
    return mask


_Item = TypeVar("_Item", str, bytes)


def _select(
    items: Sequence[_Item], mask: npt.NDArray[np.bool_]
) -> tuple[Iterable[_Item], npt.NDArray[np.intp] | None]:
    """The items where `mask` is true, and their positions; (all items, None) when all are."""
    if mask.all():
        return items, None
    # compress runs in C: no Python loop per item.
    return itertools.compress(items, mask.tolist()), np.flatnonzero(mask)


@dataclass(frozen=True)
class _Reference:
    """What every record of a request must share with the first: embedding size and model."""

    dim: int
    model_field: npt.NDArray[np.uint8]

    @classmethod
    def of(cls, head: bytes) -> _Reference:
        return cls(
            int.from_bytes(head[6:8], "little"),
            np.frombuffer(head[12:HEADER_SIZE], dtype=np.uint8),
        )


def _decode_first(text: str) -> bytes:
    """Enough of the first item to learn the embedding size the whole batch should have."""
    if not isinstance(text, str):
        raise VoiceprintError(0, "type", "a voiceprint must be a base64 string")
    try:
        head = pybase64.b64decode(text.lstrip()[: (HEADER_SIZE + 2) // 3 * 4], validate=True)
    except (binascii.Error, ValueError):
        raise _single_base64_error(0, text) from None
    _check_header_prefix(head, 0)
    if len(head) < HEADER_SIZE:
        raise VoiceprintError(
            0, "truncated", f"voiceprint is truncated: {len(head)} bytes, header needs 44"
        )
    return head


def _check_header_prefix(data: bytes, index: int) -> None:
    if len(data) < 8:
        raise VoiceprintError(
            index, "truncated", f"voiceprint is truncated: {len(data)} bytes, header needs 8"
        )
    if data[:4] != MAGIC:
        raise VoiceprintError(
            index,
            "magic",
            "not a voxmatch voiceprint (wrong magic bytes); voiceprints of other products, "
            "such as Phonexia's UBJSON voiceprints, cannot be compared with voxmatch models",
        )
    version = int.from_bytes(data[4:6], "little")
    if version not in SUPPORTED_VERSIONS:
        raise _version_error(index, version)
    dim = int.from_bytes(data[6:8], "little")
    if not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise VoiceprintError(index, "dimension", f"embedding size {dim} is out of range")


def _version_error(index: int, version: int) -> VoiceprintError:
    readable = " and ".join(map(str, SUPPORTED_VERSIONS))
    return VoiceprintError(
        index,
        "version",
        f"voiceprint format version {version} is not supported (this server reads "
        f"versions {readable})",
    )


def _single_base64_error(index: int, text: object) -> VoiceprintError:
    if not isinstance(text, str):
        return VoiceprintError(index, "type", "a voiceprint must be a base64 string")
    return VoiceprintError(
        index,
        "base64",
        "voiceprint is not valid base64 (standard alphabet, no line breaks or spaces inside)",
    )


def _find_bad_base64(items: Sequence[str]) -> VoiceprintError:
    for index, text in enumerate(items):
        if not isinstance(text, str):
            return _single_base64_error(index, text)
        try:
            pybase64.b64decode(text, validate=True)
        except (binascii.Error, ValueError, TypeError):
            return _single_base64_error(index, text)
    return VoiceprintError(0, "base64", "voiceprints are not valid base64")


def _diagnose_base64(items: Sequence[str], index: int, dim: int) -> VoiceprintError:
    """Explain why item `index` has a length that fits no record of the batch's model."""
    text = items[index]
    if not isinstance(text, str):
        return _single_base64_error(index, text)
    try:
        data = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _single_base64_error(index, text)
    return _diagnose_record(index, data, dim)


def _diagnose_record(index: int, data: bytes, dim: int) -> VoiceprintError:
    """Explain why a record's header does not fit its length for the batch's embedding size."""
    try:
        _check_header_prefix(data, index)
    except VoiceprintError as error:
        return error
    return _length_error(index, data, dim)


def _length_error(index: int, data: bytes, dim: int) -> VoiceprintError:
    """A record (whose header prefix is valid) of a length that is not a record of `dim`
    values of its own version."""
    own_version = int.from_bytes(data[4:6], "little")
    own_dim = int.from_bytes(data[6:8], "little")
    actual = len(data)
    expected = record_size(dim, own_version)
    if actual >= HEADER_SIZE and actual == record_size(own_dim, own_version):
        own_model = _model_name(data[12:HEADER_SIZE])
        return VoiceprintError(
            index,
            "mixed-models",
            f"voiceprint of model {own_model!r} ({own_dim} values) cannot be compared with the "
            "other voiceprints of this request, which belong to another model",
        )
    if actual < expected:
        return VoiceprintError(
            index, "truncated", f"voiceprint is truncated: {actual} bytes, expected {expected}"
        )
    return VoiceprintError(
        index, "truncated", f"voiceprint has {actual} bytes, expected {expected}"
    )


def _model_name(field: bytes) -> str:
    return field.rstrip(b"\0").decode("utf-8", errors="replace")


def _out_of_range(index: int) -> VoiceprintError:
    return VoiceprintError(
        index,
        "range",
        f"voiceprint embedding holds values beyond +-{MAX_EMBEDDING_VALUE:g}, which no speaker"
        " model produces",
    )


def _mixed_models(index: int, found: str, expected: str) -> VoiceprintError:
    return VoiceprintError(
        index,
        "mixed-models",
        f"voiceprint of model {found!r} cannot be compared with voiceprints of model "
        f"{expected!r}: scores between different models mean nothing",
    )


Problems = list[tuple[int, VoiceprintError]]


def _first_row(mask: npt.NDArray[np.bool_]) -> int | None:
    """The first row where `mask` (rows, or rows x columns) is true."""
    bad = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    return int(bad[0]) if bad.size else None


@dataclass(frozen=True)
class _ConditionFields:
    """The version 2 condition block of some records, as columns."""

    conditions: npt.NDArray[np.integer[Any]]
    reserved: npt.NDArray[np.uint8]
    """rows x 3"""
    floats: npt.NDArray[np.floating[Any]]
    """rows x 4: bandwidth, SNR, cohort mean, cohort std."""

    def problems(self) -> list[tuple[int, str, str]]:
        """(first bad row, reason, message) of each check that fails."""
        with np.errstate(invalid="ignore"):
            # Finite in float32: what the record can hold.
            finite = np.isfinite(self.floats) & (np.abs(self.floats) <= _FLOAT32_MAX)
            bandwidth, _snr, mean, std = self.floats.T
            checks = (
                (
                    (self.conditions != WIDEBAND) & (self.conditions != NARROWBAND),
                    "condition",
                    "voiceprint condition must be 0 (wideband) or 1 (narrowband)",
                ),
                (self.reserved != 0, "reserved", "voiceprint reserved bytes must be zero"),
                (
                    ~(finite[:, 0] & (bandwidth >= 0)),
                    "bandwidth",
                    "voiceprint bandwidth must be a finite number of Hz >= 0",
                ),
                (~finite[:, 1], "snr", "voiceprint SNR must be a finite number of dB"),
                (
                    ~(finite[:, 2] & finite[:, 3] & (std >= 0) & ((std > 0) | (mean == 0))),
                    "cohort",
                    "voiceprint cohort statistics must be finite with a standard deviation"
                    " > 0, or both 0 (not computed)",
                ),
            )
        found = []
        for mask, reason, message in checks:
            row = _first_row(mask)
            if row is not None:
                found.append((row, reason, message))
        return found

    def first_problem(self) -> tuple[int, str, str] | None:
        return min(self.problems(), default=None)


@dataclass(frozen=True)
class _Group:
    """The records of one format version in a request, and where they stand in it."""

    version: int
    records: npt.NDArray[np.uint8]
    positions: npt.NDArray[np.intp] | None
    """Index in the request of each row; None when the group is the whole request in order."""

    def index(self, row: int) -> int:
        return row if self.positions is None else int(self.positions[row])

    def problem(self, row: int, reason: str, message: str) -> tuple[int, VoiceprintError]:
        index = self.index(row)
        return index, VoiceprintError(index, reason, message)

    def integrity_problems(self, dim: int) -> Problems:
        """Magic, version and checksum: whether the records are voiceprints at all."""
        records = self.records
        count, size = records.shape
        problems: Problems = []
        row = _first_row((records[:, :4] != np.frombuffer(MAGIC, dtype=np.uint8)).any(axis=1))
        if row is not None:
            problems.append(self.problem(row, "magic", "not a voxmatch voiceprint (wrong magic)"))
        row = _first_row(records[:, 4:6].view("<u2")[:, 0] != self.version)
        if row is not None:
            # A record of another version (or none) whose length happens to be this one's.
            index = self.index(row)
            problems.append((index, _diagnose_record(index, records[row].tobytes(), dim)))
        # Checksums come before field checks: a corrupted record should be reported as
        # corrupted, not as whatever its damaged bytes happen to claim.
        crc_start = size - _CRC_SIZE
        blob = records.reshape(-1).data
        signed_parts = (blob[start : start + crc_start] for start in range(0, count * size, size))
        checksums = np.fromiter(map(zlib.crc32, signed_parts), dtype=np.uint32, count=count)
        stored = np.ascontiguousarray(records[:, crc_start:]).view("<u4")[:, 0]
        row = _first_row(checksums != stored)
        if row is not None:
            problems.append(
                self.problem(
                    row,
                    "checksum",
                    "voiceprint checksum mismatch: the voiceprint was altered or damaged in"
                    " transit",
                )
            )
        return problems

    def decode(self, reference: _Reference) -> tuple[_Columns, Problems]:
        """The fields as columns, and the problems of the fields."""
        records = self.records
        size = records.shape[1]
        dim = reference.dim
        offset = embedding_offset(self.version)
        body_end = offset + 4 * dim
        crc_start = size - _CRC_SIZE
        problems: Problems = []

        def check(mask: npt.NDArray[np.bool_], reason: str, message: str) -> None:
            row = _first_row(mask)
            if row is not None:
                problems.append(self.problem(row, reason, message))

        check(
            records[:, 6:8].view("<u2")[:, 0] != dim,
            "mixed-models",
            "voiceprints of different embedding sizes (different models) cannot be compared",
        )
        check(
            (records[:, 12:HEADER_SIZE] != reference.model_field).any(axis=1),
            "mixed-models",
            "voiceprints of different models cannot be compared",
        )
        if body_end < crc_start:
            check(
                records[:, body_end:crc_start] != 0,
                "padding",
                "voiceprint padding bytes must be zero",
            )
        speech_lengths = np.ascontiguousarray(records[:, 8:12]).view("<f4")[:, 0]
        speech_lengths = speech_lengths.astype(np.float32)
        check(
            np.logical_not(np.isfinite(speech_lengths) & (speech_lengths >= 0)),
            "speech-length",
            "voiceprint speech length must be a finite number of seconds >= 0",
        )
        embeddings = np.ascontiguousarray(records[:, offset:body_end]).view("<f4")
        if embeddings.dtype != np.float32:
            embeddings = embeddings.astype(np.float32)
        # One pass over the values in the common case: NaN propagates through max and min,
        # and fails the comparisons as infinities do; only then are the two reasons told apart.
        within = (embeddings.max(axis=1) <= MAX_EMBEDDING_VALUE) & (
            embeddings.min(axis=1) >= -MAX_EMBEDDING_VALUE
        )
        if not within.all():
            check(
                ~np.isfinite(embeddings).all(axis=1),
                "non-finite",
                "voiceprint embedding holds NaN or infinite values",
            )
            check(np.abs(embeddings) > MAX_EMBEDDING_VALUE, "range", _out_of_range(0).message)
        columns = _Columns(embeddings, speech_lengths)
        if self.version >= 2:
            floats = np.ascontiguousarray(records[:, _CONDITION_FLOATS]).view("<f4")
            floats = floats.astype(np.float32, copy=False)
            fields = _ConditionFields(records[:, _CONDITION_OFFSET], records[:, _RESERVED], floats)
            problems.extend(self.problem(*problem) for problem in fields.problems())
            columns = _Columns(
                embeddings,
                speech_lengths,
                records[:, _CONDITION_OFFSET].copy(),
                *(np.ascontiguousarray(floats[:, column]) for column in range(4)),
            )
        return columns, problems


def _no_values() -> npt.NDArray[np.float32]:
    return np.empty(0, np.float32)


@dataclass(frozen=True)
class _Columns:
    """Decoded fields of some records; empty condition columns = version 1 (the defaults)."""

    embeddings: FloatMatrix
    speech_lengths: npt.NDArray[np.float32]
    conditions: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    bandwidths: npt.NDArray[np.float32] = field(default_factory=_no_values)
    snrs: npt.NDArray[np.float32] = field(default_factory=_no_values)
    cohort_means: npt.NDArray[np.float32] = field(default_factory=_no_values)
    cohort_stds: npt.NDArray[np.float32] = field(default_factory=_no_values)


def _parse_groups(
    groups: list[_Group], count: int, reference: _Reference, model: str | None
) -> VoiceprintBatch:
    """Check every record at once; raise for the lowest-index bad one."""
    problems = [problem for group in groups for problem in group.integrity_problems(reference.dim)]
    if problems:
        raise min(problems, key=lambda problem: problem[0])[1]
    decoded = [group.decode(reference) for group in groups]
    problems = [problem for _, found in decoded for problem in found]
    if problems:
        raise min(problems, key=lambda problem: problem[0])[1]

    name = _model_name(reference.model_field.tobytes())
    if model is not None and name != model:
        raise _mixed_models(0, name, model)
    try:
        description = describe(name)
    except UnknownModelError as error:
        raise VoiceprintError(0, "unknown-model", str(error)) from None
    if description.embedding_dim != reference.dim:
        raise VoiceprintError(
            0,
            "dimension",
            f"model {name!r} makes {description.embedding_dim}-dimensional embeddings, "
            f"the voiceprint holds {reference.dim}",
        )
    if len(groups) == 1 and groups[0].positions is None:
        columns = decoded[0][0]
        return VoiceprintBatch(
            columns.embeddings,
            columns.speech_lengths,
            name,
            columns.conditions,
            columns.bandwidths,
            columns.snrs,
            columns.cohort_means,
            columns.cohort_stds,
        )
    batch = VoiceprintBatch(
        np.empty((count, reference.dim), dtype=np.float32),
        np.empty(count, dtype=np.float32),
        name,
    )
    for group, (columns, _) in zip(groups, decoded, strict=True):
        rows = group.positions
        batch.embeddings[rows] = columns.embeddings
        batch.speech_lengths[rows] = columns.speech_lengths
        if columns.conditions.size:
            batch.conditions[rows] = columns.conditions
            batch.bandwidths[rows] = columns.bandwidths
            batch.snrs[rows] = columns.snrs
            batch.cohort_means[rows] = columns.cohort_means
            batch.cohort_stds[rows] = columns.cohort_stds
    return batch
