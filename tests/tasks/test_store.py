"""Result files of the task store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from voxmatch.tasks import TaskStore


@pytest.mark.parametrize("fsync", [False, True])
def test_a_result_filled_in_place_is_stored_with_its_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    # A relative data folder: the memory map's file name must still be recognised as the
    # result's own file (writing it out again would truncate the mapped file under itself).
    monkeypatch.chdir(tmp_path)
    store = TaskStore(Path("data"), fsync=fsync)
    store.create("test", {}, task_id="task")
    values = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    mapped = store.open_result_array("task", "scores", values.shape, np.float32)
    mapped[:] = values
    assert mapped.filename is not None
    partial_size = os.path.getsize(mapped.filename)
    assert store.write_result_arrays("task", {"scores": mapped, "other": values[0]})
    del mapped
    path = store.result_array_path("task", "scores")
    assert os.path.getsize(path) == partial_size
    np.testing.assert_array_equal(store.result_array("task", "scores"), values)
    np.testing.assert_array_equal(store.result_array("task", "other"), values[0])
    assert sorted(item.name for item in path.parent.iterdir()) == [
        "out.other.npy",
        "out.scores.npy",
    ]
    store.close()


def test_a_result_of_a_deleted_task_is_not_stored(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.create("test", {}, task_id="task")
    mapped = store.open_result_array("task", "scores", (2, 2), np.float32)
    mapped[:] = 1
    store.delete("task")
    assert not store.write_result_arrays("task", {"scores": mapped})
    assert not store.task_dir("task").exists()
    store.close()
