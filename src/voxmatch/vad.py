"""Voice activity detection with Silero VAD in onnxruntime (no torch).

Silero VAD scores each 32 ms window (512 samples at 16 kHz, seen together with the 64 samples
before it) with a small convolutional front end and an LSTM whose state runs through the whole
stream. silero-vad 6.2.3 ships two ONNX forms of the same network:

- `silero_vad.onnx`, the streaming form: one call per window, the recurrent state passed in and
  out by the caller. Calling it 31 times per second from Python costs more than the network.
- `silero_vad_16k_sequence.onnx`, the sequence form: one call scores a whole block of windows,
  the LSTM stepping inside onnxruntime. Its scores are bit-identical to the streaming form's
  (the tests check this) at less than half the cost, so it is the default.

Speech timestamps are then derived from the scores exactly as silero-vad's
`get_speech_timestamps` derives them (threshold with hysteresis, minimum silence to close a
segment, minimum speech to keep one, padding on both sides), but in vectorised NumPy rather than a
per-window Python loop. The `max_speech_duration_s` splitting of the original is not offered: we
only need where speech is, not bounded chunks of it.

One detector holds one onnxruntime session and can be called from several threads at once: the
recurrent state and context live in each call (or `SpeechStream`), never in the detector.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from numpy.typing import ArrayLike, NDArray

from voxmatch.assets import RegistryAsset, locate

SAMPLE_RATE = 16000
WINDOW = 512
"""Samples scored per model step at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous window prepended to each window, as the streaming model does."""
_STATE_SIZE = 128

_WHEEL = "silero_vad-6.2.3-py3-none-any.whl"

SILERO_VAD_SEQUENCE = RegistryAsset(
    filename="silero_vad-6.2.3_16k_sequence.onnx",
    package="silero-vad",
    distribution=_WHEEL,
    member="silero_vad/data/silero_vad_16k_sequence.onnx",
    sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
    size=1_246_165,
)
"""The sequence form: many windows per call. The default."""

SILERO_VAD_STREAMING = RegistryAsset(
    filename="silero_vad-6.2.3.onnx",
    package="silero-vad",
    distribution=_WHEEL,
    member="silero_vad/data/silero_vad.onnx",
    sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    size=2_327_524,
)
"""The streaming form (one window per call): the reference the sequence form is checked against."""


@dataclass(frozen=True)
class VadParameters:
    """Post-processing of the window scores, with silero-vad's defaults and meanings."""

    threshold: float = 0.5
    """A window scoring at or above this is speech."""
    neg_threshold: float | None = None
    """Inside speech, only a window scoring below this counts as silence (default:
    threshold - 0.15, at least 0.01); windows in between neither open nor close a segment."""
    min_speech_duration_ms: float = 250
    """Segments of this length or shorter are dropped."""
    min_silence_duration_ms: float = 100
    """Silence must last this long to close a segment."""
    speech_pad_ms: float = 30
    """Added to each side of a segment (split evenly when two segments are closer than twice
    this)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise ValueError(f"neg_threshold must be in (0, threshold], got {self.neg_threshold}")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def exit_threshold(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, eq=False)
class Speech:
    """The speech found in a signal, concatenated, and where it came from."""

    samples: NDArray[np.float32]
    segments: NDArray[np.int64]
    """(start, end) sample of each piece of `samples` in the input, after any cap; k x 2."""
    processed_samples: int
    """How much of the input was scored: all of it, or less when a cap was reached early."""
    sample_rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return int(self.samples.shape[0]) / self.sample_rate

    @property
    def processed_seconds(self) -> float:
        return self.processed_samples / self.sample_rate


class VoiceActivityDetector:
    """Silero VAD on 16 kHz mono float32 samples. Thread-safe; load once, share."""

    def __init__(
        self,
        model_path: str | Path,
        parameters: VadParameters | None = None,
        *,
        threads: int = 1,
        block_windows: int = 256,
    ) -> None:
        """Load a Silero VAD ONNX file, in either its sequence or its streaming form.

        `threads` is onnxruntime's intra-op thread count: the network is small, and a second
        thread costs more in hand-over than it saves, so 1 is both the default and the fastest
        per core. `block_windows` is how many windows the sequence form scores per call.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if block_windows < 1:
            raise ValueError(f"block_windows must be >= 1, got {block_windows}")
        self.parameters = parameters or VadParameters()
        self.block_windows = block_windows
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {node.name for node in self._session.get_inputs()}
        if inputs == {"input", "h", "c"}:
            self.sequence_model = True
        elif inputs == {"input", "state", "sr"}:
            self.sequence_model = False
        else:
            raise ValueError(
                f"{model_path} is not a Silero VAD model: unexpected inputs {sorted(inputs)}"
            )

    @classmethod
    def from_registry(
        cls,
        cache_dir: Path,
        parameters: VadParameters | None = None,
        *,
        search_dirs: Iterable[Path] = (),
        asset: RegistryAsset = SILERO_VAD_SEQUENCE,
        threads: int = 1,
    ) -> VoiceActivityDetector:
        """Fetch (once, verified) the pinned model from PyPI into `cache_dir` and load it."""
        return cls(locate(asset, cache_dir, search_dirs), parameters, threads=threads)

    def speech_probabilities(self, samples: ArrayLike) -> NDArray[np.float32]:
        """Speech probability of each 512-sample window; the last window is zero-padded."""
        stream = SpeechStream(self, None)
        stream.feed(samples)
        stream.flush()
        return stream.probabilities

    def speech_segments(self, samples: ArrayLike) -> list[tuple[int, int]]:
        """(start, end) sample of each speech segment, as silero-vad's get_speech_timestamps."""
        signal = _as_signal(samples)
        probabilities = self.speech_probabilities(signal)
        segments = segments_from_probabilities(probabilities, signal.shape[0], self.parameters)
        return [(int(start), int(end)) for start, end in segments]

    def speech_mask(self, samples: ArrayLike) -> NDArray[np.bool_]:
        """True for every sample inside a speech segment."""
        signal = _as_signal(samples)
        mask = np.zeros(signal.shape[0], dtype=bool)
        for start, end in self.speech_segments(signal):
            mask[start:end] = True
        return mask

    def speech_samples(self, samples: ArrayLike, max_speech_seconds: float | None = None) -> Speech:
        """The speech of a signal, concatenated; with a cap, only its first seconds.

        With a cap, scoring stops as soon as the first `max_speech_seconds` of speech are
        settled, and the result is exactly the start of what the uncapped call would return.
        """
        signal = _as_signal(samples)
        stream = self.stream(max_speech_seconds)
        step = self.block_windows * WINDOW
        for begin in range(0, signal.shape[0], step):
            if stream.feed(signal[begin : begin + step]):
                break
        return stream.finish()

    def stream(self, max_speech_seconds: float | None = None) -> SpeechStream:
        """An incremental detector for audio that arrives in pieces (gRPC streaming)."""
        cap = None
        if max_speech_seconds is not None:
            if not max_speech_seconds > 0:
                raise ValueError(f"max_speech_seconds must be positive, got {max_speech_seconds}")
            cap = round(max_speech_seconds * SAMPLE_RATE)
        return SpeechStream(self, cap)

    def _score(
        self, windows: NDArray[np.float32], state: tuple[NDArray[np.float32], ...]
    ) -> tuple[NDArray[np.float32], tuple[NDArray[np.float32], ...]]:
        """Scores of `windows` (n x (CONTEXT + WINDOW)) and the recurrent state after them."""
        if self.sequence_model:
            scores, hidden, cell = self._session.run(
                ["speech_probs", "hn", "cn"], {"input": windows, "h": state[0], "c": state[1]}
            )
            return np.asarray(scores, dtype=np.float32).reshape(-1), (hidden, cell)
        rate = np.array(SAMPLE_RATE, dtype=np.int64)
        (recurrent,) = state
        scores = np.empty(windows.shape[0], dtype=np.float32)
        for index in range(windows.shape[0]):
            output, recurrent = self._session.run(
                ["output", "stateN"],
                {"input": windows[index : index + 1], "state": recurrent, "sr": rate},
            )
            scores[index] = output[0, 0]
        return scores, (recurrent,)

    def _initial_state(self) -> tuple[NDArray[np.float32], ...]:
        if self.sequence_model:
            return (
                np.zeros((1, 1, _STATE_SIZE), dtype=np.float32),
                np.zeros((1, 1, _STATE_SIZE), dtype=np.float32),
            )
        return (np.zeros((2, 1, _STATE_SIZE), dtype=np.float32),)


