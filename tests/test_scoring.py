from __future__ import annotations

import numpy as np
import pytest

from _helpers import assert_scores_close
from voxmatch import Voiceprint, compare
from voxmatch.models import CAMPPLUS, Calibration
from voxmatch.models.registry import PairCalibration
from voxmatch.scoring import Traits, llr_from_cosines, score_matrix, unit_rows
from voxmatch.stopping import Stopped

CALIBRATION = Calibration.linear(scale=12.0, offset=-4.0)


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
    best = CAMPPLUS.calibration.wideband.scale + CAMPPLUS.calibration.wideband.offset
    assert scores[2, 0] == pytest.approx(best, abs=1e-4)
    assert scores[0, 1] == pytest.approx(best, abs=1e-4)
    assert scores.argmax(axis=0).tolist() == [2, 0]


CONDITION_AWARE = Calibration(
    wideband=PairCalibration(scale=12.0, offset=-4.0, scale_per_log_speech=1.5),
    narrowband=PairCalibration(scale=8.0, offset=-6.0, offset_per_log_speech=0.7),
    cross=PairCalibration(scale=10.0, offset=-5.0, scale_per_log_speech=0.5),
    speech_cap=20.0,
)


@pytest.mark.parametrize("budget", [64 * 1024 * 1024, 7 * 16 * 40], ids=["one-block", "blocks"])
def test_each_pair_gets_the_calibration_of_its_conditions_and_shorter_speech(
    budget: int,
) -> None:
    rng = np.random.default_rng(11)
    rows, columns = rng.standard_normal((30, 192)), rng.standard_normal((40, 192))
    row_traits = Traits(
        rng.integers(0, 2, 30).astype(np.uint8), rng.uniform(0.1, 60, 30).astype(np.float32)
    )
    column_traits = Traits(
        rng.integers(0, 2, 40).astype(np.uint8), rng.uniform(0.1, 60, 40).astype(np.float32)
    )
    scores = score_matrix(
        rows,
        columns,
        CONDITION_AWARE,
        row_traits=row_traits,
        column_traits=column_traits,
        memory_budget=budget,
    )
    unit_a, _ = unit_rows(rows)
    unit_b, _ = unit_rows(columns)
    expected = llr_from_cosines(unit_a @ unit_b.T, CONDITION_AWARE, row_traits, column_traits)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    # By hand, for one pair of each kind: narrowband-narrowband at the floor of speech.
    pair = CONDITION_AWARE.pairs()[2]
    assert pair is CONDITION_AWARE.narrowband
    cosine = float(unit_a[0] @ unit_a[0])
    same = score_matrix(
        rows[:1],
        rows[:1],
        CONDITION_AWARE,
        row_traits=Traits(np.array([1], np.uint8), np.array([0.1], np.float32)),
        column_traits=Traits(np.array([1], np.uint8), np.array([45.0], np.float32)),
    )
    quality = np.log(CONDITION_AWARE.speech_floor / CONDITION_AWARE.speech_cap)
    assert same[0, 0] == pytest.approx(8.0 * cosine - 6.0 + 0.7 * quality, abs=1e-4)


def test_a_calibration_whose_llr_falls_with_similarity_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Calibration(
            wideband=PairCalibration(scale=2.0, offset=0.0, scale_per_log_speech=1.0)
        ).check()
