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
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt

from voxmatch.compute_slots import ComputeSlots, ComputeWaitStopped
from voxmatch.logs import request_ids
from voxmatch.tasks.kinds import (
    INTERNAL,
    REJECTED,
    Handler,
    TaskContext,
    TaskOutcome,
    TaskRejected,
    stored_error,
)
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


TaskObserver = Callable[[TaskRecord, TaskState, TaskOutcome | None], None]
"""Told of every task this process finishes: its final state, and its outcome when done."""


@dataclass
class _Fresh:
    """A task submitted by this process, held in memory until a worker takes it.

    A worker may start on its in-memory inputs while `submit` is still writing them to disk;
    it only records the result once `durable` is set, so a task is never finished before it
    exists on disk, and a task whose write failed (`lost`) leaves no trace.
    """

    record: TaskRecord
    arrays: Mapping[str, npt.NDArray[Any]]
    needs_files: bool
    durable: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    taken: bool = False
    """A worker has it. Read and written under the runner's condition, together with
    `durable`, so that exactly one side marks the row running once it exists."""

    def settled(self) -> bool:
        """Wait until the task is on disk; False if writing it failed."""
        self.durable.wait()
        return not self.lost


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
        compute_slots: ComputeSlots | None = None,
        slot_kinds: Collection[str] = (),
    ) -> None:
        """Tasks of `slot_kinds` run only while they hold one of `compute_slots` (the CPU budget
        shared with the other interfaces); they wait for it still pending."""
        self.store = store
        self.handlers = dict(handlers)
        self.workers = workers
        self.queue_capacity = queue_capacity
        self.task_ttl_seconds = task_ttl_seconds
        self.expiry_interval_seconds = expiry_interval_seconds
        self.retry_after_seconds = retry_after_seconds
        self._queue: collections.deque[str] = collections.deque()
        self._condition = threading.Condition()
        self._fresh: dict[str, _Fresh] = {}
        self._running: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._finish_listeners: list[Callable[[str], None]] = []
        self._observers: list[TaskObserver] = []
        self._compute_slots = compute_slots
        self._slot_kinds = frozenset(slot_kinds)
        self._awaiting_slot = 0
        """Tasks taken from the queue that wait for a compute slot: still pending."""

    def add_finish_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(task_id)` (from a worker thread) whenever a task finishes or is
        removed, so that an interface can answer a waiting client at once."""
        self._finish_listeners.append(listener)

    def _finished(self, task_id: str) -> None:
        for listener in self._finish_listeners:
            try:
                listener(task_id)
            except Exception:
                log.exception("a task-finished listener failed")

    def add_task_observer(self, observer: TaskObserver) -> None:
        """Call `observer` (from a worker thread) whenever a task is finished by this process."""
        self._observers.append(observer)

    def _observe(self, record: TaskRecord, state: TaskState, outcome: TaskOutcome | None) -> None:
        for observer in self._observers:
            try:
                observer(record, state, outcome)
            except Exception:
                log.exception("a task observer failed")

    def workers_alive(self) -> bool:
        """Whether the runner is started and not stopping, and its threads all run."""
        return (
            bool(self._threads)
            and not self._stopping.is_set()
            and all(thread.is_alive() for thread in self._threads)
        )

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
        """Take no new work; give running tasks `timeout` seconds to finish, and put back in
        the queue, without counting it as a failed attempt, any that did not."""
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._condition:
            unfinished = list(self._running)
        for task_id in unfinished:
            self.store.requeue(task_id, count_attempt=False)
        if unfinished:
            log.info("%d running tasks will run again at the next start", len(unfinished))

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
                        stored_error(
                            INTERNAL,
                            f"the task was interrupted {record.attempts} times by a restart of"
                            " the server and is not retried again",
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
        owner: str | None = None,
    ) -> TaskRecord:
        """Persist and queue a task; the returned task is on disk. Raises QueueFull (and
        persists nothing) when the queue is full. `owner` names the API key it belongs to."""
        if kind not in self.handlers:
            raise ValueError(f"no handler for task kind {kind!r}")
        now = time.time()
        record = TaskRecord(
            id=str(uuid.uuid4()),
            kind=kind,
            state=TaskState.PENDING,
            created=now,
            updated=now,
            finished=None,
            attempts=0,
            params=params,
            result=None,
            error=None,
            request_id=request_id,
            correlation_id=correlation_id,
            owner=owner,
        )
        fresh = _Fresh(record, arrays or {}, needs_files=bool(files))
        with self._condition:
            if len(self._queue) >= self.queue_capacity:
                raise QueueFull(self.queue_capacity, self.retry_after_seconds)
            self._queue.append(record.id)
            self._fresh[record.id] = fresh
            self._condition.notify()
        try:
            stored = self.store.create(
                kind,
                params,
                task_id=record.id,
                arrays=arrays,
                files=files,
                request_id=request_id,
                correlation_id=correlation_id,
                owner=owner,
            )
        except BaseException:
            fresh.lost = True
            with self._condition:
                with contextlib.suppress(ValueError):
                    self._queue.remove(record.id)
                self._fresh.pop(record.id, None)
            fresh.durable.set()
            raise
        with self._condition:
            fresh.durable.set()
            taken = fresh.taken
        if taken:
            # A worker started on the in-memory inputs before the row existed.
            self.store.mark_running(record.id)
        log.info("accepted %s task %s", kind, record.id)
        return stored

    def get(self, task_id: str) -> TaskRecord | None:
        """The task, or None when unknown or expired (the sweeper deletes expired tasks)."""
        record = self.store.get(task_id)
        if record is None:
            return None
        if record.finished is not None and record.finished + self.task_ttl_seconds < time.time():
            return None
        return record

    def cancel(self, task_id: str) -> bool:
        """Stop the task if it has not finished, and remove it with its files."""
        with self._condition:
            with contextlib.suppress(ValueError):
                self._queue.remove(task_id)
            self._fresh.pop(task_id, None)
            running = self._running.get(task_id)
        if running is not None:
            running.set()
        return self._delete(task_id)

    def queue_length(self) -> int:
        with self._condition:
            return len(self._queue) + self._awaiting_slot

    def running_count(self) -> int:
        with self._condition:
            return len(self._running) - self._awaiting_slot

    def _delete(self, task_id: str) -> bool:
        removed = self.store.delete(task_id)
        self._finished(task_id)
        return removed

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
                with self._compute_slot(task_id):
                    self._run(task_id)
            except ComputeWaitStopped:
                # Cancelled while it waited (and so already removed), or the runner is stopping
                # (the task is still pending on disk and runs at the next start).
                log.debug("task %s gave up waiting for a compute slot", task_id)
            except Exception:
                log.exception("task %s: unexpected error in the runner", task_id)
            finally:
                with self._condition:
                    self._running.pop(task_id, None)

    @contextlib.contextmanager
    def _compute_slot(self, task_id: str) -> Iterator[None]:
        """Hold a compute slot while the task runs, if its kind needs one."""
        with self._condition:
            fresh = self._fresh.get(task_id)
            cancelled = self._running[task_id]
        record = fresh.record if fresh is not None else self.store.get(task_id)
        if self._compute_slots is None or record is None or record.kind not in self._slot_kinds:
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

    def _start(self, task_id: str) -> tuple[TaskContext, _Fresh | None] | None:
        """The task's context, and its in-memory form if it was submitted by this process;
        None if it is gone (cancelled while it waited)."""
        with self._condition:
            fresh = self._fresh.pop(task_id, None)
            cancelled = self._running[task_id]
            if fresh is not None:
                fresh.taken = True
                on_disk = fresh.durable.is_set()
        if fresh is not None:
            if fresh.needs_files and not fresh.settled():
                return None
            if on_disk and not self.store.mark_running(task_id):
                return None
            # Not yet on disk: work on the in-memory inputs now; `submit` marks the row running
            # once it exists, and the result is recorded only after that.
            return (
                TaskContext(fresh.record, self.store, fresh.arrays, cancelled, fresh.settled),
                fresh,
            )
        if not self.store.mark_running(task_id):
            return None
        record = self.store.get(task_id)
        if record is None:
            return None
        return TaskContext(record, self.store, None, cancelled), None

    def _run(self, task_id: str) -> None:
        try:
            self._process(task_id)
        finally:
            self._finished(task_id)

    def _process(self, task_id: str) -> None:
        started = self._start(task_id)
        if started is None:
            return
        context, fresh = started
        record = context.record
        with request_ids(record.request_id, record.correlation_id):
            began = time.perf_counter()
            try:
                if self._complete(context, fresh):
                    log.info(
                        "task %s done in %.1f ms", task_id, 1000 * (time.perf_counter() - began)
                    )
            except TaskRejected as rejection:
                log.info("task %s rejected: %s", task_id, rejection.message)
                self._finish_with_error(
                    task_id,
                    fresh,
                    TaskState.REJECTED,
                    stored_error(REJECTED, rejection.message, rejection.fields),
                )
                self._observe(record, TaskState.REJECTED, None)
            except Exception as error:
                if context.should_stop():
                    log.info("task %s stopped: cancelled", task_id)
                    return
                log.error("task %s failed: %s\n%s", task_id, error, traceback.format_exc().rstrip())
                self._finish_with_error(
                    task_id,
                    fresh,
                    TaskState.FAILED,
                    stored_error(INTERNAL, f"processing failed: {type(error).__name__}: {error}"),
                )
                self._observe(record, TaskState.FAILED, None)

    def _complete(self, context: TaskContext, fresh: _Fresh | None) -> bool:
        """Run the handler, store the result; False if the task went away meanwhile."""
        record = context.record
        outcome = self.handlers[record.kind](context)
        if fresh is not None and not fresh.settled():
            return False
        if outcome.arrays and not self.store.write_result_arrays(record.id, outcome.arrays):
            return False
        if context.should_stop() or not self.store.mark_done(record.id, outcome.result):
            return False
        self._observe(record, TaskState.DONE, outcome)
        return True

    def _finish_with_error(
        self, task_id: str, fresh: _Fresh | None, state: TaskState, error: JsonObject
    ) -> None:
        if fresh is not None and not fresh.settled():
            return
        try:
            self.store.mark_finished_with_error(task_id, state, error)
        except Exception:
            # Even the error cannot be recorded (disk full?): the task stays unfinished in the
            # store and runs again after a restart, rather than being reported wrongly.
            log.exception("task %s: cannot record its %s state", task_id, state.value)

    def _sweep(self) -> None:
        while not self._stopping.wait(self.expiry_interval_seconds):
            try:
                self.expire_now()
            except Exception:
                log.exception("sweeping expired tasks failed")

    def expire_now(self) -> int:
        expired = self.store.expired_ids(time.time() - self.task_ttl_seconds)
        for task_id in expired:
            self._delete(task_id)
        if expired:
            log.info("deleted %d expired tasks", len(expired))
        return len(expired)