class SpeechStream:
    """Scores audio as it arrives and collects its speech, with an optional cap.

    Keeps the recurrent state and the last 64 samples between pieces, so feeding a signal in
    any pieces gives the same scores as feeding it whole. Not for sharing between threads.
    """

    def __init__(self, detector: VoiceActivityDetector, max_speech_samples: int | None) -> None:
        self._detector = detector
        self._cap = max_speech_samples
        self._state = detector._initial_state()
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._audio: list[NDArray[np.float32]] = []
        self._length = 0
        self._scores: list[NDArray[np.float32]] = []
        self._settled: NDArray[np.int64] | None = None
        self._flushed = False

    @property
    def capped(self) -> bool:
        """True once the capped amount of speech is settled: later audio is not needed."""
        return self._settled is not None

    @property
    def probabilities(self) -> NDArray[np.float32]:
        if not self._scores:
            return np.zeros(0, dtype=np.float32)
        if len(self._scores) > 1:
            self._scores = [np.concatenate(self._scores)]
        return self._scores[0]

    def feed(self, samples: ArrayLike) -> bool:
        """Add the next piece of 16 kHz audio; returns `capped` (stop sending if True)."""
        if self.capped:
            return True
        if self._flushed:
            raise RuntimeError("this stream has been finished; start a new one")
        piece = _as_signal(samples)
        if piece.shape[0] == 0:
            return False
        self._audio.append(piece)
        self._length += piece.shape[0]
        pending = np.concatenate((self._pending, piece)) if self._pending.size else piece
        whole = pending.shape[0] // WINDOW * WINDOW
        self._pending = pending[whole:].copy()
        if whole:
            self._score_windows(pending[:whole].reshape(-1, WINDOW))
            if self._cap is not None:
                self._settle()
        return self.capped

    def flush(self) -> None:
        """Score the last, partial window (zero-padded) once no more audio will come."""
        if self._flushed or self.capped:
            return
        self._flushed = True
        if self._pending.size:
            last = np.zeros((1, WINDOW), dtype=np.float32)
            last[0, : self._pending.size] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            self._score_windows(last)

    def finish(self) -> Speech:
        """The speech found (up to the cap); no more audio may be fed afterwards."""
        self.flush()
        parameters = self._detector.parameters
        if self._settled is not None:
            segments = self._settled
            processed = self.probabilities.shape[0] * WINDOW
        else:
            segments = segments_from_probabilities(self.probabilities, self._length, parameters)
            processed = self._length
        if self._cap is not None:
            segments = _cap_segments(segments, self._cap)
        audio = self._joined_audio()
        if segments.shape[0]:
            speech = np.concatenate([audio[start:end] for start, end in segments])
        else:
            speech = np.zeros(0, dtype=np.float32)
        return Speech(speech, segments, min(processed, self._length))

    def _score_windows(self, frames: NDArray[np.float32]) -> None:
        detector = self._detector
        step = detector.block_windows if detector.sequence_model else frames.shape[0]
        for begin in range(0, frames.shape[0], step):
            block = frames[begin : begin + step]
            windows = np.empty((block.shape[0], CONTEXT + WINDOW), dtype=np.float32)
            windows[:, CONTEXT:] = block
            windows[0, :CONTEXT] = self._context
            windows[1:, :CONTEXT] = block[:-1, -CONTEXT:]
            self._context = block[-1, -CONTEXT:].copy()
            scores, self._state = detector._score(windows, self._state)
            self._scores.append(scores)

    def _settle(self) -> None:
        """Mark the stream capped once the first `cap` samples of speech can no longer change."""
        assert self._cap is not None
        segments = _settled_segments(self.probabilities, self._detector.parameters)
        if segments.shape[0] and int(np.sum(segments[:, 1] - segments[:, 0])) >= self._cap:
            self._settled = segments

    def _joined_audio(self) -> NDArray[np.float32]:
        if len(self._audio) > 1:
            self._audio = [np.concatenate(self._audio)]
        return self._audio[0] if self._audio else np.zeros(0, dtype=np.float32)


