"""The runner's life cycle on a real store: failures to store a result, graceful stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from voxmatch.tasks import TaskContext, TaskOutcome, TaskRunner, TaskState, TaskStore


def runner_with(data_dir: Path, handler, **options) -> TaskRunner:  # type: ignore[no-untyped-def]
    return TaskRunner(
        TaskStore(data_dir),
        {"test": handler},
        workers=1,
        queue_capacity=10,
        task_ttl_seconds=3600,
        expiry_interval_seconds=3600,
        **options,
    )


def wait_until_finished(store: TaskStore, task_id: str, timeout: float = 10) -> TaskState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.get(task_id)
        assert record is not None
        if record.state.finished:
            return record.state
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} never finished")


def test_a_result_that_cannot_be_stored_fails_the_task(tmp_path: Path) -> None:
    def unstorable(context: TaskContext) -> TaskOutcome:
        # Object arrays cannot be written without pickle, which the store refuses to use.
        return TaskOutcome({"n": 1}, {"scores": np.array([object()], dtype=object)})

    runner = runner_with(tmp_path, unstorable)
    runner.start()
    try:
        record = runner.submit("test", {})
        assert wait_until_finished(runner.store, record.id) is TaskState.FAILED
        failed = runner.store.get(record.id)
        assert failed is not None
        assert failed.error is not None
        assert failed.error["type"] == "internal"
    finally:
        runner.stop()


def test_a_stop_puts_running_tasks_back_without_counting_an_attempt(tmp_path: Path) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(context: TaskContext) -> TaskOutcome:
        started.set()
        release.wait(30)
        return TaskOutcome({"answer": 42})

    runner = runner_with(tmp_path, slow)
    runner.start()
    record = runner.submit("test", {})
    assert started.wait(10)
    runner.stop(timeout=0.2)
    stopped = runner.store.get(record.id)
    assert stopped is not None
    assert (stopped.state, stopped.attempts) == (TaskState.PENDING, 0)
    release.set()
    runner.store.close()

    def quick(context: TaskContext) -> TaskOutcome:
        return TaskOutcome({"answer": 42})

    restarted = runner_with(tmp_path, quick)
    restarted.start()
    try:
        assert wait_until_finished(restarted.store, record.id) is TaskState.DONE
        done = restarted.store.get(record.id)
        assert done is not None
        assert done.result == {"answer": 42}
    finally:
        restarted.stop()


def test_a_task_that_finishes_during_the_stop_is_recorded(tmp_path: Path) -> None:
    started = threading.Event()
    runner: TaskRunner

    def brief(context: TaskContext) -> TaskOutcome:
        started.set()
        # Finish only once the stop has begun, whatever the speed of the machine.
        assert runner._stopping.wait(30)
        return TaskOutcome({"answer": 7})

    runner = runner_with(tmp_path, brief)
    runner.start()
    record = runner.submit("test", {})
    assert started.wait(10)
    runner.stop(timeout=30)
    finished = runner.store.get(record.id)
    assert finished is not None
    assert (finished.state, finished.result) == (TaskState.DONE, {"answer": 7})
