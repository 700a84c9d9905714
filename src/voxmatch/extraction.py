"""Voiceprint extraction: audio in, one voiceprint per signal out.

For each signal: voice activity detection keeps the speech (up to an optional cap), the model's
filterbank front end and network turn it into an embedding, and the seconds of speech used are
stored with it. A signal with too little speech for the network gives the empty voiceprint
(zero embedding, speech_length 0), as SPE4 does; it scores 0 (no evidence) against anything.

Very long speech is embedded in equal chunks of at most `chunk_seconds`, whose unit-length
embeddings are averaged: the network's memory grows with input length, and beyond a minute or
two more speech no longer changes a voiceprint noticeably.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxmatch.audio import (
    DEFAULT_MAX_DURATION,
    DecodedAudio,
    RawAudioFormat,
    Source,
    TimeRange,
    decode,
)
from voxmatch.models.registry import ModelDescription, describe
from voxmatch.models.speaker_model import SpeakerModel, load_speaker_model
from voxmatch.vad import VoiceActivityDetector
from voxmatch.voiceprint import Voiceprint

DEFAULT_CHUNK_SECONDS = 120.0
MIN_SPEECH_SECONDS = 0.25
"""Less detected speech than this gives the empty voiceprint: too short to say anything."""


class ExtractionStopped(RuntimeError):
    """The caller asked the extraction to stop (a cancelled task, for instance)."""


@dataclass(frozen=True)
class Extraction:
    voiceprint: Voiceprint
    processed_seconds: float
    """How much audio was looked at: all of it, or less when the speech cap was reached."""

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
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        min_speech_seconds: float = MIN_SPEECH_SECONDS,
    ) -> None:
        self.model = model
        self.vad = vad
        self.chunk_seconds = chunk_seconds
        self.min_speech_seconds = max(min_speech_seconds, (model.min_frames + 2) * 0.01 + 0.015)

    @property
    def description(self) -> ModelDescription:
        return self.model.description

    @property
    def sample_rate(self) -> int:
        return self.model.description.sample_rate

    def empty_voiceprint(self) -> Voiceprint:
        return Voiceprint.from_embedding(
            np.zeros(self.description.embedding_dim, dtype=np.float32),
            speech_length=0.0,
            model=self.description.name,
        )

    def extract(
        self, samples: npt.NDArray[np.float32], *, max_speech_seconds: float | None = None
    ) -> Extraction:
        """The voiceprint of one mono signal at the model's sample rate (16 kHz)."""
        speech = self.vad.speech_samples(samples, max_speech_seconds)
        if speech.seconds < self.min_speech_seconds:
            return Extraction(self.empty_voiceprint(), speech.processed_seconds)
        embedding = self._embed(speech.samples)
        voiceprint = Voiceprint.from_embedding(
            embedding, speech_length=speech.seconds, model=self.description.name
        )
        return Extraction(voiceprint, speech.processed_seconds)

    def extract_audio(
        self,
        audio: DecodedAudio,
        *,
        channel_mode: str = "split",
        channels: Sequence[int] | None = None,
        max_speech_seconds: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[ChannelExtraction]:
        """One voiceprint per channel (`split`) or one of their mix (`mix`).

        `should_stop` is asked between channels; when it says so, ExtractionStopped is raised.
        """
        if audio.sample_rate != self.sample_rate:
            raise ValueError(
                f"audio is at {audio.sample_rate} Hz, the model needs {self.sample_rate} Hz"
            )
        results = []
        for signal in audio.signals(channel_mode, channels):
            if should_stop is not None and should_stop():
                raise ExtractionStopped("extraction stopped on request")
            extraction = self.extract(signal.samples, max_speech_seconds=max_speech_seconds)
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
    ) -> list[ChannelExtraction]:
        """Decode a file (path or bytes) and extract one voiceprint per channel, or of the mix.

        Raises AudioError when the audio cannot be used and ExtractionStopped when
        `should_stop` says so.
        """
        audio = decode(
            source,
            raw=raw,
            time_range=time_range,
            channels=channels,
            sample_rate=self.sample_rate,
            max_duration=max_duration,
        )
        return self.extract_audio(
            audio,
            channel_mode=channel_mode,
            max_speech_seconds=max_speech_seconds,
            should_stop=should_stop,
        )

    def _embed(self, speech: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        chunk_samples = int(self.chunk_seconds * self.sample_rate)
        if speech.shape[0] <= chunk_samples:
            return self.model.embed_samples(speech)
        # Equal chunks, so they can go through the network as one batch without padding.
        count = math.ceil(speech.shape[0] / chunk_samples)
        length = speech.shape[0] // count
        chunks = speech[: count * length].reshape(count, length)
        features = np.stack([self.model.features(chunk) for chunk in chunks])
        embeddings = self.model.embed_batch(features)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        mean: npt.NDArray[np.float32] = embeddings.mean(axis=0, dtype=np.float32)
        return mean


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
