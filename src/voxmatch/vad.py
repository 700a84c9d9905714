"""Voice activity detection with Silero VAD in onnxruntime (no torch).

Silero VAD scores each 32 ms window (512 samples at 16 kHz, seen together with the 64 samples
before it) with a small convolutional front end and an LSTM whose state runs through the whole
stream. silero-vad 6.2.3 ships two ONNX forms of the same network:

- `silero_vad.onnx`, the streaming form: one call per window, the recurrent state passed in and
  out by the caller. Calling it 31 times per second from Python costs more than the network.
- `silero_vad_16k_sequence.onnx`, the sequence form: one call scores a whole block of windows,
  the LSTM stepping inside onnxruntime. Its scores agree with the streaming form's to float32
  rounding (the tests allow 1e-5; on one machine they are often the same bits, but kernels
  and batch sizes may round differently) at less than half the cost, so it is the default.

Speech timestamps are then derived from the scores exactly as silero-vad's
`get_speech_timestamps` derives them (threshold with hysteresis, minimum silence to close a
segment, minimum speech to keep one, padding on both sides), but in vectorised NumPy rather than a
per-window Python loop. The `max_speech_duration_s` splitting of the original is not offered: we
only need where speech is, not bounded chunks of it.

`SpeechStream` scores audio as it arrives and hands out speech as soon as it is settled, keeping
only the audio that may still become speech (`SpeechSegmenter`), so its memory does not grow
with the length of the stream.

One detector holds one onnxruntime session and can be called from several threads at once: the
recurrent state and context live in each call (or `SpeechStream`), never in the detector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from numpy.typing import ArrayLike, NDArray

from voxmatch.assets import RegistryAsset, locate
from voxmatch.onnx_sessions import session_options

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
        self._session = onnxruntime.InferenceSession(
            str(model_path),
            sess_options=session_options(threads),
            providers=["CPUExecutionProvider"],
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

    def score_windows(
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

    def initial_state(self) -> tuple[NDArray[np.float32], ...]:
        if self.sequence_model:
            return (
                np.zeros((1, 1, _STATE_SIZE), dtype=np.float32),
                np.zeros((1, 1, _STATE_SIZE), dtype=np.float32),
            )
        return (np.zeros((2, 1, _STATE_SIZE), dtype=np.float32),)


class SpeechStream:
    """Scores audio as it arrives and gives out its speech as soon as it is settled.

    Keeps the recurrent state and the last 64 samples between pieces, so feeding a signal in
    any pieces gives the same scores as feeding it whole; and only the audio that may still
    become speech (see `SpeechSegmenter`), so memory does not grow with the length of the
    stream. `take` hands over the speech settled so far; `finish` ends the stream. Not for
    sharing between threads.
    """

    def __init__(self, detector: VoiceActivityDetector, max_speech_samples: int | None) -> None:
        self._detector = detector
        self._cap = max_speech_samples
        self._state = detector.initial_state()
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._segmenter = SpeechSegmenter(detector.parameters)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0
        """Sample index of `_audio[0]` in the stream: the audio before it is let go."""
        self._length = 0
        self._scores: list[NDArray[np.float32]] = []
        self._scored_windows = 0
        self._speech: list[NDArray[np.float32]] = []
        self._speech_length = 0
        self._processed_at_cap: int | None = None
        self._flushed = False

    @property
    def capped(self) -> bool:
        """True once the capped amount of speech is settled: later audio is not needed."""
        return self._processed_at_cap is not None

    @property
    def speech_samples(self) -> int:
        """Samples of speech settled so far (taken or not), up to the cap."""
        return self._speech_length

    @property
    def processed_samples(self) -> int:
        """Samples of audio looked at so far: all that was fed, or up to where the cap was
        reached."""
        if self._processed_at_cap is not None:
            return min(self._processed_at_cap, self._length)
        return self._length

    @property
    def held_samples(self) -> int:
        """Samples of audio held because they may still become speech."""
        return int(self._audio.shape[0])

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
        self._audio = np.concatenate((self._audio, piece)) if self._audio.size else piece
        self._length += piece.shape[0]
        pending = np.concatenate((self._pending, piece)) if self._pending.size else piece
        whole = pending.shape[0] // WINDOW * WINDOW
        self._pending = pending[whole:].copy()
        if whole:
            scores = self._score_windows(pending[:whole].reshape(-1, WINDOW))
            self._collect(self._segmenter.push(scores))
        return self.capped

    def flush(self) -> None:
        """Score the last, partial window (zero-padded) once no more audio will come, and settle
        the rest of the speech."""
        if self._flushed or self.capped:
            return
        self._flushed = True
        scores = np.zeros(0, dtype=np.float32)
        if self._pending.size:
            last = np.zeros((1, WINDOW), dtype=np.float32)
            last[0, : self._pending.size] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            scores = self._score_windows(last)
        self._collect(self._segmenter.finish(scores, self._length))

    def take(self) -> NDArray[np.float32]:
        """The speech settled since the last `take` (or since the start), concatenated."""
        taken = _joined(self._speech)
        self._speech = []
        return taken

    def finish(self) -> Speech:
        """The speech found (up to the cap) that was not taken; no more audio may be fed
        afterwards. The segments are all of them, taken or not."""
        self.flush()
        segments = np.array(self._segmenter.segments, dtype=np.int64).reshape(-1, 2)
        if self._cap is not None:
            segments = _cap_segments(segments, self._cap)
        return Speech(self.take(), segments, self.processed_samples)

    def _score_windows(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        detector = self._detector
        step = detector.block_windows if detector.sequence_model else frames.shape[0]
        found = []
        for begin in range(0, frames.shape[0], step):
            block = frames[begin : begin + step]
            windows = np.empty((block.shape[0], CONTEXT + WINDOW), dtype=np.float32)
            windows[:, CONTEXT:] = block
            windows[0, :CONTEXT] = self._context
            windows[1:, :CONTEXT] = block[:-1, -CONTEXT:]
            self._context = block[-1, -CONTEXT:].copy()
            scores, self._state = detector.score_windows(windows, self._state)
            found.append(scores)
        self._scores.extend(found)
        self._scored_windows += frames.shape[0]
        return _joined(found)

    def _collect(self, stretches: list[tuple[int, int]]) -> None:
        """Copy the settled stretches out of the audio, up to the cap, and let go of the audio
        no later stretch can need."""
        for start, end in stretches:
            if self._cap is not None:
                end = min(end, start + self._cap - self._speech_length)
            assert start >= self._audio_start, "audio still needed was let go"
            self._speech.append(
                self._audio[start - self._audio_start : end - self._audio_start].copy()
            )
            self._speech_length += end - start
            if self._cap is not None and self._speech_length >= self._cap:
                self._processed_at_cap = self._scored_windows * WINDOW
                self._audio = np.zeros(0, dtype=np.float32)
                return
        drop = self._segmenter.needed_from - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start += drop


class SpeechSegmenter:
    """The padded speech segments of a stream of window scores, given out as they settle.

    Gives the segments `segments_from_probabilities` gives for the whole stream, but piece by
    piece: `push` returns the stretches of samples that are now certain to be speech, in order,
    and `needed_from` says where the earliest sample that may still become speech lies, so a
    caller need keep no audio before it. Speech is certain as soon as the state machine has
    seen it (a segment is kept once it is longer than min_speech, and the windows it has reached
    stay in it); only the end pad of the last segment waits until the next kept segment or
    enough silence is seen. Memory is what the unsettled tail of the scores needs: a few windows
    in ordinary speech.
    """

    def __init__(self, parameters: VadParameters | None = None) -> None:
        self.parameters = parameters or VadParameters()
        self._pad = self.parameters.speech_pad_ms * SAMPLE_RATE / 1000
        self._min_speech = self.parameters.min_speech_duration_ms * SAMPLE_RATE / 1000
        self._windows = 0
        # The state machine restarts from window `_base`: the windows before it are decided.
        self._base = 0
        self._tail = np.zeros(0, dtype=np.float64)
        self._continuing: int | None = None
        """Start sample of the segment open at `_base` (the tail then starts at one of its
        speech windows), None when no segment is open there."""
        self._current: tuple[int, int | None] | None = None
        """Raw (start, end) of the segment whose padded end is not settled; end None while it
        is open. Its padded begin has been given out."""
        self._last_end: int | None = None
        """Raw end of the latest closed kept segment."""
        self._given = 0
        self._next_start = 0
        """No kept segment not yet seen can start before this sample."""
        self.segments: list[tuple[int, int]] = []
        """Padded (start, end) of each segment so far; the last one's end may still grow."""

    @property
    def needed_from(self) -> int:
        """No sample before this one will be given out from now on."""
        if self._current is not None:
            return self._given
        return max(self._given, math.floor(max(0.0, self._next_start - self._pad)))

    def push(self, scores: NDArray[np.float32]) -> list[tuple[int, int]]:
        """Take the next window scores; returns the (start, end) stretches now settled.

        Every window pushed must be whole audio: the last, zero-padded one goes to `finish`.
        """
        self._add(scores)
        return self._settle(None)

    def _add(self, scores: NDArray[np.float32]) -> None:
        self._windows += scores.shape[0]
        if self._tail.size:
            self._tail = np.concatenate((self._tail, scores.astype(np.float64)))
        else:
            self._tail = scores.astype(np.float64)

    def finish(self, scores: NDArray[np.float32], audio_length: int) -> list[tuple[int, int]]:
        """Take the last window scores; the stream has ended after `audio_length` samples.
        Returns the rest of the speech."""
        self._add(scores)
        return self._settle(audio_length)

    def _settle(self, audio_length: int | None) -> list[tuple[int, int]]:
        parameters = self.parameters
        out: list[tuple[int, int]] = []
        starts, ends, open_window = _raw_segments(self._tail, parameters)
        offset = self._base * WINDOW
        starts, ends = starts + offset, ends + offset
        open_start = None if open_window is None else open_window * WINDOW + offset
        if self._continuing is not None:
            if starts.shape[0]:
                starts[0] = self._continuing
            else:
                open_start = self._continuing
        if audio_length is not None and open_start is not None:
            starts = np.append(starts, open_start)
            ends = np.append(ends, audio_length)
            open_start = None
        starts, ends = _drop_short(starts, ends, parameters)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if self._current is not None and self._current == (start, None):
                self._current = (start, end)  # the open segment already begun has closed
            else:
                self._begin(start, out)
                self._current = (start, end)
            self._give(end, out)
        if open_start is None:
            self._next_start = self._windows * WINDOW
            self._continuing = None
            self._base = self._windows
            self._tail = np.zeros(0, dtype=np.float64)
        else:
            self._next_start = open_start
            # Restart at the segment's latest speech window: from there the state machine runs
            # as from a fresh start, so the windows before it need not be looked at again.
            latest = int(np.flatnonzero(self._tail >= parameters.threshold)[-1])
            reached = (self._base + latest + 1) * WINDOW
            self._continuing = open_start
            self._base += latest
            self._tail = self._tail[latest:]
            if self._current == (open_start, None):
                self._give(reached, out)
            elif reached - open_start > self._min_speech:
                # Longer than min_speech already, so kept whatever comes next.
                self._begin(open_start, out)
                self._current = (open_start, None)
                self._give(reached, out)
        current = self._current
        if current is not None and current[1] is not None:
            end = current[1]
            if audio_length is not None:
                self._give(math.floor(min(float(audio_length), end + self._pad)), out)
                self._close(end)
            elif self._next_start - end >= 2 * self._pad:
                self._give(math.floor(end + self._pad), out)
                self._close(end)
        return out

    def _begin(self, start: int, out: list[tuple[int, int]]) -> None:
        """A new kept segment starts at `start`: settle the previous one's end and pad both."""
        previous_end = self._last_end
        if self._current is not None:
            previous_end = self._current[1]
            assert previous_end is not None
        if previous_end is None:
            begin = start - self._pad
        else:
            gap = float(start - previous_end)
            if gap < 2 * self._pad:
                half = gap // 2
                begin = start - half
                end = previous_end + half
            else:
                begin = start - self._pad
                end = previous_end + self._pad
            if self._current is not None:
                self._give(math.floor(end), out)
                self._close(previous_end)
        padded_begin = math.floor(max(0.0, begin))
        self.segments.append((padded_begin, padded_begin))
        self._given = padded_begin

    def _give(self, end: int, out: list[tuple[int, int]]) -> None:
        if end <= self._given:
            return
        out.append((self._given, end))
        self.segments[-1] = (self.segments[-1][0], end)
        self._given = end

    def _close(self, raw_end: int) -> None:
        self._last_end = raw_end
        self._current = None


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


def _joined(pieces: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
