"""Telephone speech end to end over REST: the server detects the channel and calibrates for it.

Real recordings (AMI runs of 3 s or more, AN4, LibriVox: 15 speakers) and their telephone
versions (GSM 06.10 stored at 8 kHz, AMR-NB resampled to 16 kHz, by tools.telephone) are
uploaded as files, their voiceprints extracted by the server, and every pair compared by the
server: nothing here tells it which audio is telephone speech.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from _helpers import COMPARISON, EXTRACTION, RunningServer, model_env, start_server, wait_for_task
from tools import corpora, telephone
from voxmatch import Voiceprint
from voxmatch.scoring import unit_rows
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

pytestmark = pytest.mark.slow

VERSIONS = (("original", 0), ("gsm610", 8000), ("amr-nb-12k2", 16000))
"""(chain, stored rate) of each version of a recording; the original is stored as recorded."""

OLD_LINE = (19.3122, -5.4251)
"""The linear calibration shipped before conditions existed (llr = scale * cos + offset)."""


@dataclass(frozen=True)
class Clip:
    speaker: str
    recording: int
    version: str
    voiceprint: Voiceprint


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("telephone") / "data", model_env())
    yield running
    running.stop()


def recordings() -> list[tuple[str, npt.NDArray[np.float32]]]:
    found = [(f"ami-{s.speaker}", corpora.load_segment(s)) for s in corpora.ami_segments(3.0)]
    for item in corpora.an4_files() + corpora.librivox_files():
        assert item.speaker is not None
        found.append((item.speaker, corpora.load(item.path)))
    return found


@pytest.fixture(scope="module")
def clips(server: RunningServer) -> list[Clip]:
    client = server.client()
    made = []
    for number, (speaker, samples) in enumerate(recordings()):
        for chain, rate in VERSIONS:
            content = (
                telephone.wav_bytes(samples)
                if chain == "original"
                else telephone.telephone_wav(samples, chain, rate)
            )
            accepted = client.post(EXTRACTION, files={"file": (f"{number}.wav", content)})
            assert accepted.status_code == 202, accepted.text
            body = wait_for_task(client, accepted.headers["location"], timeout=180).json()
            assert body["task"]["state"] == "done", body
            (channel,) = body["result"]["channels"]
            voiceprint = Voiceprint.from_base64(channel["voiceprint"])
            if voiceprint.speech_length > 0:
                made.append(Clip(speaker, number, chain, voiceprint))
    return made


@pytest.fixture(scope="module")
def llrs(server: RunningServer, clips: list[Clip]) -> npt.NDArray[np.float32]:
    """Every clip against every clip, as the server scores them (rows = voiceprints_b)."""
    texts = [clip.voiceprint.to_base64() for clip in clips]
    client = server.client()
    accepted = client.post(COMPARISON, json={"voiceprints_a": texts, "voiceprints_b": texts})
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"]).json()
    scores = body["result"]["scores"]
    return np.array(scores["values"], np.float32).reshape(len(clips), len(clips))


def pairs(
    clips: list[Clip], versions: tuple[str, str], same_speaker: bool
) -> tuple[list[int], list[int]]:
    """Index pairs of clips of different recordings in the given versions."""
    rows, columns = [], []
    for (i, a), (j, b) in itertools.combinations(enumerate(clips), 2):
        if a.recording == b.recording or (a.speaker == b.speaker) != same_speaker:
            continue
        if (a.version, b.version) == versions or (b.version, a.version) == versions:
            rows.append(i)
            columns.append(j)
    return rows, columns


def test_the_server_detects_which_audio_came_through_a_telephone(clips: list[Clip]) -> None:
    assert len({clip.speaker for clip in clips}) >= 12
    for clip in clips:
        expected = WIDEBAND if clip.version == "original" else NARROWBAND
        assert clip.voiceprint.condition == expected, (clip.speaker, clip.version)


@pytest.mark.parametrize(
    "versions",
    [("gsm610", "gsm610"), ("gsm610", "amr-nb-12k2"), ("original", "gsm610")],
    ids=["gsm-gsm", "gsm-amr", "wideband-gsm"],
)
def test_different_speakers_over_a_telephone_channel_are_not_made_evidence(
    clips: list[Clip], llrs: npt.NDArray[np.float32], versions: tuple[str, str]
) -> None:
    rows, columns = pairs(clips, versions, same_speaker=False)
    assert len(rows) > 200
    different = llrs[rows, columns]
    # A calibrated LLR leaves at most e^-2 (13.5 %) of different-speaker pairs above +2; the
    # issue's target is 3 %.
    assert (different > 2).mean() <= 0.03
    if "original" in versions:
        return
    # Both sides through a telephone: the channel makes every voice alike (cosines rise), and
    # the old calibration, knowing nothing of the channel, read that as evidence for the same
    # speaker in these very pairs.
    unit, _ = unit_rows(np.stack([clip.voiceprint.embedding for clip in clips]))
    cosines = np.einsum("ij,ij->i", unit[rows], unit[columns])
    old = OLD_LINE[0] * cosines + OLD_LINE[1]
    assert (old > 0).mean() > 0.2
    assert different.mean() < old.mean() - 1.0
    assert (different > 0).mean() < (old > 0).mean() / 2


@pytest.mark.parametrize(
    "versions",
    [("gsm610", "gsm610"), ("original", "amr-nb-12k2"), ("original", "original")],
    ids=["gsm-gsm", "wideband-amr", "wideband-wideband"],
)
def test_the_same_speaker_over_the_channel_is_still_evidence_for_the_same_speaker(
    clips: list[Clip], llrs: npt.NDArray[np.float32], versions: tuple[str, str]
) -> None:
    rows, columns = pairs(clips, versions, same_speaker=True)
    assert len(rows) >= 10
    same = llrs[rows, columns]
    different_rows, different_columns = pairs(clips, versions, same_speaker=False)
    different = llrs[different_rows, different_columns]
    assert np.median(same) > 0
    assert np.median(same) > np.quantile(different, 0.99)
