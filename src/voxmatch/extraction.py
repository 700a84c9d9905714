"""Voiceprint extraction: audio in, one voiceprint per signal out.

For each signal: voice activity detection keeps the speech (up to an optional cap), the model's
filterbank front end and network turn it into an embedding, and the seconds of speech used are
stored with it. A signal with too little speech for the network gives the empty voiceprint
(zero embedding, speech_length 0), as SPE4 does; it scores 0 (no evidence) against anything.

Extraction streams, so memory does not grow with the length of a recording: `extract_source`
decodes a file block by block, the detector keeps only the audio that may still become speech,
and the speech goes through the network in pieces of at most `piece_seconds` (30 s by default)
as they fill. The network's memory grows with the length of its input, about 2 MB per second
(measured: +90 MB at 30 s, +240 MB at 120 s), and 30 s of speech takes it about 0.4 s on one
thread, so a stop request is seen within half a second. How speech is pieced:

- speech up to `piece_seconds` long is embedded whole, as one utterance;
- longer speech: while more than two pieces' worth is waiting, the first `piece_seconds` of it
  become a piece; at the end, the rest (more than one piece, at most two) is cut into two equal
  halves. So every piece is between half a piece and a piece long, and speech of up to two
  pieces is cut exactly in two. Each piece's embedding is scaled to unit length and the
  voiceprint is their average weighted by piece length: beyond a minute or two, more speech no
  longer changes a voiceprint noticeably.

Beside the embedding, each signal's condition is measured as it streams (voxmatch.bandwidth:
the effective bandwidth of its speech, narrowband below 4.5 kHz or from a source of 8 kHz or
less, and an SNR estimate), and with a cohort configured, the embedding's score-normalisation
statistics against it (voxmatch.cohort). All of it goes into the voiceprint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxmatch._malloc import release_freed_memory
from voxmatch.audio import (
    DEFAULT_MAX_DURATION,
    DecodedAudio,
    RawAudioFormat,
    Source,
    TimeRange,
    parse_channel_mode,
    stream_audio,
)
from voxmatch.bandwidth import ConditionMeter
from voxmatch.cohort import Cohort
from voxmatch.models.registry import ModelDescription, describe
from voxmatch.models.speaker_model import SpeakerModel, load_speaker_model
from voxmatch.stopping import check
from voxmatch.vad import WINDOW, VoiceActivityDetector
from voxmatch.voiceprint import WIDEBAND, Voiceprint

DEFAULT_PIECE_SECONDS = 30.0
"""Longest speech that goes through the network in one run (see the module's docstring)."""
MIN_SPEECH_SECONDS = 0.25
"""Less detected speech than this gives the empty voiceprint: too short to say anything."""

MAX_SPEECH_SEGMENTS = 1000
"""Most speech segments an extraction reports: a longer list has its closest neighbours joined,
so that a result stays small whatever the length of the recording (about 20 bytes each)."""

Progress = Callable[[float, float | None], None]
"""Called with (seconds of audio processed so far, seconds of the selected audio if known)."""


@dataclass(frozen=True)
class Extraction:
    voiceprint: Voiceprint
    processed_seconds: float
    """How much audio was looked at: all of it, or less when the speech cap was reached."""
    speech_segments: tuple[tuple[float, float], ...] = ()
    """(start, end) in seconds of the audio of each stretch the detector kept as speech (after
    the speech cap), at most MAX_SPEECH_SEGMENTS of them (see `bounded_segments`)."""

    @property
    def speech_length(self) -> float:
        return self.voiceprint.speech_length


@dataclass(frozen=True)
class ChannelExtraction:
    channel_number: int
    extraction: Extraction


class Extractor:
    """Thread-safe: one extractor serves every worker (onnxruntime sessions are shareable)."""

    def __init__(
        self,
        model: SpeakerModel,
        vad: VoiceActivityDetector,
        *,
        piece_seconds: float = DEFAULT_PIECE_SECONDS,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
        cohort: Cohort | None = None,
    ) -> None:
        """`cohort`, when given, makes every voiceprint carry its score-normalisation
        statistics against it (embeddings of the same model)."""
        self.model = model
        self.vad = vad
        if cohort is not None and cohort.embedding_dim != model.description.embedding_dim:
            raise ValueError(
                f"the cohort holds {cohort.embedding_dim}-dimensional embeddings, the model"
                f" makes {model.description.embedding_dim}"
            )
        self.cohort = cohort
        self.min_speech_seconds = max(min_speech_seconds, (model.min_frames + 2) * 0.01 + 0.015)
        if not piece_seconds >= 2 * self.min_speech_seconds:
            raise ValueError(
                f"piece_seconds must be at least {2 * self.min_speech_seconds:g},"
                f" got {piece_seconds}"
            )
        self.piece_seconds = piece_seconds

    @property
    def description(self) -> ModelDescription:
        return self.model.description

    @property
    def sample_rate(self) -> int:
        return self.model.description.sample_rate

    def empty_voiceprint(self, condition: int = WIDEBAND) -> Voiceprint:
        return Voiceprint.from_embedding(
            np.zeros(self.description.embedding_dim, dtype=np.float32),
            speech_length=0.0,
            model=self.description.name,
            condition=condition,
        )

    def extract(
        self,
        samples: npt.NDArray[np.float32],
        *,
        max_speech_seconds: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        source_rate: int | None = None,
    ) -> Extraction:
        """The voiceprint of one mono signal at the model's sample rate (16 kHz).

        `source_rate` is the rate the audio had before it was resampled, when known: audio of
        8 kHz or less is narrowband whatever its content.
        """
        signal = _SignalExtraction(self, max_speech_seconds, should_stop, source_rate)
        step = self._feed_samples
        for begin in range(0, samples.shape[0], step):
            if signal.feed(samples[begin : begin + step]):
                break
        return signal.finish()

    def extract_audio(
        self,
        audio: DecodedAudio,
        *,
        channel_mode: str = "split",
        channels: Sequence[int] | None = None,
        max_speech_seconds: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[ChannelExtraction]:
        """One voiceprint per channel (`split`) or one of their mix (`mix`) of decoded audio.

        `should_stop` is asked as in `extract_source`.
        """
        if audio.sample_rate != self.sample_rate:
            raise ValueError(
                f"audio is at {audio.sample_rate} Hz, the model needs {self.sample_rate} Hz"
            )
        results = []
        for signal in audio.signals(channel_mode, channels):
            extraction = self.extract(
                signal.samples,
                max_speech_seconds=max_speech_seconds,
                should_stop=should_stop,
                source_rate=audio.original_sample_rate,
            )
            results.append(ChannelExtraction(signal.channel_number, extraction))
        return results

    def extract_source(
        self,
        source: Source,
        *,
        raw: RawAudioFormat | None = None,
        time_range: TimeRange | None = None,
        channel_mode: str = "split",
        channels: Sequence[int] | None = None,
        max_speech_seconds: float | None = None,
        max_duration: float = DEFAULT_MAX_DURATION,
        should_stop: Callable[[], bool] | None = None,
        on_progress: Progress | None = None,
    ) -> list[ChannelExtraction]:
        """Decode a file (path or bytes) and extract one voiceprint per channel, or of the mix.

        Streams: the file is decoded block by block and every channel goes through detection
        and the network as the blocks come, so memory stays the same whatever the length.
        Decoding stops early once every channel has its capped speech. `should_stop` is asked
        every few seconds of audio and between network runs (each well under a second of
        work); when it says so, `stopping.Stopped` is raised. `on_progress` is called after each
        block. The memory freed is handed back to the kernel at the end. Raises AudioError when
        the audio cannot be used.
        """
        mode = parse_channel_mode(channel_mode)
        stream = stream_audio(
            source,
            raw=raw,
            time_range=time_range,
            channels=channels,
            sample_rate=self.sample_rate,
            max_duration=max_duration,
        )
        try:
            numbers = [0] if mode == "mix" else list(stream.channel_numbers)
            signals = [
                _SignalExtraction(
                    self, max_speech_seconds, should_stop, stream.original_sample_rate
                )
                for _ in numbers
            ]
            done = 0
            for block in stream:
                if mode == "mix":
                    rows = [block[0] if block.shape[0] == 1 else _mix(block)]
                else:
                    rows = list(block)
                step = self._feed_samples
                for begin in range(0, block.shape[1], step):
                    for signal, row in zip(signals, rows, strict=True):
                        signal.feed(row[begin : begin + step])
                done += block.shape[1]
                if on_progress is not None:
                    on_progress(done / self.sample_rate, stream.expected_seconds)
                if all(signal.capped for signal in signals):
                    break
            offset = (time_range.start or 0.0) if time_range is not None else 0.0
            return [
                ChannelExtraction(number, signal.finish(offset))
                for number, signal in zip(numbers, signals, strict=True)
            ]
        finally:
            stream.close()
            # What the extraction freed would otherwise stay with the process (see _malloc).
            release_freed_memory()

    @property
    def _feed_samples(self) -> int:
        """Audio handed to the detector at a time: its scoring block (8 s, tens of ms of work),
        so a stop request is seen often."""
        return self.vad.block_windows * WINDOW


class _SignalExtraction:
    """One signal on its way through detection and the network; not for sharing."""

    def __init__(
        self,
        extractor: Extractor,
        max_speech_seconds: float | None,
        should_stop: Callable[[], bool] | None,
        source_rate: int | None,
    ) -> None:
        self._extractor = extractor
        self._should_stop = should_stop
        self._source_rate = source_rate
        self._meter = ConditionMeter(extractor.sample_rate)
        self._stream = extractor.vad.stream(max_speech_seconds)
        self._piece = round(extractor.piece_seconds * extractor.sample_rate)
        self._waiting: list[npt.NDArray[np.float32]] = []
        self._waiting_length = 0
        self._sum = np.zeros(extractor.description.embedding_dim, dtype=np.float64)
        self._weight = 0

    @property
    def capped(self) -> bool:
        return self._stream.capped

    def feed(self, samples: npt.NDArray[np.float32]) -> bool:
        """The next audio of the signal; returns True once its capped speech is complete."""
        self._check()
        if self._stream.capped:
            return True
        self._meter.add_audio(samples)
        capped = self._stream.feed(samples)
        self._gather(self._stream.take())
        return capped

    def finish(self, offset_seconds: float = 0.0) -> Extraction:
        """The signal's voiceprint; its speech segments are given `offset_seconds` later (where
        the signal starts in the file)."""
        self._check()
        rest = self._stream.finish()
        self._gather(rest.samples)
        extractor = self._extractor
        processed = rest.processed_seconds
        segments = bounded_segments(
            rest.segments / extractor.sample_rate + offset_seconds, MAX_SPEECH_SEGMENTS
        )
        speech_seconds = self._stream.speech_samples / extractor.sample_rate
        measured = self._meter.result(self._source_rate)
        if speech_seconds < extractor.min_speech_seconds:
            return Extraction(extractor.empty_voiceprint(measured.condition), processed, segments)
        speech = _joined(self._waiting)
        self._waiting = []
        if self._weight == 0 and speech.shape[0] <= self._piece:
            self._check()
            embedding = extractor.model.embed_samples(speech)
        else:
            half = speech.shape[0] // 2
            self._embed_piece(speech[:half])
            self._embed_piece(speech[half : 2 * half])
            embedding = (self._sum / self._weight).astype(np.float32)
        cohort_mean, cohort_std = 0.0, 0.0
        if extractor.cohort is not None:
            means, stds = extractor.cohort.statistics(embedding[np.newaxis, :])
            cohort_mean, cohort_std = float(means[0]), float(stds[0])
        voiceprint = Voiceprint.from_embedding(
            embedding,
            speech_length=speech_seconds,
            model=extractor.description.name,
            condition=measured.condition,
            bandwidth=measured.bandwidth,
            snr=measured.snr,
            cohort_mean=cohort_mean,
            cohort_std=cohort_std,
        )
        return Extraction(voiceprint, processed, segments)

    def _gather(self, speech: npt.NDArray[np.float32]) -> None:
        self._meter.add_speech(speech)
        if speech.shape[0]:
            self._waiting.append(speech)
            self._waiting_length += speech.shape[0]
        # Two pieces' worth stays waiting, so the last pieces can be cut evenly at the end.
        while self._waiting_length > 2 * self._piece:
            waiting = _joined(self._waiting)
            self._embed_piece(waiting[: self._piece])
            self._waiting = [waiting[self._piece :]]
            self._waiting_length -= self._piece

    def _embed_piece(self, piece: npt.NDArray[np.float32]) -> None:
        self._check()
        embedding = self._extractor.model.embed_samples(piece).astype(np.float64)
        self._sum += piece.shape[0] * embedding / np.linalg.norm(embedding)
        self._weight += piece.shape[0]
        # The network's buffers were just freed: give them back now, or a long recording
        # fragments the heap until it holds several times what is in use (see _malloc).
        release_freed_memory()

    def _check(self) -> None:
        check(self._should_stop, "extraction")


def bounded_segments(
    segments: npt.NDArray[np.float64], most: int
) -> tuple[tuple[float, float], ...]:
    """Sorted (start, end) segments (k x 2), in milliseconds' precision, joined until at most
    `most` remain: each round joins neighbours two by two (the gap between them counts as
    speech), halving the list, so a long recording shows where its speech is at a coarser
    grain rather than a list that grows with its length."""
    rows = segments.reshape(-1, 2)
    while rows.shape[0] > most:
        pairs = rows.shape[0] // 2
        joined = np.column_stack((rows[0 : 2 * pairs : 2, 0], rows[1 : 2 * pairs : 2, 1]))
        rows = np.vstack((joined, rows[2 * pairs :]))
    return tuple((round(float(start), 3), round(float(end), 3)) for start, end in rows)


def _mix(block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    mixed: npt.NDArray[np.float32] = block.mean(axis=0, dtype=np.float32)
    return mixed


def _joined(pieces: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]


def load_extractor(
    model_name: str,
    cache_dir: Path,
    search_dirs: Iterable[Path] = (),
    *,
    threads: int = 1,
) -> Extractor:
    """The extractor of a registered model: weights and VAD fetched, verified and cached."""
    description = describe(model_name)
    folders = list(search_dirs)
    model = load_speaker_model(description, cache_dir, folders, threads=threads)
    vad = VoiceActivityDetector.from_registry(cache_dir, search_dirs=folders)
    return Extractor(model, vad)
