from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from voxmatch.calibration import LinearCalibration, cllr, equal_error_rate


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
