"""voxmatch.merging: the condition and quality a merged voiceprint carries."""

from __future__ import annotations

import numpy as np
import pytest

from voxmatch import Voiceprint
from voxmatch.merging import merge_voiceprints
from voxmatch.voiceprint import NARROWBAND, WIDEBAND


def voiceprint(seed: int, speech_length: float, **condition: float) -> Voiceprint:
    vector = np.random.default_rng(seed).standard_normal(192)
    return Voiceprint.from_embedding(vector, speech_length=speech_length, **condition)  # type: ignore[arg-type]


def test_narrowband_if_any_input_with_speech_is() -> None:
    wide = voiceprint(1, 10.0, bandwidth=7200.0, snr=30.0, cohort_mean=0.2, cohort_std=0.05)
    narrow = voiceprint(2, 5.0, condition=NARROWBAND, bandwidth=3900.0, snr=15.0)
    merged = merge_voiceprints([wide, narrow])
    assert merged.condition == NARROWBAND
    assert merged.bandwidth == 3900.0
    assert merged.snr == pytest.approx((10 * 30.0 + 5 * 15.0) / 15, abs=1e-5)
    assert (merged.cohort_mean, merged.cohort_std) == (0.0, 0.0), "statistics of one embedding"
    assert merge_voiceprints([wide, wide]).condition == WIDEBAND


def test_inputs_of_no_speech_do_not_decide_the_condition() -> None:
    wide = voiceprint(3, 8.0, bandwidth=7000.0, snr=25.0)
    silent_call = Voiceprint.from_embedding(np.zeros(192), speech_length=0.0, condition=NARROWBAND)
    merged = merge_voiceprints([wide, silent_call])
    assert (merged.condition, merged.bandwidth, merged.snr) == (WIDEBAND, 7000.0, 25.0)
    assert merge_voiceprints([silent_call, silent_call]).condition == NARROWBAND


def test_unmeasured_inputs_leave_the_bandwidth_to_the_measured_ones() -> None:
    old = voiceprint(4, 6.0)  # as a version 1 voiceprint decodes: bandwidth 0, not measured
    measured = voiceprint(5, 2.0, bandwidth=6500.0, snr=12.0)
    merged = merge_voiceprints([old, measured])
    assert (merged.condition, merged.bandwidth, merged.snr) == (WIDEBAND, 6500.0, 12.0)
    assert merge_voiceprints([old, old]).bandwidth == 0.0