def segments_from_probabilities(
    probabilities: ArrayLike, audio_length: int, parameters: VadParameters | None = None
) -> NDArray[np.int64]:
    """Speech segments (k x 2, start and end sample) from window scores of a whole signal.

    Gives what silero-vad's get_speech_timestamps_from_probs gives for the same scores and
    parameters (with max_speech_duration_s left infinite).
    """
    parameters = parameters or VadParameters()
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    starts, ends, open_start = _raw_segments(scores, parameters)
    if open_start is not None:
        starts = np.append(starts, open_start * WINDOW)
        ends = np.append(ends, audio_length)
    starts, ends = _drop_short(starts, ends, parameters)
    return _pad(starts, ends, audio_length, parameters, pad_last_end=True)


def _settled_segments(scores: NDArray[np.float32], parameters: VadParameters) -> NDArray[np.int64]:
    """The padded segments of a stream's prefix that later audio can no longer change.

    The state machine is causal, so a segment closed within the prefix is closed the same way
    in the whole signal, and so is the decision to keep it. Padding is not quite: the end pad
    of the last closed segment depends on where the next kept segment starts, which may lie
    beyond the prefix, so that end is left unpadded (a lower bound of its final value).
    """
    starts, ends, _ = _raw_segments(np.asarray(scores, dtype=np.float64), parameters)
    starts, ends = _drop_short(starts, ends, parameters)
    no_limit = np.iinfo(np.int64).max
    return _pad(starts, ends, no_limit, parameters, pad_last_end=False)


