"""The task store's state moves: only an unfinished task finishes, and a new task is durable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxmatch.tasks import TaskState, TaskStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    opened = TaskStore(tmp_path)
    yield opened
    opened.close()


def test_a_done_task_is_never_overwritten(store: TaskStore) -> None:
    store.create("test", {}, task_id="task")
    assert store.mark_running("task")
    assert store.mark_done("task", {"answer": 7})
    assert not store.mark_done("task", {"answer": 8})
    assert not store.mark_finished_with_error(
        "task", TaskState.FAILED, {"type": "internal", "message": "late", "fields": []}
    )
    record = store.get("task")
    assert record is not None
    assert (record.state, record.result, record.error) == (TaskState.DONE, {"answer": 7}, None)


@pytest.mark.parametrize("first", [TaskState.FAILED, TaskState.REJECTED])
def test_a_task_finished_with_an_error_is_never_overwritten(
    store: TaskStore, first: TaskState
) -> None:
    error = {"type": "rejected", "message": "bad", "fields": []}
    store.create("test", {}, task_id="task")
    assert store.mark_finished_with_error("task", first, error)
    assert not store.mark_done("task", {"answer": 7})
    other = TaskState.REJECTED if first is TaskState.FAILED else TaskState.FAILED
    assert not store.mark_finished_with_error("task", other, {**error, "message": "other"})
    record = store.get("task")
    assert record is not None
    assert (record.state, record.result, record.error) == (first, None, error)


@pytest.mark.parametrize("state", [TaskState.PENDING, TaskState.RUNNING])
def test_an_unfinished_task_finishes(store: TaskStore, state: TaskState) -> None:
    store.create("test", {}, task_id="task")
    if state is TaskState.RUNNING:
        assert store.mark_running("task")
    assert store.mark_done("task", {"answer": 7})
    record = store.get("task")
    assert record is not None
    assert (record.state, record.result) == (TaskState.DONE, {"answer": 7})


def test_a_finished_task_cannot_run_again(store: TaskStore) -> None:
    store.create("test", {}, task_id="task")
    assert store.mark_done("task", {})
    assert not store.mark_running("task")
    record = store.get("task")
    assert record is not None
    assert record.state is TaskState.DONE


def test_creating_a_task_fsyncs_its_folder_and_the_folder_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TaskStore(tmp_path, fsync=True)
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        status = os.fstat(descriptor)
        synced.append((status.st_dev, status.st_ino))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    try:
        store.create("test", {}, task_id="task")
    finally:
        monkeypatch.undo()
        store.close()

    def identity(path: Path) -> tuple[int, int]:
        status = path.stat()
        return status.st_dev, status.st_ino

    assert identity(store.task_dir("task")) in synced
    assert identity(store.task_dir("task").parent) in synced
