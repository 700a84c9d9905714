"""The early start of a task this process accepts: a worker may begin before it is on disk.

`submit` queues a task and then writes its inputs; a worker that takes the task meanwhile
starts on the in-memory inputs, and records the result only once the task is on disk. A task
whose write failed (`lost`) leaves no trace.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from voxmatch.tasks.store import TaskRecord


@dataclass
class FreshTask:
    """A task submitted by this process, held in memory until a worker takes it."""

    record: TaskRecord
    arrays: Mapping[str, npt.NDArray[Any]]
    needs_files: bool
    durable: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    taken: bool = False
    """A worker has it. Read and written under the `FreshTasks` lock, together with `durable`,
    so that exactly one side marks the row running once it exists."""

    def settled(self) -> bool:
        """Wait until the task is on disk; False if writing it failed."""
        self.durable.wait()
        return not self.lost


class FreshTasks:
    """The fresh tasks no worker has taken yet, by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, FreshTask] = {}

    def hold(
        self, record: TaskRecord, arrays: Mapping[str, npt.NDArray[Any]], *, needs_files: bool
    ) -> FreshTask:
        fresh = FreshTask(record, arrays, needs_files)
        with self._lock:
            self._held[record.id] = fresh
        return fresh

    def peek(self, task_id: str) -> FreshTask | None:
        with self._lock:
            return self._held.get(task_id)

    def take(self, task_id: str) -> tuple[FreshTask, bool] | None:
        """A worker takes the task: it and whether it is on disk yet; None if it is not fresh
        (recovered, or dropped)."""
        with self._lock:
            fresh = self._held.pop(task_id, None)
            if fresh is None:
                return None
            fresh.taken = True
            return fresh, fresh.durable.is_set()

    def drop(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    def stored(self, fresh: FreshTask) -> bool:
        """The task is on disk; True if a worker took it before (then the row is still pending
        and the caller marks it running)."""
        with self._lock:
            fresh.durable.set()
            return fresh.taken

    def lose(self, fresh: FreshTask) -> None:
        """Writing the task failed: a worker that has it records nothing."""
        fresh.lost = True
        self.drop(fresh.record.id)
        fresh.durable.set()
