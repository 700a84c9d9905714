"""Clips of real speech in several conditions, their voiceprints (cached), and the trials of them.

A recording is a stretch of real speech of one known speaker (an AMI single-speaker run, an AN4,
LibriVox, KTuberling or Asterisk recording). Each wideband recording is used as it is and
through every telephone chain of tools.telephone, stored at 8 kHz and at 16 kHz; a real
telephone recording is used as it is. These are the clips, each
with the ground truth of how it was made. Every clip's voiceprint is extracted by the real
extractor from the file, as the server would (the 8 kHz files are resampled by voxmatch's own
decoder), and cached with its speech length and its share of energy above 4 kHz in
`tools.corpora.cache_dir()/embeddings`, so a rerun costs nothing.

A trial is a pair of clips of different recordings (two versions of one recording, or one
Asterisk take shipped as both G.722 and GSM, are not evidence of anything). Its condition is the
sum of the two clips' condition codes, as the server's calibration indexes them (0 both
wideband, 1 one of each, 2 both narrowband).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tools import corpora, telephone
from voxmatch.audio import TimeRange, decode
from voxmatch.extraction import Extractor, load_extractor
from voxmatch.models.registry import DEFAULT_MODEL_NAME
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

ORIGINAL = "original"
"""The chain name of a recording used as it is."""
_EMBEDDING_CACHE_VERSION = "v1"
HIGH_BAND_HZ = 4_000.0


@dataclass(frozen=True)
class Recording:
    corpus: str
    name: str
    speaker: str
    """Unique over corpora (`corpus:speaker`)."""
    path: Path
    start: float | None = None
    end: float | None = None
    condition: int = WIDEBAND
    """How the recording itself was made (a real telephone recording is NARROWBAND)."""

    def samples(self) -> npt.NDArray[np.float32]:
        return corpora.load(self.path, self.start or 0.0, self.end)


@dataclass(frozen=True)
class Clip:
    recording: int
    """Index into the recordings."""
    chain: str
    """ORIGINAL or a tools.telephone chain name."""
    sample_rate: int
    """The rate of the file extraction read (8 kHz or 16 kHz for telephone versions)."""
    path: Path
    time_range: TimeRange | None
    condition: int


@dataclass(frozen=True)
class Measured:
    embedding: npt.NDArray[np.float32]
    speech_length: float
    high_band_share: float
    """Energy above HIGH_BAND_HZ as a share of all, of the audio at 16 kHz (a simple detector)."""


PER_VOICE = 15
"""Prompts taken of each Asterisk voice (it has hundreds): enough pairs, a bearable extraction."""


def _sampled(files: Sequence[corpora.SpeechFile], per_speaker: int) -> list[corpora.SpeechFile]:
    """At most `per_speaker` files of each speaker, spread evenly over their sorted names."""
    by_speaker: dict[str, list[corpora.SpeechFile]] = {}
    for item in sorted(files, key=lambda item: item.name):
        assert item.speaker is not None
        by_speaker.setdefault(item.speaker, []).append(item)
    chosen: list[corpora.SpeechFile] = []
    for speaker in sorted(by_speaker):
        items = by_speaker[speaker]
        step = max(1, len(items) // per_speaker)
        chosen.extend(items[::step][:per_speaker])
    return chosen


def _recording(item: corpora.SpeechFile, condition: int) -> Recording:
    assert item.speaker is not None
    return Recording(item.corpus, item.name, item.speaker, item.path, condition=condition)


def telephone_recordings(min_seconds: float = 1.0, per_voice: int = PER_VOICE) -> list[Recording]:
    """Real narrowband recordings (Asterisk telephone prompts, GSM at 8 kHz), a few per voice."""
    return [
        _recording(item, NARROWBAND)
        for item in _sampled(corpora.telephone_speech(min_seconds), per_voice)
    ]


def wideband_recordings(min_seconds: float = 1.0, per_voice: int = PER_VOICE) -> list[Recording]:
    """Every recording of real wideband speech tools.corpora can fetch (a few per Asterisk
    voice)."""
    recordings = [
        Recording(
            "ami",
            f"{segment.path.stem}@{segment.start:.2f}",
            f"ami:{segment.speaker}",
            segment.path,
            segment.start,
            segment.end,
        )
        for segment in corpora.ami_segments(min_seconds)
    ]
    for item in (*corpora.an4_files(), *corpora.librivox_files()):
        assert item.speaker is not None
        recordings.append(
            Recording(item.corpus, item.name, f"{item.corpus}:{item.speaker}", item.path)
        )
    others = [
        item
        for item in corpora.labelled_speech(min_seconds)
        if item.corpus not in ("an4", "librivox")
    ]
    recordings.extend(_recording(item, WIDEBAND) for item in _sampled(others, per_voice))
    return recordings


def clips_of(
    recordings: Sequence[Recording],
    chains: Sequence[telephone.Chain],
    rates: Sequence[int] = (telephone.TELEPHONE_RATE, telephone.WIDEBAND_RATE),
) -> list[Clip]:
    """Each recording as it is, and each wideband one through each chain at each rate."""
    clips: list[Clip] = []
    for index, recording in enumerate(recordings):
        range_ = TimeRange(recording.start, recording.end) if recording.start is not None else None
        clips.append(Clip(index, ORIGINAL, 16_000, recording.path, range_, recording.condition))
        if recording.condition != WIDEBAND:
            continue
        samples = recording.samples()
        for chain in chains:
            files = telephone.telephone_files(samples, chain)
            for rate in rates:
                path = files.narrowband if rate == telephone.TELEPHONE_RATE else files.upsampled
                clips.append(Clip(index, chain.name, rate, path, None, NARROWBAND))
    return clips


def _cache_key(clip: Clip, model: str) -> str:
    digest = hashlib.sha256(clip.path.read_bytes())
    span = clip.time_range
    digest.update(json.dumps([model, span and span.start, span and span.end]).encode())
    return digest.hexdigest()[:32]


class EmbeddingCache:
    """Voiceprints of files by content, extracted once by the real extractor."""

    def __init__(self, model: str = DEFAULT_MODEL_NAME, folder: Path | None = None) -> None:
        self.model = model
        self.folder = folder or (
            corpora.cache_dir() / "embeddings" / _EMBEDDING_CACHE_VERSION / model
        )
        self._extractor: Extractor | None = None
        self.extracted = 0

    def measure(self, clip: Clip) -> Measured:
        path = self.folder / f"{_cache_key(clip, self.model)}.npz"
        if path.exists():
            with np.load(path) as stored:
                return Measured(
                    stored["embedding"],
                    float(stored["speech_length"]),
                    float(stored["high_band_share"]),
                )
        measured = self._extract(clip)
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".npz")
        with os.fdopen(handle, "wb") as out:
            np.savez(
                out,
                embedding=measured.embedding,
                speech_length=np.float64(measured.speech_length),
                high_band_share=np.float64(measured.high_band_share),
            )
        os.replace(temporary, path)
        return measured

    def _extract(self, clip: Clip) -> Measured:
        if self._extractor is None:
            self._extractor = load_extractor(self.model, corpora.models_cache_dir())
        [channel] = self._extractor.extract_source(
            clip.path, time_range=clip.time_range, channel_mode="mix"
        )
        audio = decode(clip.path, time_range=clip.time_range).mix().samples
        self.extracted += 1
        return Measured(
            channel.extraction.voiceprint.embedding.copy(),
            channel.extraction.speech_length,
            telephone.high_band_share(audio, 16_000, HIGH_BAND_HZ),
        )


@dataclass
class ClipSet:
    """Clips with what was measured of them, as arrays (one row per clip)."""

    clips: list[Clip]
    recordings: list[Recording]
    embeddings: npt.NDArray[np.float64]
    """Unit rows."""
    speech: npt.NDArray[np.float64]
    high_band_share: npt.NDArray[np.float64]

    @classmethod
    def measure(
        cls, recordings: list[Recording], clips: list[Clip], cache: EmbeddingCache
    ) -> ClipSet:
        measured = [cache.measure(clip) for clip in clips]
        raw = np.stack([item.embedding for item in measured]).astype(np.float64)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return cls(
            clips,
            recordings,
            np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0),
            np.array([item.speech_length for item in measured]),
            np.array([item.high_band_share for item in measured]),
        )

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def recording(self) -> npt.NDArray[np.int64]:
        return np.array([clip.recording for clip in self.clips])

    @property
    def speakers(self) -> npt.NDArray[np.str_]:
        return np.array([self.recordings[clip.recording].speaker for clip in self.clips])

    @property
    def corpus(self) -> npt.NDArray[np.str_]:
        return np.array([self.recordings[clip.recording].corpus for clip in self.clips])

    @property
    def conditions(self) -> npt.NDArray[np.int64]:
        return np.array([clip.condition for clip in self.clips])

    @property
    def chains(self) -> npt.NDArray[np.str_]:
        return np.array([clip.chain for clip in self.clips])

    @property
    def rates(self) -> npt.NDArray[np.int64]:
        return np.array([clip.sample_rate for clip in self.clips])

    def usable(self) -> npt.NDArray[np.bool_]:
        """Clips with detected speech (the others are empty voiceprints, scored 0)."""
        return self.speech > 0


@dataclass
class TrialList:
    """Pairs (first < second) of clips, with what calibration and evaluation need."""

    first: npt.NDArray[np.int64]
    second: npt.NDArray[np.int64]
    same: npt.NDArray[np.bool_]
    condition: npt.NDArray[np.int64]
    shorter_speech: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.first.size)

    def subset(self, keep: npt.NDArray[np.bool_]) -> TrialList:
        return TrialList(
            self.first[keep],
            self.second[keep],
            self.same[keep],
            self.condition[keep],
            self.shorter_speech[keep],
        )

    def scores(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        values: npt.NDArray[np.float64] = matrix[self.first, self.second]
        return values


def every_pair(clip_set: ClipSet, chosen: npt.NDArray[np.bool_]) -> TrialList:
    """Every pair of chosen, usable clips of different recordings."""
    indices = np.flatnonzero(chosen & clip_set.usable())
    first, second = np.triu_indices(indices.size, 1)
    first, second = indices[first], indices[second]
    # Two versions of one recording, or one take of a prompt encoded twice (Asterisk ships the
    # same master as G.722 and as GSM), are not two recordings.
    takes = np.array(
        [f"{recording.speaker}/{recording.name}" for recording in clip_set.recordings]
    )[clip_set.recording]
    keep = takes[first] != takes[second]
    first, second = first[keep], second[keep]
    speakers = clip_set.speakers
    conditions = clip_set.conditions
    return TrialList(
        first,
        second,
        speakers[first] == speakers[second],
        conditions[first] + conditions[second],
        np.minimum(clip_set.speech[first], clip_set.speech[second]),
    )


def speaker_folds(speakers: Sequence[str], folds: int, seed: int = 0) -> list[set[str]]:
    """Speakers dealt into `folds` disjoint groups, in a shuffled but fixed order."""
    order = sorted(set(speakers))
    np.random.default_rng(seed).shuffle(order)
    return [set(order[index::folds]) for index in range(folds)]
