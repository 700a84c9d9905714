"""Voiceprints: the binary record, its base64 form, and batch decoding into one matrix.

The record layout (docs/voiceprint-format.md) is fixed and little-endian, and its length is a
multiple of three bytes, so base64 carries no '=' padding. A request of many voiceprints of one
model is therefore decoded by joining the base64 texts and decoding them in one call, then
checking every record at once as rows of a byte matrix. Only when that fast path finds a problem
are items looked at one by one, to name the first bad item and why it is bad.
"""

from __future__ import annotations

import binascii
import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

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
FORMAT_VERSION = 1
_HEADER = struct.Struct(f"<4sHHf{MODEL_NAME_MAX_BYTES}s")
HEADER_SIZE = _HEADER.size  # 44
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


def record_size(embedding_dim: int) -> int:
    """Bytes of one voiceprint record: header, embedding, zero padding to a multiple of 3, CRC."""
    unpadded = HEADER_SIZE + 4 * embedding_dim + _CRC_SIZE
    return unpadded + (-unpadded) % 3


class VoiceprintError(ValueError):
    """A voiceprint that cannot be used, with the index of the item and a short reason code.

    Reason codes: base64, magic, version, truncated, checksum, unknown-model, mixed-models,
    dimension, non-finite, range, speech-length, padding, type.
    """

    def __init__(self, index: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.reason = reason
        self.message = message


@dataclass(frozen=True, eq=False)
class Voiceprint:
    """One voice: a speaker embedding, the seconds of speech behind it, and its model's name."""

    embedding: FloatMatrix
    speech_length: float
    model: str
    condition: int = WIDEBAND
    """`WIDEBAND` or `NARROWBAND`: which calibration its scores use."""

    MAGIC: ClassVar[bytes] = MAGIC

    @classmethod
    def from_embedding(
        cls,
        vector: npt.ArrayLike,
        *,
        speech_length: float,
        model: str = DEFAULT_MODEL_NAME,
    ) -> Voiceprint:
        """Wrap an embedding (from voxmatch or another system) as a voiceprint of `model`.

        The vector must have the model's embedding size and finite values of magnitude at most
        `MAX_EMBEDDING_VALUE`.
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
        embedding.setflags(write=False)
        return cls(embedding=embedding, speech_length=float(speech_length), model=model)

    def to_bytes(self) -> bytes:
        return encode_records(
            self.embedding[np.newaxis, :],
            np.array([self.speech_length], dtype=np.float32),
            self.model,
        )

    def to_base64(self) -> str:
        return pybase64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Voiceprint:
        return decode_bytes_batch([data])[0]

    @classmethod
    def from_base64(cls, text: str) -> Voiceprint:
        return decode_base64_batch([text])[0]

    def __repr__(self) -> str:
        return (
            f"Voiceprint(model={self.model!r}, speech_length={self.speech_length:.2f}, "
            f"dim={self.embedding.size})"
        )


@dataclass(frozen=True)
class VoiceprintBatch:
    """Many voiceprints of one model as a matrix: row i is item i of the input list."""

    embeddings: FloatMatrix
    speech_lengths: npt.NDArray[np.float32]
    model: str
    conditions: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))
    """`WIDEBAND` or `NARROWBAND` per row; left out, every row is `WIDEBAND`."""

    def __post_init__(self) -> None:
        if self.conditions.size == 0 and len(self) > 0:
            # Frozen: the default is filled in once, at construction.
            object.__setattr__(self, "conditions", np.full(len(self), WIDEBAND, np.uint8))
        elif self.conditions.shape != (len(self),):
            raise ValueError("conditions must hold one condition code per voiceprint")

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
        return cls(
            embeddings=np.stack([vp.embedding for vp in voiceprints]),
            speech_lengths=np.array([vp.speech_length for vp in voiceprints], dtype=np.float32),
            model=model,
            conditions=np.array([vp.condition for vp in voiceprints], dtype=np.uint8),
        )

    @classmethod
    def coerce(cls, voiceprints: VoiceprintBatch | Sequence[Voiceprint]) -> VoiceprintBatch:
        """The batch itself, or a batch of the voiceprints (for functions taking either)."""
        return voiceprints if isinstance(voiceprints, VoiceprintBatch) else cls.of(voiceprints)

    def to_bytes_list(self) -> list[bytes]:
        blob = encode_records(self.embeddings, self.speech_lengths, self.model)
        size = record_size(self.embeddings.shape[1])
        return [blob[start : start + size] for start in range(0, len(blob), size)]

    def to_base64_list(self) -> list[str]:
        """Base64 of every record; one encode call for the whole batch (no padding to split)."""
        size = record_size(self.embeddings.shape[1])
        text = pybase64.b64encode(
            encode_records(self.embeddings, self.speech_lengths, self.model)
        ).decode("ascii")
        width = size // 3 * 4
        return [text[start : start + width] for start in range(0, len(text), width)]


def encode_records(
    embeddings: FloatMatrix, speech_lengths: npt.NDArray[np.float32], model: str
) -> bytes:
    """Serialise rows of `embeddings` as consecutive voiceprint records."""
    count, dim = embeddings.shape
    size = record_size(dim)
    records = np.zeros((count, size), dtype=np.uint8)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, dim, 0.0, model.encode("utf-8"))
    records[:, :HEADER_SIZE] = np.frombuffer(header, dtype=np.uint8)
    records[:, 8:12] = (
        np.ascontiguousarray(speech_lengths, dtype="<f4").view(np.uint8).reshape(count, 4)
    )
    body_end = HEADER_SIZE + 4 * dim
    records[:, HEADER_SIZE:body_end] = (
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


def decode_base64_batch(items: Sequence[str], model: str | None = None) -> VoiceprintBatch:
    """Decode base64 voiceprints into one batch, or raise VoiceprintError for the first bad one.

    `model`, when given, is the model every item must belong to (for instance the model of
    the other list of a comparison).
    """
    if not items:
        raise ValueError("no voiceprints to decode")
    first = _decode_first(items[0])
    dim = int(np.frombuffer(first, dtype="<u2", count=1, offset=6)[0])
    size = record_size(dim)
    width = size // 3 * 4
    try:
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        if (lengths != width).any():
            # Surrounding whitespace (the newline ending a .vp file) is not part of the base64,
            # as for common base64 decoders; stripped in C, without a Python loop per item.
            items = list(map(str.strip, items))
            lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        joined = "".join(items)
    except TypeError:
        raise _find_bad_base64(items) from None
    wrong_length = np.flatnonzero(lengths != width)
    if wrong_length.size:
        raise _diagnose_base64(items, int(wrong_length[0]), dim)
    try:
        raw = pybase64.b64decode(joined, validate=True)
    except (binascii.Error, ValueError):
        raise _find_bad_base64(items) from None
    del joined
    records = np.frombuffer(raw, dtype=np.uint8).reshape(len(items), size)
    return _parse_records(records, model)


def decode_bytes_batch(items: Sequence[bytes], model: str | None = None) -> VoiceprintBatch:
    """Decode binary voiceprints (as gRPC carries them) into one batch."""
    if not items:
        raise ValueError("no voiceprints to decode")
    first = items[0]
    _check_header_prefix(first, 0)
    dim = int(np.frombuffer(first, dtype="<u2", count=1, offset=6)[0])
    size = record_size(dim)
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    wrong_length = np.flatnonzero(lengths != size)
    if wrong_length.size:
        index = int(wrong_length[0])
        _check_header_prefix(items[index], index)
        raise _length_error(index, len(items[index]), size, items[index])
    records = np.frombuffer(b"".join(items), dtype=np.uint8).reshape(len(items), size)
    return _parse_records(records, model)


def _decode_first(text: str) -> bytes:
    """Enough of the first item to learn the embedding size the whole batch should have."""
    if not isinstance(text, str):
        raise VoiceprintError(0, "type", "a voiceprint must be a base64 string")
    try:
        head = pybase64.b64decode(text.lstrip()[: (HEADER_SIZE + 2) // 3 * 4], validate=True)
    except (binascii.Error, ValueError):
        raise _single_base64_error(0, text) from None
    _check_header_prefix(head, 0)
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
    if version != FORMAT_VERSION:
        raise VoiceprintError(
            index,
            "version",
            f"voiceprint format version {version} is not supported (this server reads "
            f"version {FORMAT_VERSION})",
        )
    dim = int.from_bytes(data[6:8], "little")
    if not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise VoiceprintError(index, "dimension", f"embedding size {dim} is out of range")


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
    """Explain why item `index` has a length that differs from the batch's."""
    text = items[index]
    if not isinstance(text, str):
        return _single_base64_error(index, text)
    try:
        data = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _single_base64_error(index, text)
    try:
        _check_header_prefix(data, index)
    except VoiceprintError as error:
        return error
    return _length_error(index, len(data), record_size(dim), data)


def _length_error(index: int, actual: int, expected: int, data: bytes) -> VoiceprintError:
    own_dim = int.from_bytes(data[6:8], "little")
    if len(data) >= HEADER_SIZE and actual == record_size(own_dim):
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


def _parse_records(records: npt.NDArray[np.uint8], model: str | None) -> VoiceprintBatch:
    """Check every record at once; raise for the lowest-index bad one."""
    count, size = records.shape
    dim = int(records[0, 6:8].view("<u2")[0])
    body_end = HEADER_SIZE + 4 * dim
    crc_start = size - _CRC_SIZE

    problems: list[tuple[int, VoiceprintError]] = []

    def first_bad(mask: npt.NDArray[np.bool_], reason: str, message: str) -> None:
        """Record the first row where `mask` (rows, or rows x columns) is true."""
        bad = np.flatnonzero(mask.reshape(count, -1).any(axis=1))
        if bad.size:
            problems.append((int(bad[0]), VoiceprintError(int(bad[0]), reason, message)))

    first_bad(
        (records[:, :4] != np.frombuffer(MAGIC, dtype=np.uint8)).any(axis=1),
        "magic",
        "not a voxmatch voiceprint (wrong magic bytes)",
    )
    first_bad(
        records[:, 4:6].view("<u2")[:, 0] != FORMAT_VERSION,
        "version",
        "voiceprint format version is not supported",
    )
    # Checksums come before field checks: a corrupted record should be reported as corrupted,
    # not as whatever its damaged bytes happen to claim.
    blob = records.reshape(-1).data
    signed_parts = (blob[start : start + crc_start] for start in range(0, count * size, size))
    checksums = np.fromiter(
        map(zlib.crc32, signed_parts),
        dtype=np.uint32,
        count=count,
    )
    stored = np.ascontiguousarray(records[:, crc_start:]).view("<u4")[:, 0]
    first_bad(
        checksums != stored,
        "checksum",
        "voiceprint checksum mismatch: the voiceprint was altered or damaged in transit",
    )
    if problems:
        raise min(problems, key=lambda problem: problem[0])[1]

    first_bad(
        records[:, 6:8].view("<u2")[:, 0] != dim,
        "mixed-models",
        "voiceprints of different embedding sizes (different models) cannot be compared",
    )
    model_fields = records[:, 12:HEADER_SIZE]
    first_bad(
        (model_fields != model_fields[0]).any(axis=1),
        "mixed-models",
        "voiceprints of different models cannot be compared",
    )
    if body_end < crc_start:
        first_bad(
            records[:, body_end:crc_start] != 0,
            "padding",
            "voiceprint padding bytes must be zero",
        )
    speech_lengths = np.ascontiguousarray(records[:, 8:12]).view("<f4")[:, 0].astype(np.float32)
    first_bad(
        np.logical_not(np.isfinite(speech_lengths) & (speech_lengths >= 0)),
        "speech-length",
        "voiceprint speech length must be a finite number of seconds >= 0",
    )
    embeddings = np.ascontiguousarray(records[:, HEADER_SIZE:body_end]).view("<f4")
    if embeddings.dtype != np.float32:
        embeddings = embeddings.astype(np.float32)
    first_bad(
        ~np.isfinite(embeddings).all(axis=1),
        "non-finite",
        "voiceprint embedding holds NaN or infinite values",
    )
    first_bad(np.abs(embeddings) > MAX_EMBEDDING_VALUE, "range", _out_of_range(0).message)
    if problems:
        raise min(problems, key=lambda problem: problem[0])[1]

    name = _model_name(bytes(model_fields[0]))
    if model is not None and name != model:
        raise _mixed_models(0, name, model)
    try:
        description = describe(name)
    except UnknownModelError as error:
        raise VoiceprintError(0, "unknown-model", str(error)) from None
    if description.embedding_dim != dim:
        raise VoiceprintError(
            0,
            "dimension",
            f"model {name!r} makes {description.embedding_dim}-dimensional embeddings, "
            f"the voiceprint holds {dim}",
        )
    return VoiceprintBatch(
        embeddings=embeddings,
        speech_lengths=speech_lengths,
        model=name,
        conditions=np.full(count, WIDEBAND, dtype=np.uint8),
    )
