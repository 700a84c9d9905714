"""The early start of fresh tasks: exactly one side marks the row running once it exists."""

from __future__ import annotations

from voxmatch.tasks import TaskRecord, TaskState
from voxmatch.tasks.fresh import FreshTasks


def record(task_id: str) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        kind="test",
        state=TaskState.PENDING,
        created=0.0,
        updated=0.0,
        finished=None,
        attempts=0,
        params={},
        result=None,
        error=None,
        request_id=None,
        correlation_id=None,
    )


def test_a_task_taken_before_it_is_stored_is_marked_running_by_the_submitter() -> None:
    fresh_tasks = FreshTasks()
    fresh = fresh_tasks.hold(record("a"), {}, needs_files=False)
    taken = fresh_tasks.take("a")
    assert taken == (fresh, False), "not on disk yet: the worker must not mark it running"
    assert fresh_tasks.stored(fresh), "the submitter marks it running"
    assert fresh.settled()


def test_a_task_stored_before_it_is_taken_is_marked_running_by_the_worker() -> None:
    fresh_tasks = FreshTasks()
    fresh = fresh_tasks.hold(record("a"), {}, needs_files=False)
    assert not fresh_tasks.stored(fresh), "no worker has it: the submitter leaves it pending"
    assert fresh_tasks.take("a") == (fresh, True), "on disk: the worker marks it running"
    assert fresh_tasks.take("a") is None, "taken once"


def test_a_lost_task_is_no_longer_fresh_and_settles_as_lost() -> None:
    fresh_tasks = FreshTasks()
    fresh = fresh_tasks.hold(record("a"), {}, needs_files=True)
    fresh_tasks.lose(fresh)
    assert not fresh.settled()
    assert fresh_tasks.peek("a") is None
    assert fresh_tasks.take("a") is None
