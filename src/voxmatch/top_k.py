"""The k best columns of every row of a calibrated score matrix, without the matrix.

Searching probes against a gallery of a million voiceprints would make a probes x 1,000,000
matrix; ranking a whole matrix with `np.argpartition` costs several times the product. Here the
columns are scored in blocks (`scoring.score_matrix`, so every score is bit for bit what a
comparison of the same pair computes in a block of that shape), and each block is folded into a
running per-row top k and a running log of the sum of likelihood ratios, then dropped. Only the
first blocks are ranked in full: once a row has k candidates, a block contributes only the
scores above the row's current k-th best, which are few.

The sum of likelihood ratios over every column is what a posterior over the columns needs
(`posteriors`): it is accumulated as log-sum-exp (a running maximum and the sum of exp(score -
maximum)), so LLRs of hundreds do not overflow and a million LLRs of -20 still count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxmatch.models.registry import Calibration
from voxmatch.scoring import FloatMatrix, Traits, score_matrix
from voxmatch.stopping import StopCheck, check

BLOCK_BYTES = 4 * 1024 * 1024
"""Bytes of gallery embeddings scored in one block: small enough to stay in the CPU's cache
between the product and the norms `score_matrix` takes of the same columns."""
MAX_BLOCK_SCORES = 4 * 1024 * 1024
"""Most scores of one block (probes x block columns): the block's float32 scores and the
temporaries of calibration and ranking stay within a few tens of MB."""


@dataclass(frozen=True)
class TopK:
    """The best columns of each row, best first, and what a posterior needs of the rest."""

    columns: npt.NDArray[np.int64]
    """rows x k column indices, best first; -1 where a row has fewer than k columns."""
    scores: FloatMatrix
    """rows x k LLRs, as `score_matrix` computes them; -inf where `columns` is -1."""
    log_sum_lr: npt.NDArray[np.float64]
    """Per row, ln(sum over every counted column of exp(LLR)); -inf with no column."""
    counted: int
    """How many columns each row was scored against (the valid ones)."""


def search_top_k(
    rows: npt.ArrayLike,
    columns: FloatMatrix,
    calibration: Calibration,
    k: int,
    *,
    row_traits: Traits | None = None,
    column_traits: Traits | None = None,
    valid: npt.NDArray[np.bool_] | None = None,
    block_bytes: int = BLOCK_BYTES,
    should_stop: StopCheck | None = None,
) -> TopK:
    """The `k` highest LLRs of each row against `columns` (any array-like of rows: a memory
    map is read block by block, never copied whole). Columns where `valid` is False are left
    out of the ranking and of the sum. Ties keep no particular order. `block_bytes` is how
    many bytes of `columns` one block covers (see `BLOCK_BYTES`).

    `should_stop` is asked before each block; when it says so, `stopping.Stopped` is raised.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    row_matrix = np.asarray(rows, dtype=np.float32)
    if row_matrix.ndim == 1:
        row_matrix = row_matrix.reshape(1, -1)
    count, dim = len(row_matrix), int(columns.shape[1]) if columns.ndim == 2 else 0
    total = int(columns.shape[0])
    row_traits = row_traits or Traits.unknown(count)
    column_traits = column_traits or Traits.unknown(total)
    if valid is not None and valid.shape != (total,):
        raise ValueError("valid must say of every column whether it counts")
    running = _Running(count, k)
    block_columns = max(1, min(block_bytes // max(1, 4 * dim), MAX_BLOCK_SCORES // max(1, count)))
    buffer = np.empty(count * min(block_columns, max(1, total)), dtype=np.float32)
    counted = total if valid is None else int(valid.sum())
    for start in range(0, total, block_columns):
        check(should_stop, "search")
        stop = min(start + block_columns, total)
        block_valid = None if valid is None else valid[start:stop]
        if block_valid is not None and not block_valid.any():
            continue
        # The last block is narrower: a prefix of the buffer keeps it C-contiguous.
        block = buffer[: count * (stop - start)].reshape(count, stop - start)
        score_matrix(
            row_matrix,
            columns[start:stop],
            calibration,
            row_traits=row_traits,
            column_traits=column_traits[start:stop],
            memory_budget=max(1, block.nbytes * 4),
            out=block,
        )
        if block_valid is not None and not block_valid.all():
            block[:, ~block_valid] = -np.inf
        running.add(block, start)
    return running.result(counted)


class _Running:
    """The top k so far of each row, and the running log-sum-exp of its scores."""

    def __init__(self, count: int, k: int) -> None:
        self.k = k
        self.scores = np.full((count, k), -np.inf, dtype=np.float32)
        self.columns = np.full((count, k), -1, dtype=np.int64)
        self.maximum = np.full(count, -np.inf, dtype=np.float64)
        self.sum_exp = np.zeros(count, dtype=np.float64)

    def add(self, block: FloatMatrix, offset: int) -> None:
        block_maximum = block.max(axis=1)
        self._add_to_sum(block, block_maximum)
        threshold = self.scores[:, -1]
        # Past the first blocks, most rows have nothing above their k-th best: only the rows
        # that do are looked at.
        rows = np.flatnonzero(block_maximum > threshold)
        if rows.size == 0:
            return
        candidates = block[rows]
        hit_places, hit_columns = np.nonzero(candidates > threshold[rows, np.newaxis])
        if hit_places.size > 4 * self.k * len(rows):
            # Early blocks: most of the block beats the running k-th; rank the block itself.
            width = block.shape[1]
            take = min(self.k, width)
            best = np.argpartition(candidates, width - take, axis=1)[:, width - take :]
            hit_places = np.repeat(np.arange(len(rows)), take)
            hit_columns = best.reshape(-1)
        hit_scores = candidates[hit_places, hit_columns]
        self._merge(rows[hit_places], hit_columns + offset, hit_scores)

    def _add_to_sum(self, block: FloatMatrix, block_maximum: FloatMatrix) -> None:
        new_maximum = np.maximum(self.maximum, block_maximum.astype(np.float64))
        # Rows with nothing counted yet keep -inf; exp(-inf - -inf) would be NaN.
        seen = np.isfinite(new_maximum)
        if not seen.any():
            return
        shift = np.where(seen, new_maximum, 0.0)
        with np.errstate(invalid="ignore"):
            self.sum_exp *= np.exp(np.where(seen, self.maximum - shift, -np.inf))
        exps = block - shift.astype(np.float32)[:, np.newaxis]
        np.exp(exps, out=exps)
        self.sum_exp += exps.sum(axis=1, dtype=np.float64)
        self.maximum = np.where(seen, new_maximum, self.maximum)

    def _merge(
        self,
        hit_rows: npt.NDArray[np.intp],
        hit_columns: npt.NDArray[np.int64],
        hit_scores: FloatMatrix,
    ) -> None:
        count, k = self.scores.shape
        rows = np.concatenate([np.repeat(np.arange(count), k), hit_rows])
        scores = np.concatenate([self.scores.reshape(-1), hit_scores])
        columns = np.concatenate([self.columns.reshape(-1), hit_columns])
        # Row by row, best first; every row has at least its k current entries.
        order = np.lexsort((-scores, rows))
        per_row = np.bincount(rows, minlength=count)
        starts = np.concatenate([[0], np.cumsum(per_row)[:-1]])
        keep = order[(starts[:, np.newaxis] + np.arange(k)).reshape(-1)]
        self.scores = scores[keep].reshape(count, k)
        self.columns = columns[keep].reshape(count, k)

    def result(self, counted: int) -> TopK:
        with np.errstate(divide="ignore"):
            log_sum = self.maximum + np.log(self.sum_exp)
        log_sum = np.where(np.isfinite(self.maximum), log_sum, -np.inf)
        columns = np.where(np.isfinite(self.scores), self.columns, -1)
        return TopK(columns, self.scores, log_sum, counted)


def posteriors(
    scores: npt.ArrayLike, log_sum_lr: npt.ArrayLike, count: int, prior_in_gallery: float
) -> npt.NDArray[np.float64]:
    """P(the probe is speaker s | the scores) for LLRs `scores` (rows x k) of probes whose LRs
    over all `count` enrolled speakers sum to exp(`log_sum_lr`) (one per row).

    `prior_in_gallery` (pi) is the prior probability that the probe's speaker is enrolled at
    all, spread evenly over the speakers:
        p_s = LR_s (pi / N) / ((1 - pi) + (pi / N) sum_t LR_t),
    computed in log space. Over all N speakers they sum to less than 1 (to less than pi when the
    LRs average 1 or less); the rest is the probability that the speaker is not enrolled.
    """
    if not 0 <= prior_in_gallery <= 1:
        raise ValueError("prior_in_gallery must be between 0 and 1")
    llrs = np.asarray(scores, dtype=np.float64)
    log_sums = np.asarray(log_sum_lr, dtype=np.float64).reshape(-1, 1)
    if count == 0 or prior_in_gallery == 0:
        return np.zeros_like(llrs)
    log_prior_each = np.log(prior_in_gallery) - np.log(count)
    with np.errstate(divide="ignore"):
        log_outside = np.log1p(-prior_in_gallery)
    log_evidence = np.logaddexp(log_outside, log_prior_each + log_sums)
    with np.errstate(invalid="ignore"):
        result = np.exp(llrs + log_prior_each - log_evidence)
    return np.where(np.isfinite(llrs), result, 0.0)
