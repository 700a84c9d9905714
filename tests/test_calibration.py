from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from voxmatch.calibration import (
    ConditionCalibration,
    LinearCalibration,
    apply_calibration,
    cllr,
    equal_error_rate,
    evaluate,
    min_cllr,
)
from voxmatch.models.registry import Calibration, PairCalibration


def simulated_trials(
    scale: float, offset: float, count: int, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], float, float]:
    """Scores drawn so that the true LLR of a score s is exactly scale * s + offset.

    With equal-variance Gaussians N(mu_t, 1) and N(mu_n, 1), the LLR is linear in s:
    (mu_t - mu_n) * s - (mu_t**2 - mu_n**2) / 2.
    """
    rng = np.random.default_rng(seed)
    mu_t = (scale + 0.0) / 2 + (-offset / scale)
    mu_n = mu_t - scale
    targets = rng.normal(mu_t, 1.0, count)
    nontargets = rng.normal(mu_n, 1.0, count * 3)
    scores = np.concatenate([targets, nontargets])
    labels = np.concatenate([np.ones(count, bool), np.zeros(count * 3, bool)])
    true_offset = -(mu_t**2 - mu_n**2) / 2
    return scores, labels, scale, float(true_offset)


def test_fit_recovers_the_true_llr_mapping() -> None:
    scores, labels, scale, offset = simulated_trials(3.0, -1.0, 20000, seed=0)
    fitted = LinearCalibration().fit(scores, labels)
    assert fitted is not None
    assert fitted.scale_ == pytest.approx(scale, rel=0.05)
    assert fitted.offset_ == pytest.approx(offset, abs=0.15)
    calibration = fitted.to_calibration()
    assert calibration.wideband.scale == fitted.scale_


def test_calibrated_llrs_beat_raw_scores_in_cllr() -> None:
    rng = np.random.default_rng(1)
    targets = rng.normal(0.7, 0.08, 500)
    nontargets = rng.normal(0.1, 0.08, 2000)
    scores = np.concatenate([targets, nontargets])
    labels = np.concatenate([np.ones(500, bool), np.zeros(2000, bool)])
    fitted = LinearCalibration().fit(scores, labels)
    llrs = fitted.transform(scores)
    calibrated = cllr(llrs[labels], llrs[~labels])
    raw = cllr(scores[labels], scores[~labels])
    assert calibrated < 0.1 < raw


def test_cllr_of_known_cases() -> None:
    assert cllr([0.0], [0.0]) == pytest.approx(1.0)
    assert cllr([50.0], [-50.0]) == pytest.approx(0.0, abs=1e-12)
    assert cllr([-math.log(3)], [math.log(3)]) == pytest.approx(math.log2(4))


def test_equal_error_rate() -> None:
    assert equal_error_rate([2, 3, 4], [-1, 0, 1]) == 0.0
    assert equal_error_rate([0, 1, 2, 3], [1.5, -1, -2, -3]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="both"):
        equal_error_rate([], [1.0])


def test_fit_needs_both_kinds_of_trials() -> None:
    with pytest.raises(ValueError, match="both"):
        LinearCalibration().fit([1.0, 2.0], [True, True])


def quality_trials(
    seed: int,
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    Calibration,
]:
    """Trials whose true LLR is a known condition- and speech-dependent line of the score."""
    truth = Calibration(
        wideband=PairCalibration(scale=4.0, offset=-1.0, scale_per_log_speech=0.8),
        cross=PairCalibration(scale=3.0, offset=-2.0),
        narrowband=PairCalibration(scale=2.5, offset=-3.0, offset_per_log_speech=0.5),
        speech_cap=30.0,
        speech_floor=0.5,
    )
    rng = np.random.default_rng(seed)
    count = 60000
    x = rng.normal(0.0, 1.5, count)
    conditions = rng.integers(0, 3, count)
    speech = rng.uniform(0.5, 60.0, count)
    true_llr = apply_calibration(truth, x, conditions, speech)
    # Labels drawn with the truth as posterior log-odds.
    same = rng.random(count) < 1 / (1 + np.exp(-true_llr))
    return x, same, conditions, speech, truth


