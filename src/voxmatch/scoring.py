"""Score matrices: calibrated log-likelihood ratios from cosine similarity, computed in blocks.

Every score is the model's calibration applied to the cosine of the pair: the calibration of the
pair's conditions (wideband, narrowband or one of each), adjusted by the pair's quality (the
shorter side's speech length), as `models.registry.PairCalibration` says. A voiceprint made from no
speech has a zero embedding; it carries no evidence either way, so every score involving it is
exactly 0.0 (the LLR of balanced evidence) rather than a number derived from an undefined
cosine.

The product is computed in row blocks written straight into the float32 output, so no float64
copy and no second full-size intermediate exists at any time; the block size follows a memory
budget and lets a long computation be stopped between blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxmatch.calibration import apply_calibration
from voxmatch.models.registry import Calibration, PairCalibration
from voxmatch.stopping import StopCheck, check
from voxmatch.voiceprint import WIDEBAND, VoiceprintBatch

FloatMatrix = npt.NDArray[np.float32]
DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class Traits:
    """What calibration needs to know of each voiceprint besides its embedding."""

    conditions: npt.NDArray[np.uint8]
    """`voiceprint.WIDEBAND` or `voiceprint.NARROWBAND` per voiceprint."""
    speech_lengths: npt.NDArray[np.float32]

    @classmethod
    def of(cls, batch: VoiceprintBatch) -> Traits:
        return cls(batch.conditions, batch.speech_lengths)

    @classmethod
    def unknown(cls, count: int) -> Traits:
        """Embeddings of which nothing else is known: wideband, with plenty of speech."""
        return cls(np.full(count, WIDEBAND, np.uint8), np.full(count, np.inf, np.float32))

    def __len__(self) -> int:
        return len(self.conditions)

    def __getitem__(self, rows: slice) -> Traits:
        return Traits(self.conditions[rows], self.speech_lengths[rows])


def unit_rows(embeddings: npt.ArrayLike) -> tuple[FloatMatrix, npt.NDArray[np.bool_]]:
    """L2-normalised float32 copy of the rows, and which rows are empty (zero vectors)."""
    matrix = np.array(embeddings, dtype=np.float32, copy=True, ndmin=2)
    inverse, empty = _inverse_norms(matrix)
    matrix *= inverse[:, np.newaxis]
    return matrix, empty


def _inverse_norms(
    matrix: FloatMatrix,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """1 / L2 norm of each row (0 for an empty row), and which rows are empty."""
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float32))
    empty = norms == 0
    norms[empty] = np.inf
    return np.reciprocal(norms), empty


def _as_matrix(embeddings: npt.ArrayLike) -> FloatMatrix:
    matrix: FloatMatrix = np.asarray(embeddings, dtype=np.float32)
    return matrix.reshape(1, -1) if matrix.ndim == 1 else matrix


def rows_per_block(columns: int, memory_budget: int) -> int:
    """Rows of one block of `score_matrix` against `columns` columns: a caller that splits the
    rows into blocks of this size makes the same matrix products, hence the same bits."""
    # Each block row needs its scores and up to three per-pair factors of calibration.
    return max(1, memory_budget // max(1, columns * 16))


def score_matrix(
    rows: npt.ArrayLike,
    columns: npt.ArrayLike,
    calibration: Calibration,
    *,
    row_traits: Traits | None = None,
    column_traits: Traits | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    should_stop: StopCheck | None = None,
    out: FloatMatrix | None = None,
) -> FloatMatrix:
    """scores[r, c] = LLR(rows[r], columns[c]) as a float32 matrix (len(rows) x len(columns)),
    written into `out` (C-contiguous float32 of that shape: a memory-mapped file, say) if given.

    Traits left out are `Traits.unknown`. `should_stop` is asked before each row block; when it
    says so, `stopping.Stopped` is raised.
    """
    row_matrix, column_matrix = _as_matrix(rows), _as_matrix(columns)
    row_traits = row_traits or Traits.unknown(len(row_matrix))
    column_traits = column_traits or Traits.unknown(len(column_matrix))
    if len(row_traits) != len(row_matrix) or len(column_traits) != len(column_matrix):
        raise ValueError("traits must describe every row and column")
    row_inverse, row_empty = _inverse_norms(row_matrix)
    column_inverse, column_empty = _inverse_norms(column_matrix)
    shape = (len(row_matrix), len(column_matrix))
    if out is None:
        scores = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    else:
        scores = out
    column_groups = _groups(column_matrix, column_inverse, column_traits, calibration)
    block_rows = rows_per_block(len(column_matrix), memory_budget)
    for start in range(0, len(row_matrix), block_rows):
        check(should_stop, "comparison")
        stop = min(start + block_rows, len(row_matrix))
        row_groups = _groups(
            row_matrix[start:stop], row_inverse[start:stop], row_traits[start:stop], calibration
        )
        _score_block(row_groups, column_groups, calibration, scores[start:stop])
        if column_empty.any():
            scores[start:stop, column_empty] = 0.0
        if row_empty[start:stop].any():
            scores[start:stop][row_empty[start:stop]] = 0.0
    return scores


@dataclass(frozen=True)
class _Group:
    """The items of one side that share a condition: which they are, and what scoring needs."""

    items: slice | npt.NDArray[np.intp]
    """All items of the side (a slice), or the indices of this condition's items."""
    embeddings: FloatMatrix
    inverse_norms: npt.NDArray[np.float32]
    log_speech: npt.NDArray[np.float32]
    """The quality measure of each item alone; a pair's is the lower of its two items'."""
    condition: int

    def __len__(self) -> int:
        return len(self.inverse_norms)


