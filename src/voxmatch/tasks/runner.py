"""The task runner: a bounded queue in front of a pool of worker threads.

Workers are threads because the heavy work (NumPy's matrix product, onnxruntime) releases the
GIL. The queue is bounded: when it is full, `submit` raises `QueueFull` and the interface answers
"try again later" instead of letting memory grow without limit. Tasks recovered after a restart
are queued regardless of that bound, because they were already accepted.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt

from voxmatch.logs import request_ids
from voxmatch.tasks.store import JsonObject, TaskRecord, TaskState, TaskStore

log = logging.getLogger("voxmatch.tasks")

MAX_ATTEMPTS = 3
"""A task that was running when the process died this many times is failed, not retried:
it may be what kills the process."""


class QueueFull(RuntimeError):
    def __init__(self, capacity: int, retry_after: int) -> None:
        super().__init__(f"the task queue is full ({capacity} tasks waiting)")
        self.capacity = capacity
        self.retry_after = retry_after


class TaskRejected(Exception):
    """Raised by a handler when the task's input turns out to be invalid (state `rejected`)."""

    def __init__(self, message: str, detail: list[JsonObject] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or []


@dataclass
class TaskOutcome:
    result: JsonObject
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


class TaskContext:
    """What a handler sees of its task: parameters, inputs, and whether to stop early."""

    def __init__(
        self,
        record: TaskRecord,
        store: TaskStore,
        arrays: Mapping[str, npt.NDArray[Any]] | None,
        cancelled: threading.Event,
    ) -> None:
        self.record = record
        self.params = record.params
        self._store = store
        self._arrays = arrays or {}
        self._cancelled = cancelled

    def array(self, name: str) -> npt.NDArray[Any]:
        if name in self._arrays:
            return self._arrays[name]
        return self._store.input_array(self.record.id, name)

    def file(self, name: str) -> Path:
        return self._store.input_file(self.record.id, name)

    def should_stop(self) -> bool:
        return self._cancelled.is_set()


Handler = Callable[[TaskContext], TaskOutcome]
Renderer = Callable[[TaskRecord, TaskOutcome], bytes]
"""Turns a finished task's outcome into a document stored with it (an interface's response
body, say), so that rendering happens once, in the bounded worker pool, not on every read."""


class TaskRunner:
    def __init__(
        self,
        store: TaskStore,
        handlers: Mapping[str, Handler],
        *,
        workers: int,
        queue_capacity: int,
        task_ttl_seconds: float,
        expiry_interval_seconds: float,
        retry_after_seconds: int = 1,
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self._renderers: dict[str, list[tuple[str, Renderer]]] = {}
        self.workers = workers
        self.queue_capacity = queue_capacity
        self.task_ttl_seconds = task_ttl_seconds
        self.expiry_interval_seconds = expiry_interval_seconds
        self.retry_after_seconds = retry_after_seconds
        self._queue: collections.deque[str] = collections.deque()
        self._reserved = 0
        self._condition = threading.Condition()
        self._inputs: dict[str, Mapping[str, npt.NDArray[Any]]] = {}
        self._running: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def add_renderer(self, kind: str, name: str, renderer: Renderer) -> None:
        """Store `renderer(record, outcome)` as document `name` with every done task of `kind`."""
        self._renderers.setdefault(kind, []).append((name, renderer))

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._recover()
        for number in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"voxmatch-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        sweeper = threading.Thread(target=self._sweep, name="voxmatch-expiry", daemon=True)
        sweeper.start()
        self._threads.append(sweeper)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
        for event in list(self._running.values()):
            event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _recover(self) -> None:
        removed = self.store.remove_orphan_folders()
        if removed:
            log.info("removed %d task folders left without a task by an earlier crash", removed)
        for record in self.store.unfinished():
            if record.state is TaskState.RUNNING:
                if record.attempts >= MAX_ATTEMPTS:
                    self.store.mark_finished_with_error(
                        record.id,
                        TaskState.FAILED,
                        _internal_error(
                            f"the task was interrupted {record.attempts} times by a restart of"
                            " the server and is not retried again"
                        ),
                    )
                    continue
                self.store.requeue(record.id)
            self._queue.append(record.id)
        if self._queue:
            log.info("resuming %d accepted tasks after a restart", len(self._queue))

    # --- the interface side -----------------------------------------------------------------

    def submit(
        self,
        kind: str,
        params: JsonObject,
        *,
        arrays: Mapping[str, npt.NDArray[Any]] | None = None,
        files: Mapping[str, Path] | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
    ) -> TaskRecord:
        """Persist and queue a task; raises QueueFull without persisting anything."""
        if kind not in self.handlers:
            raise ValueError(f"no handler for task kind {kind!r}")
        with self._condition:
            if len(self._queue) + self._reserved >= self.queue_capacity:
                raise QueueFull(self.queue_capacity, self.retry_after_seconds)
            self._reserved += 1
        try:
            record = self.store.create(
                kind,
                params,
                arrays=arrays,
                files=files,
                request_id=request_id,
                correlation_id=correlation_id,
            )
        except BaseException:
            with self._condition:
                self._reserved -= 1
            raise
        with self._condition:
            self._reserved -= 1
            if arrays:
                self._inputs[record.id] = arrays
            self._queue.append(record.id)
            self._condition.notify()
        log.info("accepted %s task %s", kind, record.id)
        return record

    def get(self, task_id: str) -> TaskRecord | None:
        """The task, or None when unknown or expired (an expired task is deleted on sight)."""
        record = self.store.get(task_id)
        if record is None:
            return None
        if record.finished is not None and record.finished + self.task_ttl_seconds < time.time():
            self.store.delete(task_id)
            return None
        return record

    def cancel(self, task_id: str) -> bool:
        """Stop the task if it has not finished, and remove it with its files."""
        with self._condition:
            with contextlib.suppress(ValueError):
                self._queue.remove(task_id)
            self._inputs.pop(task_id, None)
            running = self._running.get(task_id)
        if running is not None:
            running.set()
        return self.store.delete(task_id)

    def queue_length(self) -> int:
        with self._condition:
            return len(self._queue)

    def running_count(self) -> int:
        with self._condition:
            return len(self._running)

    # --- the worker side --------------------------------------------------------------------

    def _next(self) -> str | None:
        with self._condition:
            while not self._queue and not self._stopping.is_set():
                self._condition.wait()
            if self._stopping.is_set():
                return None
            task_id = self._queue.popleft()
            self._running[task_id] = threading.Event()
            return task_id

    def _work(self) -> None:
        while (task_id := self._next()) is not None:
            try:
                self._run(task_id)
            except Exception:
                log.exception("task %s: unexpected error in the runner", task_id)
            finally:
                with self._condition:
                    self._running.pop(task_id, None)
                    self._inputs.pop(task_id, None)

    def _run(self, task_id: str) -> None:
        if not self.store.mark_running(task_id):
            return  # cancelled while it waited
        record = self.store.get(task_id)
        if record is None:
            return
        with self._condition:
            cancelled = self._running[task_id]
            arrays = self._inputs.pop(task_id, None)
        context = TaskContext(record, self.store, arrays, cancelled)
        with request_ids(record.request_id, record.correlation_id):
            started = time.perf_counter()
            try:
                outcome = self.handlers[record.kind](context)
                documents = {
                    name: render(record, outcome)
                    for name, render in self._renderers.get(record.kind, [])
                }
            except TaskRejected as rejection:
                log.info("task %s rejected: %s", task_id, rejection.message)
                self.store.mark_finished_with_error(
                    task_id,
                    TaskState.REJECTED,
                    {
                        "type": "task.validation-error",
                        "message": rejection.message,
                        "detail": rejection.detail,
                    },
                )
                return
            except Exception as error:
                if cancelled.is_set():
                    log.info("task %s stopped: cancelled", task_id)
                    return
                log.error("task %s failed: %s\n%s", task_id, error, traceback.format_exc().rstrip())
                self.store.mark_finished_with_error(
                    task_id,
                    TaskState.FAILED,
                    _internal_error(f"processing failed: {type(error).__name__}: {error}"),
                )
                return
            if cancelled.is_set():
                return
            if self.store.mark_done(task_id, outcome.result, outcome.arrays, documents):
                log.info("task %s done in %.1f ms", task_id, 1000 * (time.perf_counter() - started))

    def _sweep(self) -> None:
        while not self._stopping.wait(self.expiry_interval_seconds):
            try:
                self.expire_now()
            except Exception:
                log.exception("sweeping expired tasks failed")

    def expire_now(self) -> int:
        expired = self.store.expired_ids(time.time() - self.task_ttl_seconds)
        for task_id in expired:
            self.store.delete(task_id)
        if expired:
            log.info("deleted %d expired tasks", len(expired))
        return len(expired)


def _internal_error(message: str) -> JsonObject:
    return {"type": "internal", "message": message, "detail": []}
