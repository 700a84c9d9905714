"""Asynchronous work: durable task store, worker pool, and the task kinds voxmatch runs."""

from voxmatch.tasks.runner import (
    QueueFull,
    TaskContext,
    TaskOutcome,
    TaskRejected,
    TaskRunner,
)
from voxmatch.tasks.store import TaskRecord, TaskState, TaskStore

__all__ = [
    "QueueFull",
    "TaskContext",
    "TaskOutcome",
    "TaskRecord",
    "TaskRejected",
    "TaskRunner",
    "TaskState",
    "TaskStore",
]