def _groups(
    embeddings: FloatMatrix,
    inverse_norms: npt.NDArray[np.float32],
    traits: Traits,
    calibration: Calibration,
) -> list[_Group]:
    clipped = np.clip(traits.speech_lengths, calibration.speech_floor, calibration.speech_cap)
    log_speech = np.log(clipped / np.float32(calibration.speech_cap)).astype(np.float32)
    present = np.unique(traits.conditions)
    if len(present) <= 1:
        condition = int(present[0]) if len(present) else WIDEBAND
        return [_Group(slice(None), embeddings, inverse_norms, log_speech, condition)]
    # Mixed conditions: each condition's items are gathered (a copy of that side's rows), so
    # that every pair of groups is scored with one calibration on contiguous arrays.
    groups = []
    for condition in present.tolist():
        items = np.flatnonzero(traits.conditions == condition)
        groups.append(
            _Group(items, embeddings[items], inverse_norms[items], log_speech[items], condition)
        )
    return groups


def _score_block(
    row_groups: list[_Group],
    column_groups: list[_Group],
    calibration: Calibration,
    out: FloatMatrix,
) -> None:
    pairs = calibration.pairs()
    if len(row_groups) == 1 and len(column_groups) == 1:
        rows, columns = row_groups[0], column_groups[0]
        _score_region(rows, columns, pairs[rows.condition + columns.condition], out)
        return
    for rows in row_groups:
        for columns in column_groups:
            region = np.empty((len(rows), len(columns)), np.float32)
            _score_region(rows, columns, pairs[rows.condition + columns.condition], region)
            if isinstance(rows.items, slice):
                out[:, columns.items] = region
            elif isinstance(columns.items, slice):
                out[rows.items] = region
            else:
                out[np.ix_(rows.items, columns.items)] = region


def _score_region(rows: _Group, columns: _Group, pair: PairCalibration, out: FloatMatrix) -> None:
    # Raw dot products scaled by the inverse norms afterwards: normalising the inputs first
    # would copy them, and one side may be 50,000 embeddings. The two inverse norms are
    # multiplied together before they touch the dot product, so this scaling of a pair does
    # not depend on which side each voiceprint is on. The dot product itself has no such
    # guarantee: BLAS may sum in another order for another shape, block height, CPU kernel or
    # thread count, so those give scores that differ in the last bits. Only the same inputs,
    # shapes, blocks and BLAS settings give the same bits, which is why REST computes with rows
    # on `a`, as gRPC does, and transposes afterwards (tasks/jobs.py).
    np.matmul(rows.embeddings, columns.embeddings.T, out=out)
    factors = np.multiply.outer(rows.inverse_norms, columns.inverse_norms)
    quality_terms = pair.scale_per_log_speech != 0 or pair.offset_per_log_speech != 0
    full_speech = (rows.log_speech >= 0).all() and (columns.log_speech >= 0).all()
    if not quality_terms or full_speech:
        factors *= np.float32(pair.scale)
        out *= factors
        out += np.float32(pair.offset)
        return
    # The pair's quality q is the lower of its two sides'. Scale and offset are each affine in
    # q, so each is also the lower (or, for a negative slope, the higher) of its two sides'
    # values: one outer minimum per term instead of per-pair arithmetic on q.
    per_pair = np.empty_like(factors)
    _pairwise_extreme(
        np.float32(pair.scale) + np.float32(pair.scale_per_log_speech) * rows.log_speech,
        np.float32(pair.scale) + np.float32(pair.scale_per_log_speech) * columns.log_speech,
        pair.scale_per_log_speech,
        per_pair,
    )
    factors *= per_pair
    out *= factors
    _pairwise_extreme(
        np.float32(pair.offset) + np.float32(pair.offset_per_log_speech) * rows.log_speech,
        np.float32(pair.offset) + np.float32(pair.offset_per_log_speech) * columns.log_speech,
        pair.offset_per_log_speech,
        per_pair,
    )
    out += per_pair


def _pairwise_extreme(
    row_values: npt.NDArray[np.float32],
    column_values: npt.NDArray[np.float32],
    slope: float,
    out: FloatMatrix,
) -> None:
    """out[r, c] = the value an affine function of slope `slope` takes at the lower quality of
    the pair, from its values at each side's quality."""
    extreme = np.minimum if slope >= 0 else np.maximum
    extreme.outer(row_values, column_values, out=out)


def llr_from_cosines(
    cosines: npt.ArrayLike,
    calibration: Calibration,
    row_traits: Traits,
    column_traits: Traits,
) -> npt.NDArray[np.float64]:
    """The LLRs of a matrix of cosines (rows x columns), in float64: the calibration as
    `score_matrix` applies it, for scores computed some other way (vector voiceprints, say)."""
    return apply_calibration(
        calibration,
        cosines,
        np.add.outer(row_traits.conditions, column_traits.conditions),
        np.minimum.outer(row_traits.speech_lengths, column_traits.speech_lengths),
    )