def test_condition_calibration_recovers_each_pairs_line_and_quality_terms() -> None:
    x, same, conditions, speech, truth = quality_trials(seed=4)
    fitted = ConditionCalibration(quality_ridge=0.0, smoothing=False).fit(
        x, same, conditions, speech
    )
    assert fitted.fitted_pairs_ == [0, 1, 2]
    for index, (got, want) in enumerate(
        zip(fitted.calibration_.pairs(), truth.pairs(), strict=True)
    ):
        # Prior weighting gives the likelihood ratio: the posterior log-odds the labels were
        # drawn from, less the log-odds of the list's own share of same-speaker trials.
        share = same[conditions == index].mean()
        assert got.scale == pytest.approx(want.scale, abs=0.25)
        assert got.offset == pytest.approx(want.offset - math.log(share / (1 - share)), abs=0.25)
        assert got.scale_per_log_speech == pytest.approx(want.scale_per_log_speech, abs=0.25)
        assert got.offset_per_log_speech == pytest.approx(want.offset_per_log_speech, abs=0.25)
    # The fitted calibration beats one line for all on these trials.
    line = LinearCalibration().fit(x, same)
    own = fitted.transform(x, conditions, speech)
    assert cllr(own[same], own[~same]) < cllr(line.transform(x)[same], line.transform(x)[~same])


def test_a_pair_of_conditions_without_enough_trials_takes_the_wideband_fit() -> None:
    x, same, conditions, speech, _ = quality_trials(seed=5)
    only_wideband = conditions == 0
    fitted = ConditionCalibration().fit(
        x[only_wideband], same[only_wideband], conditions[only_wideband], speech[only_wideband]
    )
    assert fitted.fitted_pairs_ == [0]
    assert fitted.calibration_.pairs() == (fitted.calibration_.wideband,) * 3


def test_min_cllr_is_what_the_best_monotonic_map_reaches() -> None:
    scores, labels, _, _ = simulated_trials(3.0, -1.0, 5000, seed=1)
    # A badly calibrated system (everything shifted and stretched) keeps its min Cllr.
    bad = 5 * scores + 7
    assert cllr(bad[labels], bad[~labels]) > 1.0
    assert min_cllr(bad[labels], bad[~labels]) == pytest.approx(
        min_cllr(scores[labels], scores[~labels]), abs=1e-12
    )
    # Already well calibrated: PAV can only do slightly better (it overfits the list a little).
    true_llr = 3.0 * scores + simulated_trials(3.0, -1.0, 5000, seed=1)[3]
    actual = cllr(true_llr[labels], true_llr[~labels])
    assert actual - 0.02 < min_cllr(scores[labels], scores[~labels]) <= actual


def test_evaluation_counts_trials_on_the_wrong_side() -> None:
    targets = np.array([-1.0, 0.5, 3.0, 4.0])
    nontargets = np.array([-5.0, -3.0, -1.0, 0.5, 2.5])
    result = evaluate(targets, nontargets, dcf_prior=0.5)
    assert (result.targets, result.nontargets) == (4, 5)
    assert result.misses_below_0 == 0.25
    assert result.false_alarms_above_0 == 0.4
    assert result.false_alarms_above_2 == 0.2
    # At prior 0.5 the Bayes threshold is 0: 1 miss of 4, 2 false alarms of 5.
    assert result.actual_dcf == pytest.approx((0.5 * 0.25 + 0.5 * 0.4) / 0.5)
    assert result.min_dcf <= result.actual_dcf
    assert 0 <= result.min_cllr <= result.cllr


def test_scores_spanning_tens_of_units_fit_without_running_away() -> None:
    # Newton's method from scale 1 overshoots on such scores unless each step must lower the cost.
    scores, labels, scale, offset = simulated_trials(0.3, -2.0, 5000, seed=7)
    wide = scores * 10.0
    fitted = LinearCalibration().fit(wide, labels)
    assert fitted.scale_ == pytest.approx(scale / 10.0, rel=0.1)
    assert fitted.offset_ == pytest.approx(offset, abs=0.3)
    quality = ConditionCalibration().fit(
        wide, labels, np.zeros(wide.size, np.int64), np.full(wide.size, 60.0)
    )
    assert quality.calibration_.wideband.scale == pytest.approx(scale / 10.0, rel=0.1)


def test_trial_weights_let_a_small_set_count_as_much_as_a_large_one() -> None:
    # Two kinds of trials with different true lines; weighting the small kind up pulls the fit
    # towards its line.
    many, many_labels, _, _ = simulated_trials(2.0, -1.0, 20000, seed=8)
    few, few_labels, _, _ = simulated_trials(6.0, -1.0, 500, seed=9)
    scores = np.concatenate([many, few])
    labels = np.concatenate([many_labels, few_labels])
    conditions = np.zeros(scores.size, np.int64)
    speech = np.full(scores.size, 60.0)
    plain = ConditionCalibration().fit(scores, labels, conditions, speech)
    weights = np.concatenate([np.ones(many.size), np.full(few.size, many.size / few.size)])
    balanced = ConditionCalibration().fit(scores, labels, conditions, speech, weights)
    assert plain.calibration_.wideband.scale < balanced.calibration_.wideband.scale
    with pytest.raises(ValueError, match="positive"):
        ConditionCalibration().fit(scores, labels, conditions, speech, -weights)
