"""Runnable speaker models: an onnxruntime session plus the front end it was trained with.

Two ways in:

* `load_speaker_model(description, cache_dir)` for a model voxmatch knows by name. Its weights
  are a registry asset (fetched and SHA-256-checked by `voxmatch.assets`); a PyTorch state dict
  is converted to ONNX once and the result cached next to it.
* `load_onnx_speaker_model(path)` for a user's own ONNX export in the sherpa-onnx convention
  (WeSpeaker or 3D-Speaker: input [batch, frames, bins] fbank, output [batch, dim]), described
  by the metadata in the file.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from voxmatch.assets import RegistryAsset, locate, sha256_of
from voxmatch.models import campplus
from voxmatch.models._state_dict import load_state_dict
from voxmatch.models.features import CAMPPLUS_FRONT_END, FbankFrontEnd
from voxmatch.models.registry import (
    MODEL_NAME_MAX_BYTES,
    Calibration,
    ModelDescription,
    known_models,
)
from voxmatch.onnx_sessions import session_options

log = logging.getLogger("voxmatch.models")

SUPPORTED_SAMPLE_RATE = 16000

UNCALIBRATED = Calibration.linear(scale=10.0, offset=-4.0)
"""Default score map for a user's model nobody has calibrated: LLR 0 at cosine 0.4, +6 at 1.
Cosine thresholds of WeSpeaker / 3D-Speaker models usually fall between 0.3 and 0.6, so scores
are ordered sensibly but their values are not likelihood ratios until a calibration is fitted."""

_SUPPORTED_FRAMEWORKS = ("3d-speaker", "wespeaker")


class SpeakerModelError(RuntimeError):
    """A speaker model could not be loaded or run."""


class SpeakerModel:
    """An ONNX speaker-embedding network with its front end. Safe to share between threads:
    onnxruntime allows concurrent `run` calls on one session."""

    def __init__(
        self,
        session: ort.InferenceSession,
        description: ModelDescription,
        front_end: FbankFrontEnd,
        *,
        min_frames: int = campplus.MIN_FRAMES,
        model_path: Path | None = None,
    ) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise SpeakerModelError(f"expected one input (fbank features), found {len(inputs)}")
        outputs = [output.name for output in session.get_outputs()]
        self.session = session
        self.description = description
        self.front_end = front_end
        self.min_frames = min_frames
        self.model_path = model_path
        """The ONNX file the session was loaded from; None for a model held in memory only."""
        self.input_name: str = inputs[0].name
        self.output_name: str = (
            campplus.OUTPUT_NAME if campplus.OUTPUT_NAME in outputs else outputs[0]
        )

    @property
    def embedding_dim(self) -> int:
        return self.description.embedding_dim

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def features(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Front-end features (frames x bins) of mono float samples in [-1, 1] at the model's
        sample rate."""
        return self.front_end.compute(samples)

    def embed(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """The raw (not length-normalised) embedding of one utterance's features."""
        if features.ndim != 2:
            raise ValueError(f"expected features of shape (frames, bins), got {features.shape}")
        embedding: npt.NDArray[np.float32] = self.embed_batch(features[None])[0]
        return embedding

    def embed_batch(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Embeddings (batch x dim) of equally long utterances (batch x frames x bins).

        The networks have no padding mask, so padding shorter utterances to batch them changes
        their embeddings: batch only utterances of the same length.
        """
        if features.ndim != 3 or features.shape[2] != self.description.num_mel_bins:
            raise ValueError(
                f"expected features of shape (batch, frames, {self.description.num_mel_bins}), "
                f"got {features.shape}"
            )
        if features.shape[1] < self.min_frames:
            raise ValueError(
                f"{features.shape[1]} feature frames are too few; the model needs at least "
                f"{self.min_frames} (about {(self.min_frames + 2) * 10} ms of audio)"
            )
        batch = np.ascontiguousarray(features, dtype=np.float32)
        try:
            (embeddings,) = self.session.run([self.output_name], {self.input_name: batch})
        except Exception as error:  # onnxruntime raises its own untyped exceptions
            raise SpeakerModelError(f"{self.description.name} failed: {error}") from error
        result = np.asarray(embeddings, dtype=np.float32).reshape(batch.shape[0], -1)
        if result.shape[1] != self.embedding_dim:
            raise SpeakerModelError(
                f"{self.description.name} produced {result.shape[1]}-dim embeddings, "
                f"{self.embedding_dim} expected"
            )
        if not np.isfinite(result).all():
            raise SpeakerModelError(f"{self.description.name} produced a non-finite embedding")
        return result

    def embed_samples(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Front end and network in one call."""
        return self.embed(self.features(samples))


def _open_session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(
        source, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
    )


def load_speaker_model(
    description: ModelDescription,
    cache_dir: Path,
    search_dirs: Iterable[Path] = (),
    *,
    threads: int = 1,
) -> SpeakerModel:
    """The runnable form of a model voxmatch knows by name.

    The weights are located with `voxmatch.assets.locate` (pre-pulled `search_dirs` first, then
    `cache_dir`, then the package index). An `.onnx` asset is used as it is; anything else is
    read as a CAM++ PyTorch state dict and converted to `<stem>.onnx` in `cache_dir`. The
    conversion records the source SHA-256 and converter version in its metadata and is redone
    whenever either differs or the file does not load; it is written atomically, so a
    half-written file never has the final name. If `cache_dir` is not writable the converted
    model is kept in memory only.
    """
    asset = description.weights
    if asset is None:
        raise SpeakerModelError(
            f"{description.name} has no registry weights; load its file with "
            "load_onnx_speaker_model"
        )
    model_path: Path | None
    if asset.filename.endswith(".onnx"):
        model_path = locate(asset, cache_dir, search_dirs)
        session = _open_session(model_path, threads)
        front_end = FbankFrontEnd.from_metadata(
            session.get_modelmeta().custom_metadata_map,
            sample_rate=description.sample_rate,
            num_mel_bins=description.num_mel_bins,
        )
    else:
        session, model_path = _converted_campplus_session(asset, cache_dir, search_dirs, threads)
        front_end = CAMPPLUS_FRONT_END
    declared = session.get_modelmeta().custom_metadata_map.get("output_dim")
    if declared is not None and declared != str(description.embedding_dim):
        raise SpeakerModelError(
            f"{description.name}: the model says output_dim={declared}, the description "
            f"{description.embedding_dim}"
        )
    return SpeakerModel(session, description, front_end, model_path=model_path)


def converted_path(asset: RegistryAsset, cache_dir: Path) -> Path:
    """Where the ONNX conversion of a state-dict asset is cached."""
    return cache_dir / f"{Path(asset.filename).stem}.onnx"


def _converted_campplus_session(
    asset: RegistryAsset, cache_dir: Path, search_dirs: Iterable[Path], threads: int
) -> tuple[ort.InferenceSession, Path | None]:
    target = converted_path(asset, cache_dir)
    if target.exists():
        session = _current_conversion(target, asset, threads)
        if session is not None:
            return session, target
    source = locate(asset, cache_dir, search_dirs)
    log.info("converting %s to ONNX at %s", source, target)
    weights = load_state_dict(source)
    metadata = campplus.campplus_metadata(
        asset.sha256, embedding_dim=int(weights["xvector.dense.linear.weight"].shape[0])
    )
    serialized = campplus.build_campplus_model(weights, metadata).SerializeToString()
    try:
        _write_atomically(target, serialized)
    except OSError as error:
        log.warning(
            "cannot cache the converted model at %s (%s); keeping it in memory", target, error
        )
        return _open_session(serialized, threads), None
    return _open_session(target, threads), target


def _current_conversion(
    path: Path, asset: RegistryAsset, threads: int
) -> ort.InferenceSession | None:
    """The session of a cached conversion if it loads and was made from this very source by
    this converter version; otherwise None (and the stale file is left to be replaced)."""
    try:
        session = _open_session(path, threads)
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file: untyped errors
        log.warning("cached model %s does not load (%s); converting again", path, error)
        return None
    metadata = session.get_modelmeta().custom_metadata_map
    if (
        metadata.get("source_sha256") != asset.sha256
        or metadata.get("converter_version") != campplus.CONVERTER_VERSION
    ):
        log.info("cached model %s is from another source or converter; converting again", path)
        return None
    return session


def _write_atomically(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def load_onnx_speaker_model(
    path: Path,
    *,
    name: str | None = None,
    calibration: Calibration | None = None,
    front_end: FbankFrontEnd | None = None,
    threads: int = 1,
) -> SpeakerModel:
    """A user's own ONNX speaker model, described by its sherpa-onnx metadata.

    The file must take fbank features [batch, frames, bins] and give embeddings [batch, dim]
    (the WeSpeaker / 3D-Speaker export convention); the output named `embs` is used if there
    are several. Metadata read: `output_dim` (required), `sample_rate` (default 16000),
    `normalize_samples` and `feature_normalize_type` (the front end, see
    `FbankFrontEnd.from_metadata`; `front_end` overrides them), `framework` (3d-speaker or
    wespeaker if present; NeMo models use another front end and are refused), `language`.

    The description (`.description` of the result) is named `name`, or after the file, and is
    not registered. Its calibration is `calibration` or, if none is given, the uncalibrated
    default `UNCALIBRATED`; its notes record the file's SHA-256 so voiceprints can be traced to
    the exact file.
    """
    path = Path(path)
    if not path.is_file():
        raise SpeakerModelError(f"{path} is not a file")
    try:
        session = _open_session(path, threads)
    except Exception as error:
        raise SpeakerModelError(f"{path} is not a loadable ONNX model: {error}") from error
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    framework = metadata.get("framework", "").strip().lower()
    if framework and framework not in _SUPPORTED_FRAMEWORKS:
        raise SpeakerModelError(
            f"{path}: framework {framework!r} is not supported "
            f"(expected one of {', '.join(_SUPPORTED_FRAMEWORKS)})"
        )
    num_mel_bins = _feature_bins(session, metadata, path)
    sample_rate = _positive_int(metadata.get("sample_rate", "16000"), "sample_rate", path)
    if sample_rate != SUPPORTED_SAMPLE_RATE:
        # Voice activity detection and the audio pipeline work at 16 kHz; an 8 kHz model would
        # need its own resampling after detection, which voxmatch does not do.
        raise SpeakerModelError(
            f"{path}: the model takes {sample_rate} Hz audio; voxmatch runs 16 kHz models only"
        )
    if "output_dim" not in metadata:
        raise SpeakerModelError(f"{path}: the metadata has no output_dim")
    embedding_dim = _positive_int(metadata["output_dim"], "output_dim", path)
    try:
        chosen_front_end = front_end or FbankFrontEnd.from_metadata(
            metadata, sample_rate=sample_rate, num_mel_bins=num_mel_bins
        )
    except ValueError as error:
        raise SpeakerModelError(f"{path}: {error}") from error
    if (chosen_front_end.sample_rate, chosen_front_end.num_mel_bins) != (sample_rate, num_mel_bins):
        raise SpeakerModelError(
            f"{path}: the front end given is for {chosen_front_end.sample_rate} Hz and "
            f"{chosen_front_end.num_mel_bins} bins, the model takes {sample_rate} Hz and "
            f"{num_mel_bins} bins"
        )
    model_name = name if name is not None else _name_from_file(path)
    if any(known.name == model_name and known.weights is not None for known in known_models()):
        raise SpeakerModelError(f"{model_name!r} is the name of a built-in model; choose another")
    description = ModelDescription(
        name=model_name,
        embedding_dim=embedding_dim,
        calibration=calibration or UNCALIBRATED,
        sample_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        notes=_user_model_notes(
            path, metadata, chosen_front_end, calibrated=calibration is not None
        ),
    )
    model = SpeakerModel(session, description, chosen_front_end, model_path=path)
    _probe(model, path)
    return model


def _feature_bins(session: ort.InferenceSession, metadata: Mapping[str, str], path: Path) -> int:
    (model_input,) = session.get_inputs()
    shape: list[Any] = list(model_input.shape)
    if len(shape) != 3 or model_input.type != "tensor(float)":
        raise SpeakerModelError(
            f"{path}: input {model_input.name} is {model_input.type} {shape}; expected float "
            "[batch, frames, bins]"
        )
    if isinstance(shape[2], int):
        return shape[2]
    return _positive_int(metadata.get("feat_dim", "80"), "feat_dim", path)


def _positive_int(raw: str, key: str, path: Path) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise SpeakerModelError(f"{path}: metadata {key}={raw!r} is not a positive integer")
    return value


def _name_from_file(path: Path) -> str:
    """The file's stem with anything but letters, digits, '.', '_' and '-' replaced, cut to the
    voiceprint name field."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "user-model"
    return cleaned.encode("utf-8")[:MODEL_NAME_MAX_BYTES].decode("utf-8", errors="ignore")


def _user_model_notes(
    path: Path, metadata: Mapping[str, str], front_end: FbankFrontEnd, *, calibrated: bool
) -> dict[str, str]:
    notes = {
        "source": f"user ONNX model {path.name}",
        "sha256": sha256_of(path),
        "framework": metadata.get("framework", "unknown"),
        "language": metadata.get("language", "unknown"),
        "front_end": (
            f"fbank {front_end.num_mel_bins} bins at {front_end.sample_rate} Hz, samples x "
            f"{front_end.sample_scale:g}, {'mean-normalised' if front_end.subtract_mean else 'raw'}"
        ),
    }
    if not calibrated:
        notes["calibration"] = (
            f"uncalibrated default: {UNCALIBRATED.describe()}; fit one on labelled speech "
            "before trusting LLR values"
        )
    return notes


def _probe(model: SpeakerModel, path: Path) -> None:
    """Run two seconds of fixed pseudo-features through the model, so a file whose metadata
    does not match what it computes fails at load time rather than on the first request."""
    generator = np.random.default_rng(0)
    features = generator.standard_normal((200, model.description.num_mel_bins)).astype(np.float32)
    try:
        model.embed(features)
    except (SpeakerModelError, ValueError) as error:
        raise SpeakerModelError(f"{path} does not work as a speaker model: {error}") from error
