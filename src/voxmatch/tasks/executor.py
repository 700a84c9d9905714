"""What runs tasks: the interface between the task runner and the place its tasks execute.

The runner keeps the store, the early-start protocol and the task kinds; an executor only
decides when and where each accepted task runs (voxmatch.tasks.pool runs them on threads of
this process). Another executor replaces the pool without touching the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

TaskWork = Callable[[str, threading.Event], None]
"""Runs one task to its end: (task id, the event set when the task is cancelled)."""

KindOf = Callable[[str], str | None]
"""The kind of a task by its id; None if it is gone."""


class QueueFull(RuntimeError):
    def __init__(self, capacity: int, retry_after: int) -> None:
        super().__init__(f"the task queue is full ({capacity} tasks waiting)")
        self.capacity = capacity
        self.retry_after = retry_after


class Executor(Protocol):
    def start(self, work: TaskWork, kind_of: KindOf) -> None:
        """Begin running queued tasks, each by calling `work`."""

    def submit(self, task_id: str, *, bounded: bool = True) -> None:
        """Queue a task. Raises QueueFull when `bounded` and the queue is full; tasks already
        accepted (recovered after a restart) are queued regardless."""

    def cancel(self, task_id: str) -> None:
        """Take the task out of the queue, or set its cancellation event if it runs."""

    def stop(self, timeout: float) -> list[str]:
        """Take no new work, give running tasks `timeout` seconds; the ids of those that did
        not finish."""

    def alive(self) -> bool:
        """Whether it is started, not stopping, and able to run tasks."""

    def queue_length(self) -> int:
        """Tasks accepted and not yet running."""
