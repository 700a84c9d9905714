"""The runner's life cycle on a real store: failures to store a result, graceful stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np

from voxmatch.compute_slots import ComputeSlots
from voxmatch.tasks import (
    TaskContext,
    TaskOutcome,
    TaskRecord,
    TaskRejected,
    TaskRunner,
    TaskState,
    TaskStore,
    WorkDone,
)


def runner_with(
    data_dir: Path,
    handler: Callable[[TaskContext], TaskOutcome],
    compute_slots: ComputeSlots | None = None,
    slot_kinds: Collection[str] = (),
) -> TaskRunner:
    return TaskRunner(
        TaskStore(data_dir),
        {"test": handler},
        workers=1,
        queue_capacity=10,
        task_ttl_seconds=3600,
        expiry_interval_seconds=3600,
        compute_slots=compute_slots,
        slot_kinds=slot_kinds,
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
        # The moment the stop begins shows nowhere public, and this task must finish inside it.
        assert runner._stopping.wait(30)  # noqa: SLF001
        return TaskOutcome({"answer": 7})

    runner = runner_with(tmp_path, brief)
    runner.start()
    record = runner.submit("test", {})
    assert started.wait(10)
    runner.stop(timeout=30)
    finished = runner.store.get(record.id)
    assert finished is not None
    assert (finished.state, finished.result) == (TaskState.DONE, {"answer": 7})


def test_observers_learn_each_final_state_and_the_work_done(tmp_path: Path) -> None:
    def by_params(context: TaskContext) -> TaskOutcome:
        if context.params["outcome"] == "rejected":
            raise TaskRejected("bad input")
        if context.params["outcome"] == "failed":
            raise RuntimeError("broken")
        return TaskOutcome({"n": 1}, work=WorkDone(audio_seconds=2.5, scores=6))

    seen: dict[str, tuple[TaskState, TaskOutcome | None]] = {}
    all_seen = threading.Event()

    def observe(record: TaskRecord, state: TaskState, outcome: TaskOutcome | None) -> None:
        seen[record.params["outcome"]] = (state, outcome)
        if len(seen) == 3:
            all_seen.set()

    runner = runner_with(tmp_path, by_params)
    runner.add_task_observer(observe)
    assert not runner.workers_alive()
    runner.start()
    try:
        assert runner.workers_alive()
        for outcome in ("done", "rejected", "failed"):
            runner.submit("test", {"outcome": outcome})
        assert all_seen.wait(30), seen
    finally:
        runner.stop()
    assert not runner.workers_alive()
    done_state, done_outcome = seen["done"]
    assert done_state is TaskState.DONE
    assert done_outcome is not None
    assert done_outcome.work == WorkDone(audio_seconds=2.5, scores=6)
    assert seen["rejected"] == (TaskState.REJECTED, None)
    assert seen["failed"] == (TaskState.FAILED, None)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition was not met in time"
        time.sleep(0.005)


def test_tasks_of_slot_kinds_wait_pending_for_a_compute_slot(tmp_path: Path) -> None:
    slots = ComputeSlots(1)
    ran: list[str] = []

    def record_run(context: TaskContext) -> TaskOutcome:
        ran.append(context.record.kind)
        return TaskOutcome({"kind": context.record.kind})

    runner = TaskRunner(
        TaskStore(tmp_path),
        {"heavy": record_run, "light": record_run},
        workers=2,
        queue_capacity=10,
        task_ttl_seconds=3600,
        expiry_interval_seconds=3600,
        compute_slots=slots,
        slot_kinds=("heavy",),
    )
    runner.start()
    try:
        with slots.slot():  # another interface holds the only slot
            cancelled = runner.submit("heavy", {})
            wait_for(lambda: slots.waiting == 1)
            stored = runner.store.get(cancelled.id)
            assert stored is not None
            assert stored.state is TaskState.PENDING
            assert (runner.queue_length(), runner.running_count()) == (1, 0)
            # A task cancelled while it waits leaves the line and never runs.
            assert runner.cancel(cancelled.id)
            wait_for(lambda: slots.waiting == 0)

            heavy = runner.submit("heavy", {})
            wait_for(lambda: slots.waiting == 1)
            # Light work takes no slot: it runs while the heavy task still waits.
            light = runner.submit("light", {})
            assert wait_until_finished(runner.store, light.id) is TaskState.DONE
            assert ran == ["light"]
            assert slots.waiting == 1
        assert wait_until_finished(runner.store, heavy.id) is TaskState.DONE
        assert ran == ["light", "heavy"]
        assert runner.store.get(cancelled.id) is None
    finally:
        runner.stop()


def test_a_stop_leaves_a_task_that_waits_for_a_slot_pending(tmp_path: Path) -> None:
    slots = ComputeSlots(1)

    def never(context: TaskContext) -> TaskOutcome:
        raise AssertionError("a task without a slot must not run")

    runner = runner_with(tmp_path, never, compute_slots=slots, slot_kinds=("test",))
    runner.start()
    with slots.slot():
        record = runner.submit("test", {})
        wait_for(lambda: slots.waiting == 1)
        runner.stop()
        assert slots.waiting == 0
    stopped = runner.store.get(record.id)
    assert stopped is not None
    assert (stopped.state, stopped.attempts) == (TaskState.PENDING, 0)
    runner.store.close()