def _raw_segments(
    scores: NDArray[np.float64], parameters: VadParameters
) -> tuple[NDArray[np.int64], NDArray[np.int64], int | None]:
    """Closed segments (start, end sample), before dropping and padding; and an open start.

    silero-vad walks the windows with a state machine: a window >= threshold opens a segment;
    inside one, the first window below the exit threshold after the latest speech window marks
    a candidate end, which becomes the end once a window below the exit threshold comes at
    least min_silence later with no speech window in between. So each gap between two
    consecutive speech windows closes the segment iff the distance between the first and the
    last silence window in that gap reaches min_silence; the next speech window then opens
    the next segment. That is decided for all gaps at once below.
    """
    count = scores.shape[0]
    speech = np.flatnonzero(scores >= parameters.threshold)
    empty = np.zeros(0, dtype=np.int64)
    if speech.size == 0:
        return empty, empty, None
    silent = scores < parameters.exit_threshold
    positions = np.arange(count + 1)
    # First silent window at or after i (count when none), and last at or before i (-1).
    next_silent = np.where(np.append(silent, True), positions, count)
    next_silent = np.minimum.accumulate(next_silent[::-1])[::-1]
    last_silent = np.maximum.accumulate(np.where(silent, positions[:-1], -1))
    gap_after = speech  # each speech window ...
    gap_before = np.append(speech[1:], count)  # ... and the next one (or the end of the prefix)
    first = next_silent[gap_after + 1]
    last = last_silent[gap_before - 1]
    min_silence = parameters.min_silence_duration_ms * SAMPLE_RATE / 1000
    closes = (first < gap_before) & ((last - first) * WINDOW >= min_silence)
    ends = (first[closes] * WINDOW).astype(np.int64)
    reopen = closes & (gap_before < count)
    starts = np.concatenate(([speech[0]], gap_before[reopen])).astype(np.int64) * WINDOW
    open_start = None
    if starts.shape[0] > ends.shape[0]:
        open_start = int(starts[-1] // WINDOW)
        starts = starts[:-1]
    return starts, ends, open_start


def _drop_short(
    starts: NDArray[np.int64], ends: NDArray[np.int64], parameters: VadParameters
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    min_speech = parameters.min_speech_duration_ms * SAMPLE_RATE / 1000
    keep = (ends - starts) > min_speech
    return starts[keep], ends[keep]


def _pad(
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    audio_length: int,
    parameters: VadParameters,
    *,
    pad_last_end: bool,
) -> NDArray[np.int64]:
    """Pad like silero-vad: `pad` each side, or half the gap when segments are that close."""
    if starts.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pad = parameters.speech_pad_ms * SAMPLE_RATE / 1000
    begin = starts.astype(np.float64)
    end = ends.astype(np.float64)
    gaps = begin[1:] - end[:-1]
    close = gaps < 2 * pad
    half = np.floor_divide(gaps, 2)
    padded_begin = begin.copy()
    padded_end = end.copy()
    padded_begin[0] = max(0.0, begin[0] - pad)
    padded_begin[1:] = np.maximum(0.0, begin[1:] - np.where(close, half, pad))
    padded_end[:-1] = np.where(close, end[:-1] + half, np.minimum(audio_length, end[:-1] + pad))
    if pad_last_end:
        padded_end[-1] = min(float(audio_length), end[-1] + pad)
    return np.stack((np.floor(padded_begin), np.floor(padded_end)), axis=1).astype(np.int64)


def _cap_segments(segments: NDArray[np.int64], cap: int) -> NDArray[np.int64]:
    """The segments cut so that their total length is at most `cap` samples."""
    lengths = segments[:, 1] - segments[:, 0]
    before = np.cumsum(lengths) - lengths
    kept: NDArray[np.int64] = segments[before < cap].copy()
    if kept.shape[0]:
        room = cap - before[kept.shape[0] - 1]
        kept[-1, 1] = min(kept[-1, 1], kept[-1, 0] + room)
    return kept


def _as_signal(samples: ArrayLike) -> NDArray[np.float32]:
    signal = np.asarray(samples)
    if signal.ndim != 1:
        raise ValueError(f"VAD takes one channel of samples (1-D), got shape {signal.shape}")
    if signal.dtype != np.float32:
        if not np.issubdtype(signal.dtype, np.floating):
            raise ValueError(f"VAD takes float samples in [-1, 1], got {signal.dtype}")
        signal = signal.astype(np.float32)
    return np.ascontiguousarray(signal)
