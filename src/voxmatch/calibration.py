"""Fitting the cosine-to-LLR calibration, and the measures that judge it.

`LinearCalibration` follows the scikit-learn contract: construct with parameters, `fit`
returns self, fitted state ends in `_`. It is prior-weighted logistic regression on
(score, same-speaker?) pairs, the standard way to turn scores into log-likelihood ratios:
targets and non-targets are weighted so that the fit does not depend on how many of each the
trial list happens to hold.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from voxmatch.models.registry import Calibration

FloatArray = npt.NDArray[np.float64]


class LinearCalibration:
    """llr = scale_ * score + offset_, fitted by prior-weighted logistic regression.

    With `smoothing` (the default), labels are softened as in Platt scaling: same-speaker
    trials count as (N+ + 1) / (N+ + 2) rather than 1, different-speaker ones as 1 / (N- + 2).
    Without it, a small trial list whose classes happen not to overlap drives the scale towards
    infinity (any steeper line separates them better); with it, the fit stays finite and
    modest, and large lists are not affected.
    """

    def __init__(
        self, prior: float = 0.5, smoothing: bool = True, max_iter: int = 100, tol: float = 1e-10
    ) -> None:
        if not 0 < prior < 1:
            raise ValueError("prior must be strictly between 0 and 1")
        self.prior = prior
        self.smoothing = smoothing
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, scores: npt.ArrayLike, same_speaker: npt.ArrayLike) -> LinearCalibration:
        """Fit by Newton's method on the weighted cross-entropy."""
        x = np.asarray(scores, dtype=np.float64).ravel()
        labels = np.asarray(same_speaker, dtype=bool).ravel()
        if x.shape != labels.shape:
            raise ValueError("scores and labels differ in length")
        n_target = int(labels.sum())
        n_nontarget = int((~labels).sum())
        if n_target == 0 or n_nontarget == 0:
            raise ValueError("calibration needs both same-speaker and different-speaker trials")
        weights = np.where(labels, self.prior / n_target, (1 - self.prior) / n_nontarget)
        if self.smoothing:
            targets = np.where(labels, (n_target + 1) / (n_target + 2), 1 / (n_nontarget + 2))
        else:
            targets = labels.astype(np.float64)
        prior_logit = math.log(self.prior / (1 - self.prior))
        design = np.stack([x, np.ones_like(x)], axis=1)
        params = np.array([1.0, 0.0])
        for _ in range(self.max_iter):
            posterior = 0.5 * (1 + np.tanh((design @ params + prior_logit) / 2))
            gradient = design.T @ (weights * (posterior - targets))
            curvature = weights * posterior * (1 - posterior)
            hessian = design.T @ (design * curvature[:, np.newaxis]) + np.eye(2) * 1e-12
            step = np.linalg.solve(hessian, gradient)
            params -= step
            if float(np.abs(step).max()) < self.tol:
                break
        self.scale_ = float(params[0])
        self.offset_ = float(params[1])
        return self

    def transform(self, scores: npt.ArrayLike) -> FloatArray:
        return self.scale_ * np.asarray(scores, dtype=np.float64) + self.offset_

    def to_calibration(self) -> Calibration:
        return Calibration.linear(scale=self.scale_, offset=self.offset_)


def cllr(target_llrs: npt.ArrayLike, nontarget_llrs: npt.ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits: 0 is perfect, 1 is an uninformative system."""
    targets = np.asarray(target_llrs, dtype=np.float64)
    nontargets = np.asarray(nontarget_llrs, dtype=np.float64)
    target_cost = np.logaddexp(0, -targets).mean()
    nontarget_cost = np.logaddexp(0, nontargets).mean()
    return float((target_cost + nontarget_cost) / (2 * math.log(2)))


def equal_error_rate(target_scores: npt.ArrayLike, nontarget_scores: npt.ArrayLike) -> float:
    """The error rate where misses and false alarms are equal (ROC convex hull not applied)."""
    targets = np.sort(np.asarray(target_scores, dtype=np.float64))
    nontargets = np.sort(np.asarray(nontarget_scores, dtype=np.float64))
    if targets.size == 0 or nontargets.size == 0:
        raise ValueError("EER needs both target and non-target scores")
    thresholds = np.concatenate([targets, nontargets])
    thresholds.sort()
    miss = np.searchsorted(targets, thresholds, side="left") / targets.size
    false_alarm = 1 - np.searchsorted(nontargets, thresholds, side="left") / nontargets.size
    crossing = int(np.argmin(np.abs(miss - false_alarm)))
    return float((miss[crossing] + false_alarm[crossing]) / 2)
