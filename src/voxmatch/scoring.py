"""Score matrices: calibrated log-likelihood ratios from cosine similarity, computed in blocks.

Every score is `scale * cos + offset` with the model's calibration. A voiceprint made from no
speech has a zero embedding; it carries no evidence either way, so every score involving it is
exactly 0.0 (the LLR of balanced evidence) rather than a number derived from an undefined
cosine.

The product is computed in row blocks written straight into the float32 output, so no float64
copy and no second full-size intermediate exists at any time; the block size follows a memory
budget and lets a long computation be stopped between blocks.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxmatch.models.registry import Calibration
from voxmatch.stopping import StopCheck, check

FloatMatrix = npt.NDArray[np.float32]
DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024


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
    # Each block row needs its scores and its scaling factors: 8 bytes per column.
    return max(1, memory_budget // max(1, columns * 8))


def score_matrix(
    rows: npt.ArrayLike,
    columns: npt.ArrayLike,
    calibration: Calibration,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    should_stop: StopCheck | None = None,
    out: FloatMatrix | None = None,
) -> FloatMatrix:
    """scores[r, c] = LLR(rows[r], columns[c]) as a float32 matrix (len(rows) x len(columns)),
    written into `out` (C-contiguous float32 of that shape: a memory-mapped file, say) if given.

    `should_stop` is asked before each row block; when it says so, `stopping.Stopped` is raised.
    """
    row_matrix, column_matrix = _as_matrix(rows), _as_matrix(columns)
    row_inverse, row_empty = _inverse_norms(row_matrix)
    column_inverse, column_empty = _inverse_norms(column_matrix)
    shape = (len(row_matrix), len(column_matrix))
    if out is None:
        scores = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    else:
        scores = out
    block_rows = rows_per_block(len(column_matrix), memory_budget)
    for start in range(0, len(row_matrix), block_rows):
        check(should_stop, "comparison")
        stop = min(start + block_rows, len(row_matrix))
        _score_block(
            row_matrix[start:stop],
            row_inverse[start:stop],
            row_empty[start:stop],
            column_matrix,
            column_inverse,
            column_empty,
            calibration,
            scores[start:stop],
        )
    return scores


def _score_block(
    rows: FloatMatrix,
    row_inverse: npt.NDArray[np.float32],
    row_empty: npt.NDArray[np.bool_],
    columns: FloatMatrix,
    column_inverse: npt.NDArray[np.float32],
    column_empty: npt.NDArray[np.bool_],
    calibration: Calibration,
    out: FloatMatrix,
) -> None:
    # Raw dot products scaled by the inverse norms afterwards: normalising the inputs first
    # would copy them, and one side may be 50,000 embeddings. The two inverse norms are
    # multiplied together before they touch the dot product, so this scaling of a pair does
    # not depend on which side each voiceprint is on. The dot product itself has no such
    # guarantee: BLAS may sum in another order for another shape, block height, CPU kernel or
    # thread count, so those give scores that differ in the last bits. Only the same inputs,
    # shapes, blocks and BLAS settings give the same bits, which is why REST computes with rows
    # on `a`, as gRPC does, and transposes afterwards (tasks/jobs.py).
    np.matmul(rows, columns.T, out=out)
    factors = np.multiply.outer(row_inverse, column_inverse)
    factors *= np.float32(calibration.scale)
    out *= factors
    out += np.float32(calibration.offset)
    if column_empty.any():
        out[:, column_empty] = 0.0
    if row_empty.any():
        out[row_empty] = 0.0
