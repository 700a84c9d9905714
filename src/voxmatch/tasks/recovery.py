"""Tasks across restarts and over time: resuming accepted work, and deleting expired tasks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from voxmatch.tasks.kinds import INTERNAL, stored_error
from voxmatch.tasks.store import TaskState, TaskStore

log = logging.getLogger("voxmatch.tasks")

MAX_ATTEMPTS = 3
"""A task that was running when the process died this many times is failed, not retried:
it may be what kills the process."""


def recover(store: TaskStore) -> list[str]:
    """The tasks to run again after a restart, oldest first; fails those interrupted too often
    and removes what an earlier crash left without a task."""
    removed = store.remove_orphan_folders()
    if removed:
        log.info("removed %d task folders left without a task by an earlier crash", removed)
    resumed: list[str] = []
    for record in store.unfinished():
        if record.state is TaskState.RUNNING:
            if record.attempts >= MAX_ATTEMPTS:
                store.mark_finished_with_error(
                    record.id,
                    TaskState.FAILED,
                    stored_error(
                        INTERNAL,
                        f"the task was interrupted {record.attempts} times by a restart of"
                        " the server and is not retried again",
                    ),
                )
                continue
            store.requeue(record.id)
        resumed.append(record.id)
    if resumed:
        log.info("resuming %d accepted tasks after a restart", len(resumed))
    return resumed


def expire(store: TaskStore, ttl_seconds: float, delete: Callable[[str], object]) -> int:
    """Delete (with `delete`) the tasks finished more than `ttl_seconds` ago; how many."""
    expired = store.expired_ids(time.time() - ttl_seconds)
    for task_id in expired:
        delete(task_id)
    if expired:
        log.info("deleted %d expired tasks", len(expired))
    return len(expired)


class ExpirySweeper:
    """A thread that calls `sweep` every `interval_seconds` until `stopping` is set."""

    def __init__(
        self, interval_seconds: float, sweep: Callable[[], int], stopping: threading.Event
    ) -> None:
        self._interval_seconds = interval_seconds
        self._sweep = sweep
        self._stopping = stopping
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="voxmatch-expiry", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_seconds):
            try:
                self._sweep()
            except Exception:
                log.exception("sweeping expired tasks failed")
