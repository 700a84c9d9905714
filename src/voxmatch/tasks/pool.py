"""The thread pool executor: a bounded queue in front of worker threads of this process.

Workers are threads because the heavy work (NumPy's matrix product, onnxruntime) releases the
GIL. The queue is bounded: when it is full, `submit` raises `QueueFull` and the interface answers
"try again later" instead of letting memory grow without limit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Collection, Iterator

from voxmatch.compute_slots import ComputeSlots, ComputeWaitStopped
from voxmatch.tasks.executor import KindOf, QueueFull, TaskWork

log = logging.getLogger("voxmatch.tasks")


class ThreadPool:
    """Runs each task on one of `workers` threads. Tasks of `slot_kinds` run only while they
    hold one of `compute_slots` (the CPU budget shared with the other interfaces); they wait
    for it still pending."""

    def __init__(
        self,
        *,
        workers: int,
        capacity: int,
        retry_after_seconds: int,
        stopping: threading.Event,
        compute_slots: ComputeSlots | None = None,
        slot_kinds: Collection[str] = (),
    ) -> None:
        self._workers = workers
        self._capacity = capacity
        self._retry_after_seconds = retry_after_seconds
        self._stopping = stopping
        self._compute_slots = compute_slots
        self._slot_kinds = frozenset(slot_kinds)
        self._queue: collections.deque[str] = collections.deque()
        self._condition = threading.Condition()
        self._running: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._awaiting_slot = 0
        """Tasks taken from the queue that wait for a compute slot: still pending."""

    def start(self, work: TaskWork, kind_of: KindOf) -> None:
        for number in range(self._workers):
            thread = threading.Thread(
                target=self._serve,
                args=(work, kind_of),
                name=f"voxmatch-worker-{number}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, task_id: str, *, bounded: bool = True) -> None:
        with self._condition:
            if bounded and len(self._queue) >= self._capacity:
                raise QueueFull(self._capacity, self._retry_after_seconds)
            self._queue.append(task_id)
            self._condition.notify()

    def cancel(self, task_id: str) -> None:
        with self._condition:
            with contextlib.suppress(ValueError):
                self._queue.remove(task_id)
            running = self._running.get(task_id)
        if running is not None:
            running.set()

    def stop(self, timeout: float) -> list[str]:
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._condition:
            return list(self._running)

    def alive(self) -> bool:
        return (
            bool(self._threads)
            and not self._stopping.is_set()
            and all(thread.is_alive() for thread in self._threads)
        )

    def queue_length(self) -> int:
        with self._condition:
            return len(self._queue) + self._awaiting_slot

    def _next(self) -> tuple[str, threading.Event] | None:
        with self._condition:
            while not self._queue and not self._stopping.is_set():
                self._condition.wait()
            if self._stopping.is_set():
                return None
            task_id = self._queue.popleft()
            cancelled = self._running[task_id] = threading.Event()
            return task_id, cancelled

    def _serve(self, work: TaskWork, kind_of: KindOf) -> None:
        while (taken := self._next()) is not None:
            task_id, cancelled = taken
            try:
                with self._compute_slot(kind_of(task_id), cancelled):
                    work(task_id, cancelled)
            except ComputeWaitStopped:
                # Cancelled while it waited (and so already removed), or the pool is stopping
                # (the task is still pending on disk and runs at the next start).
                log.debug("task %s gave up waiting for a compute slot", task_id)
            except Exception:
                log.exception("task %s: unexpected error in the runner", task_id)
            finally:
                with self._condition:
                    self._running.pop(task_id, None)

    @contextlib.contextmanager
    def _compute_slot(self, kind: str | None, cancelled: threading.Event) -> Iterator[None]:
        """Hold a compute slot while the task runs, if its kind needs one."""
        if self._compute_slots is None or kind not in self._slot_kinds:
            yield
            return
        with self._condition:
            self._awaiting_slot += 1
        try:
            self._compute_slots.acquire(lambda: cancelled.is_set() or self._stopping.is_set())
        finally:
            with self._condition:
                self._awaiting_slot -= 1
        try:
            yield
        finally:
            self._compute_slots.release()
