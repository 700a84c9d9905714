"""The functions of the public namespace (`voxmatch.extract`, `voxmatch.compare`, ...).

They do what the server does, in the caller's process: the same extractor (the configured
model, fetched and cached as the server does), the same scores, merges and vectors. The
extraction machinery (onnxruntime, the decoders) is imported on the first `extract`, so that
`import voxmatch` stays cheap.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from voxmatch.calibration_profiles import CalibrationProfile
from voxmatch.merging import merge_voiceprints
from voxmatch.models.registry import Calibration, describe
from voxmatch.scoring import Traits, score_matrix
from voxmatch.stopping import StopCheck
from voxmatch.vectors import vector_rows, vector_voiceprints
from voxmatch.voiceprint import Voiceprint, VoiceprintBatch, VoiceprintError

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | npt.NDArray[Any]
"""A path (str or os.PathLike), a file's bytes, or an array of float samples."""


def extract(
    source: AudioSource,
    *,
    channel_mode: str = "split",
    channels: Sequence[int] | None = None,
    max_speech: float | None = None,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int | None = None,
    should_stop: StopCheck | None = None,
) -> list[Voiceprint]:
    """Voiceprints of a recording: one per channel (`split`), or one of their mix (`mix`).

    `source` is a path or a file's bytes in any format the server reads, or an array of float
    samples (-1..1) with `sample_rate=`: one dimension for mono, or frames x channels (as
    soundfile reads them). `channels` picks 0-based channels, in that order; `max_speech` stops
    after that many seconds of speech; `start` and `end` (seconds) cut the part to use. A
    channel without enough speech gives the empty voiceprint (speech_length 0), which scores 0.

    The extractor is the one `voxmatch extract` uses (the model and model cache of the VOXMATCH_*
    variables and $VOXMATCH_CONFIG; by default the default model, fetched into the user's
    cache on first use), loaded on the first call and shared by every thread. `should_stop` is
    asked every few seconds of audio; when it returns True, `Stopped` is raised.

    Raises AudioError when the audio or the options cannot be used (a ValueError, as is the
    error of a `max_speech` that is not positive), ModelError when the model cannot be loaded.
    """
    from voxmatch.audio import TimeRange
    from voxmatch.shared_extractor import process_extractor

    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise TypeError("an array of samples needs its sample_rate=")
        source = _as_wav(source, sample_rate)
    elif sample_rate is not None:
        raise TypeError("sample_rate= is for an array of samples: a file states its own rate")
    time_range = TimeRange(start, end)
    extractor, settings = process_extractor()
    results = extractor.extract_source(
        source,
        time_range=time_range,
        channel_mode=channel_mode,
        channels=channels,
        max_speech_seconds=max_speech,
        max_duration=settings.max_audio_seconds,
        should_stop=should_stop,
    )
    return [result.extraction.voiceprint for result in results]


def compare(
    voiceprints_a: Sequence[Voiceprint] | VoiceprintBatch,
    voiceprints_b: Sequence[Voiceprint] | VoiceprintBatch,
    *,
    calibration: Calibration | CalibrationProfile | None = None,
    should_stop: StopCheck | None = None,
) -> npt.NDArray[np.float32]:
    """Calibrated LLR scores with scores[i, j] = LLR(voiceprints_a[i], voiceprints_b[j]).

    Note the orientation: rows follow `voiceprints_a`, as in the gRPC API. The SPE4 REST result
    is the transpose (its rows follow voiceprints_b). `calibration` is the model's shipped
    calibration unless given: a `Calibration`, or a calibration profile
    (`voxmatch.calibration_profiles.load_profile(path)`; ProfileError if it was fitted for
    another model). `should_stop` is asked between blocks of rows; when it returns True,
    `Stopped` is raised.
    """
    batch_a = VoiceprintBatch.coerce(voiceprints_a)
    batch_b = VoiceprintBatch.coerce(voiceprints_b)
    if batch_a.model != batch_b.model:
        raise VoiceprintError(
            0,
            "mixed-models",
            f"voiceprints of model {batch_b.model!r} cannot be compared with voiceprints of"
            f" model {batch_a.model!r}",
        )
    if isinstance(calibration, CalibrationProfile):
        calibration.check_model(batch_a.model)
        calibration = calibration.calibration
    return score_matrix(
        batch_a.embeddings,
        batch_b.embeddings,
        calibration or describe(batch_a.model).calibration,
        row_traits=Traits.of(batch_a),
        column_traits=Traits.of(batch_b),
        should_stop=should_stop,
    )


def merge(voiceprints: Sequence[Voiceprint] | VoiceprintBatch) -> Voiceprint:
    """One voiceprint of all the inputs' speech, as the server's merge gives it: the
    speech-length-weighted mean of the embeddings (inputs of one model, ideally one speaker).

    Raises ValueError for no input and VoiceprintError (`mixed-models`) for several models.
    """
    return merge_voiceprints(voiceprints)


def to_vector(voiceprint: Voiceprint) -> npt.NDArray[np.float32]:
    """The vector voiceprint the REST and gRPC APIs give: the unit-length embedding (float32),
    whose dot product with another orders pairs as their LLR does; of length 0 for a voiceprint
    of no speech, which has no direction (its LLR against anything is 0)."""
    (vector,) = vector_rows(vector_voiceprints([voiceprint]))
    return vector


def _as_wav(samples: npt.NDArray[Any], sample_rate: int) -> bytes:
    """The samples as the bytes of a float32 WAV file (RF64: no 4 GB limit), so an array goes
    through the very decoding a file does (time range, channels, resampling): float32 samples
    are stored as they are, without rounding."""
    import soundfile

    from voxmatch.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, AudioError

    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(
            f"an array of samples must hold floats (-1..1), got {samples.dtype}"
            " (16-bit integers: divide by 32768)"
        )
    if samples.ndim not in (1, 2):
        raise AudioError(
            f"an array of samples has one dimension (mono) or two (frames x channels),"
            f" got {samples.ndim}"
        )
    if samples.ndim == 2 and not 0 < samples.shape[1] <= MAX_CHANNELS:
        raise AudioError(
            f"an array of samples is frames x channels (1..{MAX_CHANNELS} channels), got"
            f" {samples.shape[0]} x {samples.shape[1]}: transpose a channels x frames array"
        )
    if samples.shape[0] == 0:
        raise AudioError("the array holds no samples")
    if not np.isfinite(samples).all():
        raise AudioError("the samples hold NaN or infinite values")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise AudioError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    if not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample_rate must be 1..{MAX_SAMPLE_RATE} Hz, got {sample_rate}")
    buffer = io.BytesIO()
    soundfile.write(
        buffer,
        np.asarray(samples, dtype=np.float32),
        int(sample_rate),
        format="RF64",
        subtype="FLOAT",
    )
    return buffer.getvalue()
