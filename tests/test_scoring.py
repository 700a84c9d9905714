from __future__ import annotations

import numpy as np
import pytest

from _helpers import assert_scores_close
from voxmatch import Voiceprint, compare
from voxmatch.models import CAMPPLUS, Calibration
from voxmatch.scoring import score_matrix
from voxmatch.stopping import Stopped

CALIBRATION = Calibration(scale=12.0, offset=-4.0)


def cosine_reference(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    rows64 = rows.astype(np.float64)
    columns64 = columns.astype(np.float64)
    rows64 /= np.linalg.norm(rows64, axis=1, keepdims=True)
    columns64 /= np.linalg.norm(columns64, axis=1, keepdims=True)
    return rows64 @ columns64.T


def test_scores_are_the_calibrated_cosine_of_each_pair() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((7, 192)).astype(np.float32)
    columns = rng.standard_normal((5, 192)).astype(np.float32)
    scores = score_matrix(rows, columns, CALIBRATION)
    assert scores.shape == (7, 5)
    assert scores.dtype == np.float32
    expected = 12.0 * cosine_reference(rows, columns) - 4.0
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_identical_voices_score_scale_plus_offset() -> None:
    vector = np.random.default_rng(1).standard_normal((1, 192)).astype(np.float32)
    assert score_matrix(vector, vector * 3, CALIBRATION)[0, 0] == pytest.approx(8.0, abs=1e-4)


def test_blocked_product_matches_one_block_for_any_budget() -> None:
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((1000, 192)).astype(np.float32)
    columns = rng.standard_normal((300, 192)).astype(np.float32)
    whole = score_matrix(rows, columns, CALIBRATION, memory_budget=1 << 30)
    # 300 columns x 8 bytes x 7 rows: a budget that splits the rows into uneven blocks.
    small = score_matrix(rows, columns, CALIBRATION, memory_budget=300 * 8 * 7)
    # Blocks of another height are other matrix products: BLAS may round them differently.
    assert_scores_close(small, whole)


def test_empty_voiceprints_score_zero_against_everything() -> None:
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((3, 192)).astype(np.float32)
    rows[1] = 0
    columns = rng.standard_normal((4, 192)).astype(np.float32)
    columns[2] = 0
    scores = score_matrix(rows, columns, CALIBRATION)
    assert (scores[1] == 0).all()
    assert (scores[:, 2] == 0).all()
    assert np.isfinite(scores).all()
    assert (scores[[0, 2]][:, [0, 1, 3]] != 0).all()


def test_should_stop_interrupts_between_blocks() -> None:
    rows = np.ones((100, 8), dtype=np.float32)
    calls = []

    def stop_after_first_block() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Stopped):
        score_matrix(
            rows, rows, CALIBRATION, memory_budget=100 * 4, should_stop=stop_after_first_block
        )
    assert len(calls) == 2


def test_public_compare_rows_follow_voiceprints_a() -> None:
    rng = np.random.default_rng(5)
    a = [Voiceprint.from_embedding(rng.standard_normal(192), speech_length=9) for _ in range(3)]
    b = [a[2], a[0]]
    scores = compare(a, b)
    assert scores.shape == (3, 2)
    best = CAMPPLUS.calibration.scale + CAMPPLUS.calibration.offset
    assert scores[2, 0] == pytest.approx(best, abs=1e-4)
    assert scores[0, 1] == pytest.approx(best, abs=1e-4)
    assert scores.argmax(axis=0).tolist() == [2, 0]
