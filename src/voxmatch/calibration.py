"""Fitting score calibrations, and the measures that judge them.

Both fitters follow the scikit-learn contract: construct with parameters, `fit` returns self,
fitted state ends in `_`. Each is prior-weighted logistic regression on (score, same-speaker?)
trials, the standard way to turn scores into log-likelihood ratios: targets and non-targets are
weighted so that the fit does not depend on how many of each the trial list happens to hold, and
minimising that weighted cross-entropy is minimising Cllr at the prior.

- `LinearCalibration`: llr = scale * score + offset, one line for everything.
- `ConditionCalibration`: one line per pair of conditions (wideband-wideband, one of each,
  narrowband-narrowband), each with a quality measure (the shorter side's speech length,
  capped) that may tilt and shift it: the `models.registry.Calibration` the server applies.

The measures (`evaluate`) are those speaker-recognition evaluations report: EER, Cllr and its
minimum over every monotonic recalibration (by the pool-adjacent-violators algorithm), actual
and minimum detection cost, and the share of trials on the wrong side of LLR 0 and 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxmatch.models.registry import Calibration, PairCalibration

FloatArray = npt.NDArray[np.float64]

MIN_TRIALS_PER_CLASS = 10
"""Fewer same-speaker (or different-speaker) trials than this in a pair of conditions, and its
calibration is not fitted: the wideband one stands in for it."""


def _weighted_logistic_fit(
    design: FloatArray,
    labels: npt.NDArray[np.bool_],
    prior: float,
    *,
    smoothing: bool,
    ridge: FloatArray,
    start: FloatArray,
    trial_weights: FloatArray | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> FloatArray:
    """Parameters w minimising the prior-weighted cross-entropy of llr = design @ w.

    `ridge` is an L2 penalty per parameter (0 for none), which keeps terms that a small trial
    list cannot pin down near zero instead of fitting its noise. `trial_weights` (default: all
    equal) say how much each trial counts within its class; each class still weighs its prior.
    """
    n_target = int(labels.sum())
    n_nontarget = int((~labels).sum())
    relative = np.ones(labels.size) if trial_weights is None else trial_weights
    weights = np.where(
        labels,
        prior * relative / relative[labels].sum(),
        (1 - prior) * relative / relative[~labels].sum(),
    )
    if smoothing:
        targets = np.where(labels, (n_target + 1) / (n_target + 2), 1 / (n_nontarget + 2))
    else:
        targets = labels.astype(np.float64)
    prior_logit = math.log(prior / (1 - prior))
    params = start.astype(np.float64).copy()
    penalty = np.diag(ridge)

    def objective(candidate: FloatArray) -> float:
        logits = design @ candidate + prior_logit
        # Cross-entropy with soft targets, written with logaddexp so large logits stay finite.
        losses = targets * np.logaddexp(0, -logits) + (1 - targets) * np.logaddexp(0, logits)
        return float(weights @ losses) + 0.5 * float(candidate @ penalty @ candidate)

    current = objective(params)
    for _ in range(max_iter):
        posterior = 0.5 * (1 + np.tanh((design @ params + prior_logit) / 2))
        gradient = design.T @ (weights * (posterior - targets)) + penalty @ params
        curvature = weights * posterior * (1 - posterior)
        hessian = design.T @ (design * curvature[:, np.newaxis]) + penalty
        hessian += np.eye(len(params)) * 1e-12
        step = np.linalg.solve(hessian, gradient)
        # A full Newton step from far away (scores spanning tens of units, say) can overshoot
        # and run off to huge parameters; halving it until the cost falls keeps every step
        # an improvement.
        for _ in range(60):
            candidate = params - step
            value = objective(candidate)
            if value <= current:
                break
            step /= 2
        else:
            break
        params, current = candidate, value
        if float(np.abs(step).max()) < tol:
            break
    return params


def _check_trials(
    scores: npt.ArrayLike, same_speaker: npt.ArrayLike
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    x = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(same_speaker, dtype=bool).ravel()
    if x.shape != labels.shape:
        raise ValueError("scores and labels differ in length")
    if not labels.any() or labels.all():
        raise ValueError("calibration needs both same-speaker and different-speaker trials")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x, labels


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
        x, labels = _check_trials(scores, same_speaker)
        params = _weighted_logistic_fit(
            np.stack([x, np.ones_like(x)], axis=1),
            labels,
            self.prior,
            smoothing=self.smoothing,
            ridge=np.zeros(2),
            start=np.array([1.0, 0.0]),
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self.scale_ = float(params[0])
        self.offset_ = float(params[1])
        return self

    def transform(self, scores: npt.ArrayLike) -> FloatArray:
        return self.scale_ * np.asarray(scores, dtype=np.float64) + self.offset_

    def to_calibration(self) -> Calibration:
        return Calibration.linear(scale=self.scale_, offset=self.offset_)


def speech_quality(
    shorter_speech: npt.ArrayLike, speech_cap: float, speech_floor: float
) -> FloatArray:
    """The quality measure of pairs from the shorter side's seconds of speech: ln(clipped / cap),
    0 for pairs with at least `speech_cap` seconds on both sides, negative below."""
    clipped = np.clip(np.asarray(shorter_speech, np.float64), speech_floor, speech_cap)
    quality: FloatArray = np.log(clipped / speech_cap)
    return quality


class ConditionCalibration:
    """A `models.registry.Calibration` fitted on trials that know their pair of conditions
    (`pair_conditions`: 0 both wideband, 1 one of each, 2 both narrowband; the sum of the two
    voiceprints' condition codes) and the shorter side's speech length.

    Each pair of conditions gets its own line, llr = scale * cos + offset, plus, when
    `with_quality`, the quality terms (`scale_per_log_speech`, `offset_per_log_speech`); these
    are held near zero by `quality_ridge` so that a small trial list cannot make them large.
    A pair of conditions with fewer than `MIN_TRIALS_PER_CLASS` trials of either class falls back
    to the wideband fit (reported in `fitted_pairs_`).
    """

    def __init__(
        self,
        prior: float = 0.5,
        *,
        with_quality: bool = True,
        speech_cap: float = 30.0,
        speech_floor: float = 0.5,
        quality_ridge: float = 1e-3,
        smoothing: bool = True,
    ) -> None:
        if not 0 < prior < 1:
            raise ValueError("prior must be strictly between 0 and 1")
        if not 0 < speech_floor <= speech_cap:
            raise ValueError("speech_floor must be > 0 and at most speech_cap")
        self.prior = prior
        self.with_quality = with_quality
        self.speech_cap = speech_cap
        self.speech_floor = speech_floor
        self.quality_ridge = quality_ridge
        self.smoothing = smoothing

    def fit(
        self,
        cosines: npt.ArrayLike,
        same_speaker: npt.ArrayLike,
        pair_conditions: npt.ArrayLike,
        shorter_speech: npt.ArrayLike,
        trial_weights: npt.ArrayLike | None = None,
    ) -> ConditionCalibration:
        """`trial_weights` (optional, positive) say how much each trial counts within its class
        and pair of conditions: to let a small set of one kind of recording count as much as a
        large set of another, say."""
        x, labels = _check_trials(cosines, same_speaker)
        conditions = np.asarray(pair_conditions, dtype=np.int64).ravel()
        speech = np.asarray(shorter_speech, dtype=np.float64).ravel()
        if conditions.shape != x.shape or speech.shape != x.shape:
            raise ValueError("every trial needs its pair of conditions and its speech length")
        relative = (
            np.ones_like(x)
            if trial_weights is None
            else np.asarray(trial_weights, dtype=np.float64).ravel()
        )
        if relative.shape != x.shape or not (np.isfinite(relative) & (relative > 0)).all():
            raise ValueError("trial weights must be positive and finite, one per trial")
        if not np.isin(conditions, (0, 1, 2)).all():
            raise ValueError("pair conditions are 0, 1 or 2 (the sum of two condition codes)")
        quality = speech_quality(speech, self.speech_cap, self.speech_floor)
        fitted: dict[int, PairCalibration] = {}
        for index in (0, 1, 2):
            chosen = conditions == index
            n_target = int(labels[chosen].sum())
            n_nontarget = int(chosen.sum()) - n_target
            if min(n_target, n_nontarget) < MIN_TRIALS_PER_CLASS:
                continue
            fitted[index] = self._fit_pair(
                x[chosen], labels[chosen], quality[chosen], relative[chosen]
            )
        if 0 not in fitted:
            if not fitted:
                raise ValueError(
                    f"calibration needs at least {MIN_TRIALS_PER_CLASS} same-speaker and "
                    f"{MIN_TRIALS_PER_CLASS} different-speaker trials in one pair of conditions"
                )
            # No wideband trials: the best-fitted condition stands in for the others.
            fitted[0] = next(iter(fitted.values()))
        self.fitted_pairs_ = sorted(index for index in fitted if (conditions == index).any())
        self.calibration_ = Calibration(
            wideband=fitted[0],
            cross=fitted.get(1),
            narrowband=fitted.get(2),
            speech_cap=self.speech_cap,
            speech_floor=self.speech_floor,
        )
        self.calibration_.check()
        return self

    def _fit_pair(
        self,
        x: FloatArray,
        labels: npt.NDArray[np.bool_],
        quality: FloatArray,
        trial_weights: FloatArray,
    ) -> PairCalibration:
        # Without a spread of quality in the trials, the quality terms cannot be fitted.
        with_quality = self.with_quality and np.ptp(quality) > 0
        columns = [x, np.ones_like(x), *((quality * x, quality) if with_quality else ())]
        params = _weighted_logistic_fit(
            np.stack(columns, axis=1),
            labels,
            self.prior,
            smoothing=self.smoothing,
            ridge=np.array([0.0, 0.0, 1.0, 1.0])[: len(columns)] * self.quality_ridge,
            start=np.eye(1, len(columns)).ravel(),
            trial_weights=trial_weights,
        )
        scale, offset, scale_per_log, offset_per_log = (*params.tolist(), 0.0, 0.0)[:4]
        return PairCalibration(
            scale=scale,
            offset=offset,
            scale_per_log_speech=scale_per_log,
            offset_per_log_speech=offset_per_log,
        )

    def transform(
        self, cosines: npt.ArrayLike, pair_conditions: npt.ArrayLike, shorter_speech: npt.ArrayLike
    ) -> FloatArray:
        return apply_calibration(self.calibration_, cosines, pair_conditions, shorter_speech)


def apply_calibration(
    calibration: Calibration,
    cosines: npt.ArrayLike,
    pair_conditions: npt.ArrayLike,
    shorter_speech: npt.ArrayLike,
) -> FloatArray:
    """LLRs of a list of trials, as the server's scoring computes them (in float64)."""
    x = np.asarray(cosines, dtype=np.float64)
    index = np.asarray(pair_conditions, dtype=np.int64)
    pairs = calibration.pairs()
    scale, offset, scale_per_log, offset_per_log = (
        np.array(values, np.float64)[index]
        for values in zip(
            *((p.scale, p.offset, p.scale_per_log_speech, p.offset_per_log_speech) for p in pairs),
            strict=True,
        )
    )
    quality = speech_quality(shorter_speech, calibration.speech_cap, calibration.speech_floor)
    llr: FloatArray = (scale + scale_per_log * quality) * x + offset + offset_per_log * quality
    return llr


def cllr(target_llrs: npt.ArrayLike, nontarget_llrs: npt.ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits: 0 is perfect, 1 is an uninformative system."""
    targets = np.asarray(target_llrs, dtype=np.float64)
    nontargets = np.asarray(nontarget_llrs, dtype=np.float64)
    target_cost = np.logaddexp(0, -targets).mean()
    nontarget_cost = np.logaddexp(0, nontargets).mean()
    return float((target_cost + nontarget_cost) / (2 * math.log(2)))


def pav_llrs(
    target_scores: npt.ArrayLike, nontarget_scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """The best LLRs any monotonic (non-decreasing) map of the scores can give these trials:
    isotonic regression of the labels on the scores (pool adjacent violators), turned from
    posteriors into LLRs by removing the trial list's own prior. Ties stay tied."""
    targets = np.asarray(target_scores, dtype=np.float64).ravel()
    nontargets = np.asarray(nontarget_scores, dtype=np.float64).ravel()
    scores = np.concatenate([targets, nontargets])
    labels = np.concatenate([np.ones(targets.size), np.zeros(nontargets.size)])
    order = np.argsort(scores, kind="stable")
    # Tied scores form one starting block, so ties share one LLR.
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sums = np.add.reduceat(labels[order], starts)
    counts = np.diff(np.r_[starts, scores.size]).astype(np.float64)
    block_sums: list[float] = []
    block_counts: list[float] = []
    for total, count in zip(sums.tolist(), counts.tolist(), strict=True):
        block_sums.append(total)
        block_counts.append(count)
        while len(block_sums) > 1 and (
            block_sums[-2] / block_counts[-2] >= block_sums[-1] / block_counts[-1]
        ):
            merged_sum = block_sums.pop() + block_sums[-1]
            merged_count = block_counts.pop() + block_counts[-1]
            block_sums[-1], block_counts[-1] = merged_sum, merged_count
    posterior_blocks = np.array(block_sums) / np.array(block_counts)
    posterior_sorted = np.repeat(posterior_blocks, np.array(block_counts, dtype=np.int64))
    posterior = np.empty_like(posterior_sorted)
    posterior[order] = posterior_sorted
    with np.errstate(divide="ignore"):
        log_odds = np.log(posterior) - np.log1p(-posterior)
    llrs = log_odds - math.log(targets.size / nontargets.size)
    return llrs[: targets.size], llrs[targets.size :]


def min_cllr(target_scores: npt.ArrayLike, nontarget_scores: npt.ArrayLike) -> float:
    """Cllr after the best monotonic recalibration: what discrimination alone allows."""
    targets, nontargets = pav_llrs(target_scores, nontarget_scores)
    return cllr(targets, nontargets)


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


def det_points(
    target_scores: npt.ArrayLike, nontarget_scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Miss and false-alarm rates at every threshold between the scores (for a DET plot)."""
    targets = np.sort(np.asarray(target_scores, dtype=np.float64))
    nontargets = np.sort(np.asarray(nontarget_scores, dtype=np.float64))
    thresholds = np.unique(np.concatenate([targets, nontargets, [np.inf]]))
    miss = np.searchsorted(targets, thresholds, side="left") / targets.size
    false_alarm = 1 - np.searchsorted(nontargets, thresholds, side="left") / nontargets.size
    return miss, false_alarm


def detection_cost(
    target_llrs: npt.ArrayLike, nontarget_llrs: npt.ArrayLike, target_prior: float
) -> tuple[float, float]:
    """(actual, minimum) normalised detection cost at `target_prior` (unit costs): actual
    decides at the Bayes threshold the LLRs imply, minimum at the best threshold there is."""
    targets = np.asarray(target_llrs, dtype=np.float64)
    nontargets = np.asarray(nontarget_llrs, dtype=np.float64)
    threshold = -math.log(target_prior / (1 - target_prior))
    normaliser = min(target_prior, 1 - target_prior)
    actual = (
        target_prior * float((targets < threshold).mean())
        + (1 - target_prior) * float((nontargets >= threshold).mean())
    ) / normaliser
    miss, false_alarm = det_points(targets, nontargets)
    costs = target_prior * miss + (1 - target_prior) * false_alarm
    return actual, float(costs.min()) / normaliser


@dataclass(frozen=True)
class Evaluation:
    """How well a set of calibrated scores does, as speaker-recognition evaluations report it."""

    targets: int
    nontargets: int
    eer: float
    cllr: float
    min_cllr: float
    actual_dcf: float
    min_dcf: float
    dcf_prior: float
    false_alarms_above_0: float
    """Share of different-speaker trials with LLR > 0."""
    false_alarms_above_2: float
    """Share of different-speaker trials with LLR > 2 (a calibrated LLR allows at most e^-2)."""
    misses_below_0: float
    """Share of same-speaker trials with LLR < 0."""

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def evaluate(
    target_llrs: npt.ArrayLike, nontarget_llrs: npt.ArrayLike, dcf_prior: float = 0.01
) -> Evaluation:
    targets = np.asarray(target_llrs, dtype=np.float64).ravel()
    nontargets = np.asarray(nontarget_llrs, dtype=np.float64).ravel()
    if targets.size == 0 or nontargets.size == 0:
        raise ValueError("an evaluation needs both same-speaker and different-speaker trials")
    actual_dcf, min_dcf = detection_cost(targets, nontargets, dcf_prior)
    return Evaluation(
        targets=int(targets.size),
        nontargets=int(nontargets.size),
        eer=equal_error_rate(targets, nontargets),
        cllr=cllr(targets, nontargets),
        min_cllr=min_cllr(targets, nontargets),
        actual_dcf=actual_dcf,
        min_dcf=min_dcf,
        dcf_prior=dcf_prior,
        false_alarms_above_0=float((nontargets > 0).mean()),
        false_alarms_above_2=float((nontargets > 2).mean()),
        misses_below_0=float((targets < 0).mean()),
    )
