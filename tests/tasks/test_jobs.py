"""The comparison task kind on a real store: scores written in place, in either orientation."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from voxmatch.models.registry import DEFAULT_MODEL_NAME, describe
from voxmatch.scoring import rows_per_block, score_matrix
from voxmatch.tasks import TaskContext, TaskStore
from voxmatch.tasks.jobs import COMPARISON, comparison_handler

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
