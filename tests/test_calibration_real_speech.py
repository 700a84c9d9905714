"""The shipped calibration on real speech and its telephone versions (tools.trials, calibrate).

Real recordings of 22 speakers (AMI, AN4, LibriVox), each through three real telephone codec
chains, stored at 8 kHz and at 16 kHz; voiceprints by the real extractor (cached after the first
run), LLRs by the server's own scoring.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from tools import calibrate, telephone, trials
from voxmatch.models import describe
from voxmatch.models.registry import DEFAULT_MODEL_NAME, Calibration
from voxmatch.scoring import Traits, score_matrix
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

pytestmark = pytest.mark.slow

CHAINS = ("g711-mulaw", "gsm610", "amr-nb-12k2")
"""A waveform coder, an old and a current mobile codec: enough to judge, quick to extract."""


@pytest.fixture(scope="module")
def clip_set() -> trials.ClipSet:
    recordings = trials.wideband_recordings()
    chains = [telephone.CHAINS[name] for name in CHAINS]
    return trials.ClipSet.measure(
        recordings, trials.clips_of(recordings, chains), trials.EmbeddingCache()
    )


def _llrs(clip_set: trials.ClipSet, calibration: Calibration) -> npt.NDArray[np.float32]:
    """Every clip against every clip, as the server scores them (conditions as made)."""
    traits = Traits(clip_set.conditions.astype(np.uint8), clip_set.speech.astype(np.float32))
    embeddings = clip_set.embeddings.astype(np.float32)
    return score_matrix(
        embeddings, embeddings, calibration, row_traits=traits, column_traits=traits
    )


def _different_speaker_pairs(
    clip_set: trials.ClipSet, chain: str, sample_rate: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(narrowband clips of `chain` at `sample_rate`, their wideband originals, index pairs of
    the clips of different speakers), for clips whose both versions have speech."""
    originals = {
        clip.recording: number
        for number, clip in enumerate(clip_set.clips)
        if clip.chain == trials.ORIGINAL
    }
    usable = clip_set.usable()
    narrow = np.array(
        [
            number
            for number, clip in enumerate(clip_set.clips)
            if clip.chain == chain
            and clip.sample_rate == sample_rate
            and usable[number]
            and usable[originals[clip.recording]]
        ]
    )
    wide = np.array([originals[clip_set.clips[number].recording] for number in narrow])
    first, second = np.triu_indices(narrow.size, 1)
    speakers = clip_set.speakers
    different = speakers[narrow[first]] != speakers[narrow[second]]
    return narrow, wide, np.stack([first[different], second[different]])


@pytest.mark.parametrize("sample_rate", [8000, 16000], ids=["8-khz-files", "upsampled-16-khz"])
def test_the_telephone_channel_no_longer_turns_different_speakers_into_evidence(
    clip_set: trials.ClipSet, sample_rate: int
) -> None:
    """The channel makes different speakers more alike (cosine); the shipped calibration keeps
    that from becoming evidence for the same speaker, where the old single line did not.

    (Their LLRs do stay above those of the wideband originals on average, as calibration
    requires: telephone speech tells speakers apart less well, so its calibrated LLRs are less
    extreme both ways. docs/calibration.md has the figures.)"""
    shipped = _llrs(clip_set, describe(DEFAULT_MODEL_NAME).calibration)
    before = _llrs(clip_set, calibrate.BEFORE)
    cosines = clip_set.embeddings @ clip_set.embeddings.T
    for chain in CHAINS:
        narrow, wide, (first, second) = _different_speaker_pairs(clip_set, chain, sample_rate)
        assert first.size > 500
        assert np.all(clip_set.conditions[narrow] == NARROWBAND)
        assert np.all(clip_set.conditions[wide] == WIDEBAND)
        pairs = (narrow[first], narrow[second])
        inflation = np.mean(cosines[pairs]) - np.mean(cosines[wide[first], wide[second]])
        assert inflation > 0.1, chain  # the channel's effect, as other toolkits report it
        assert np.mean(shipped[pairs]) < np.mean(before[pairs]) - 1, chain
        assert np.mean(shipped[pairs] > 2) < 0.5 * np.mean(before[pairs] > 2), chain
        assert np.mean(shipped[pairs] > 0) < 0.7 * np.mean(before[pairs] > 0), chain


