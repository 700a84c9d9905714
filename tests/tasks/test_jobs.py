"""The comparison task kind on a real store: scores written in place, in either orientation, and
the k best of a for every voiceprint of b."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from _helpers import assert_scores_close
from voxmatch.models.registry import DEFAULT_MODEL_NAME, describe
from voxmatch.scoring import Traits, rows_per_block, score_matrix
from voxmatch.stopping import Stopped
from voxmatch.tasks import TaskContext, TaskStore
from voxmatch.tasks.jobs import COMPARISON, TOP_K_DTYPE, TOP_K_ROWS, comparison_handler

# 300 x 200 in one block, and in several blocks with a short last one.
ONE_BLOCK, SEVERAL_BLOCKS = 64 * 1024 * 1024, 64 * 200 * 16 + 16


def embeddings(count: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, 192)).astype(np.float32)
    matrix[count // 2] = 0  # a voiceprint of no speech scores 0 against everything
    return matrix


@pytest.mark.parametrize("budget", [ONE_BLOCK, SEVERAL_BLOCKS])
@pytest.mark.parametrize("rows", ["a", "b"])
def test_scores_are_those_of_score_matrix_in_the_asked_orientation(
    tmp_path: Path, rows: str, budget: int
) -> None:
    inputs_a, inputs_b = embeddings(300, seed=1), embeddings(200, seed=2)
    blocks = -(-len(inputs_a) // rows_per_block(len(inputs_b), budget))
    assert blocks == (1 if budget == ONE_BLOCK else 5)
    store = TaskStore(tmp_path)
    record = store.create(
        COMPARISON,
        {"model": DEFAULT_MODEL_NAME, "rows": rows},
        task_id="task",
        arrays={"a": inputs_a, "b": inputs_b},
    )
    outcome = comparison_handler(budget)(TaskContext(record, store, None, threading.Event()))
    assert store.write_result_arrays(record.id, outcome.arrays)
    stored = store.result_array(record.id, "scores")
    expected = score_matrix(
        inputs_a, inputs_b, describe(DEFAULT_MODEL_NAME).calibration, memory_budget=budget
    )
    # The same matrix products as score_matrix(a, b): the same bits, transposed or not.
    np.testing.assert_array_equal(stored, expected.T if rows == "b" else expected)
    assert outcome.result == {"rows_count": stored.shape[0], "columns_count": stored.shape[1]}
    assert not (stored == 0).all(axis=None)
    store.close()


def top_k_task(
    store: TaskStore,
    count_a: int,
    count_b: int,
    top_k: int,
    cancelled: threading.Event | None = None,
) -> TaskContext:
    """A stored top_k comparison of mixed conditions and speech lengths, as REST stores it."""
    rng = np.random.default_rng(7)
    arrays = {"a": embeddings(count_a, seed=3), "b": embeddings(count_b, seed=4)}
    for side, count in (("a", count_a), ("b", count_b)):
        arrays[f"{side}_conditions"] = rng.integers(0, 2, count).astype(np.uint8)
        arrays[f"{side}_speech_lengths"] = rng.choice([0.6, 2.0, 30.0], count).astype(np.float32)
    record = store.create(
        COMPARISON,
        {"model": DEFAULT_MODEL_NAME, "rows": "b", "top_k": top_k},
        task_id="ranked",
        arrays=arrays,
    )
    return TaskContext(record, store, None, cancelled or threading.Event())


def test_top_k_ranks_a_for_every_row_of_b_slice_by_slice(tmp_path: Path) -> None:
    # Three slices of b, the last one short.
    count_a, count_b, k = 700, 2 * TOP_K_ROWS + 76, 6
    store = TaskStore(tmp_path)
    context = top_k_task(store, count_a, count_b, k)
    outcome = comparison_handler(ONE_BLOCK)(context)
    assert store.write_result_arrays(context.record.id, outcome.arrays)
    assert outcome.result == {"rows_count": count_b, "k": k}
    assert outcome.work.scores == count_a * count_b
    best = store.result_array(context.record.id, "scores")
    assert best.dtype == TOP_K_DTYPE
    assert best.shape == (count_b, k)
    traits_a = Traits(context.array("a_conditions"), context.array("a_speech_lengths"))
    traits_b = Traits(context.array("b_conditions"), context.array("b_speech_lengths"))
    matrix = score_matrix(
        context.array("b"),
        context.array("a"),
        describe(DEFAULT_MODEL_NAME).calibration,
        row_traits=traits_b,
        column_traits=traits_a,
    )
    # The task's products are of slices of b against blocks of a: other shapes than this one.
    assert_scores_close(best["score"], np.take_along_axis(matrix, best["index"], 1))
    assert (np.diff(best["score"], axis=1) <= 0).all()
    assert_scores_close(best["score"], -np.sort(-matrix, axis=1)[:, :k])
    store.close()


def test_top_k_beyond_len_a_is_every_column(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    context = top_k_task(store, 9, 4, 1000)
    outcome = comparison_handler(ONE_BLOCK)(context)
    assert outcome.result == {"rows_count": 4, "k": 9}
    for row in outcome.arrays["scores"]["index"]:
        assert sorted(row.tolist()) == list(range(9))
    store.close()


def test_a_cancelled_top_k_task_stops_before_its_first_block(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    cancelled = threading.Event()
    context = top_k_task(store, 50, 20, 3, cancelled)
    cancelled.set()
    with pytest.raises(Stopped):
        comparison_handler(ONE_BLOCK)(context)
    assert not store.result_array_path(context.record.id, "scores").exists()
    store.close()
