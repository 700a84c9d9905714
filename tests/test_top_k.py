"""The fused top-k search kernel against a full score matrix ranked by NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import SCORE_TOLERANCE
from voxmatch.models import CAMPPLUS
from voxmatch.models.registry import Calibration, PairCalibration
from voxmatch.scoring import Traits, score_matrix
from voxmatch.top_k import posteriors, search_top_k
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

# Per pair of conditions and speech length, as the calibrations being fitted now are.
QUALITY = Calibration(
    wideband=PairCalibration(10.0, -4.0, 1.0, 0.5),
    narrowband=PairCalibration(8.0, -3.0, 0.5, 0.2),
    cross=PairCalibration(6.0, -3.5, 0.0, 0.3),
)


def traits(rng: np.random.Generator, count: int) -> Traits:
    return Traits(
        rng.choice(np.array([WIDEBAND, NARROWBAND], np.uint8), count),
        rng.uniform(0.3, 60, count).astype(np.float32),
    )


def log_sum_exp(scores: np.ndarray) -> np.ndarray:
    values = scores.astype(np.float64)
    top = values.max(axis=1, keepdims=True)
    result: np.ndarray = (top + np.log(np.exp(values - top).sum(axis=1, keepdims=True))).reshape(-1)
    return result


@pytest.mark.parametrize("calibration", [CAMPPLUS.calibration, QUALITY])
def test_top_k_is_the_best_of_the_full_matrix_block_after_block(calibration: Calibration) -> None:
    rng = np.random.default_rng(1)
    columns = rng.standard_normal((5_003, 192)).astype(np.float32)
    columns[17] = 0  # a voiceprint of no speech: scores 0 against everything
    rows = rng.standard_normal((9, 192)).astype(np.float32)
    row_traits, column_traits = traits(rng, 9), traits(rng, 5_003)
    valid = rng.random(5_003) > 0.2
    found = search_top_k(
        rows,
        columns,
        calibration,
        25,
        row_traits=row_traits,
        column_traits=column_traits,
        valid=valid,
        # Small blocks, so that the 5,003 columns take many (and a narrower last one).
        block_bytes=768 * 300,
    )
    full = score_matrix(
        rows, columns, calibration, row_traits=row_traits, column_traits=column_traits
    )
    full[:, ~valid] = -np.inf
    best = np.argsort(-full, axis=1, kind="stable")[:, :25]
    assert (found.columns == best).all()
    np.testing.assert_allclose(
        found.scores, np.take_along_axis(full, best, 1), atol=SCORE_TOLERANCE
    )
    np.testing.assert_allclose(found.log_sum_lr, log_sum_exp(full), rtol=1e-6)
    assert found.counted == int(valid.sum())


def test_fewer_columns_than_k_leave_empty_places() -> None:
    rng = np.random.default_rng(2)
    columns = rng.standard_normal((3, 192)).astype(np.float32)
    found = search_top_k(rng.standard_normal(192), columns, CAMPPLUS.calibration, 5)
    assert found.columns[0, 3:].tolist() == [-1, -1]
    assert np.isneginf(found.scores[0, 3:]).all()
    assert sorted(found.columns[0, :3].tolist()) == [0, 1, 2]
    nothing = search_top_k(
        rng.standard_normal(192), columns, CAMPPLUS.calibration, 2, valid=np.zeros(3, bool)
    )
    assert nothing.columns.tolist() == [[-1, -1]]
    assert np.isneginf(nothing.log_sum_lr).all()


def test_large_llrs_neither_overflow_nor_vanish_in_the_sum() -> None:
    scores = np.array([[800.0, 799.0]])
    log_sum = np.array([np.logaddexp(800.0, 799.0)])
    result = posteriors(scores, log_sum, 1_000_000, 0.5)
    np.testing.assert_allclose(result.sum(), 1.0, rtol=1e-12)
    assert result[0, 0] > result[0, 1] > 0
    weak = posteriors(np.array([[5.0]]), np.array([5.0]), 1_000_000, 0.5)
    # One LLR of +5 among a million: about 150 / 1e6, weak evidence.
    assert weak[0, 0] == pytest.approx(np.exp(5) / 1e6 / (1 + np.exp(5) / 1e6), rel=1e-9)
    assert posteriors(np.array([[5.0]]), np.array([5.0]), 10, 0.0).tolist() == [[0.0]]
    with pytest.raises(ValueError, match="prior_in_gallery"):
        posteriors(scores, log_sum, 10, 1.5)