def test_held_out_speakers_meet_the_targets_in_every_condition(
    clip_set: trials.ClipSet,
) -> None:
    experiment = calibrate.Experiment.build(clip_set, folds=5, seed=0)
    held, after, before = experiment.held_out(calibrate.CHOSEN)
    results = calibrate.per_condition(experiment, held, after)
    results_before = calibrate.per_condition(experiment, held, before)
    assert sorted(results) == sorted(calibrate.CONDITIONS.values())
    narrowband, _ = results["narrowband-narrowband"]
    assert narrowband.nontargets > 5000
    for name, (result, speakers) in results.items():
        assert speakers >= 20, name
        assert result.false_alarms_above_2 <= 0.03, name
        assert result.cllr - result.min_cllr <= 0.10, name
        assert result.eer <= results_before[name][0].eer + 0.005, name
    # Before, narrowband pairs were far beyond the target.
    assert results_before["narrowband-narrowband"][0].false_alarms_above_2 > 0.05


def test_held_out_real_telephone_recordings_meet_the_targets() -> None:
    """Pairs with real 8 kHz telephone recordings (few, among many made ones) are calibrated
    too, because the fit weighs each pair of sources by the square root of its size rather than
    by its size. Wideband against real telephone still puts a few per cent of different-speaker
    pairs above +2 (a handful of voice pairs; docs/calibration.md), so that row is held to the
    bound every calibrated LLR keeps (13.5 %) rather than to the target of 3 %."""
    recordings = trials.wideband_recordings() + trials.telephone_recordings()
    chains = [telephone.CHAINS[name] for name in CHAINS]
    clip_set = trials.ClipSet.measure(
        recordings, trials.clips_of(recordings, chains), trials.EmbeddingCache()
    )
    experiment = calibrate.Experiment.build(clip_set, folds=5, seed=0)
    held, after, before = experiment.held_out(calibrate.CHOSEN)
    results = calibrate.per_condition(experiment, held, after)
    results_before = calibrate.per_condition(experiment, held, before)
    unweighted = replace(calibrate.CHOSEN, weighting="none")
    results_unweighted = calibrate.per_condition(experiment, *experiment.held_out(unweighted)[:2])
    for name in calibrate.REAL_TELEPHONE_GROUPS:
        result, speakers = results[name]
        assert speakers >= 7, name
        assert result.nontargets >= 400, name
        assert result.cllr - result.min_cllr <= 0.10, name
        assert result.eer <= results_before[name][0].eer + 0.005, name
        # Weighting is what calibrates them: unweighted, they are fitted as if they were not there.
        assert result.cllr < results_unweighted[name][0].cllr, name
    assert results["real telephone, narrowband-narrowband"][0].false_alarms_above_2 <= 0.03
    assert results["real telephone, wideband-narrowband"][0].false_alarms_above_2 <= 0.135


def test_trials_pair_different_recordings_of_known_conditions(clip_set: trials.ClipSet) -> None:
    every = trials.every_pair(clip_set, np.ones(len(clip_set), dtype=bool))
    recording = clip_set.recording
    assert np.all(recording[every.first] != recording[every.second])
    assert np.all(clip_set.usable()[every.first] & clip_set.usable()[every.second])
    conditions = clip_set.conditions
    np.testing.assert_array_equal(
        every.condition, conditions[every.first] + conditions[every.second]
    )
    # Every version of a recording shares its speaker, so versions would be easy targets.
    versions = len(CHAINS) * 2 + 1
    usable = int(clip_set.usable().sum())
    all_pairs = usable * (usable - 1) // 2
    assert len(every) < all_pairs
    assert len(every) > all_pairs * (1 - 1.5 * versions / len(clip_set.recordings))
    assert set(np.unique(every.condition).tolist()) == {0, 1, 2}
