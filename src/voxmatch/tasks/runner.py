"""The task runner: accepts tasks into the store and has an executor run them.

It wires the parts together: the durable store (voxmatch.tasks.store), the early start of
fresh tasks (voxmatch.tasks.fresh), restart recovery and expiry (voxmatch.tasks.recovery), the
task kinds' handlers (voxmatch.tasks.kinds), and the executor that decides where tasks run
(voxmatch.tasks.executor; the thread pool of voxmatch.tasks.pool).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt

from voxmatch.compute_slots import ComputeSlots
from voxmatch.logs import request_ids
from voxmatch.tasks.executor import Executor, QueueFull
from voxmatch.tasks.fresh import FreshTask, FreshTasks
from voxmatch.tasks.kinds import (
    INTERNAL,
    REJECTED,
    Handler,
    TaskContext,
    TaskOutcome,
    TaskRejected,
    stored_error,
)
from voxmatch.tasks.pool import ThreadPool
from voxmatch.tasks.recovery import ExpirySweeper, expire, recover
from voxmatch.tasks.store import JsonObject, TaskRecord, TaskState, TaskStore

log = logging.getLogger("voxmatch.tasks")

TaskObserver = Callable[[TaskRecord, TaskState, TaskOutcome | None], None]
"""Told of every task this process finishes: its final state, and its outcome when done."""


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
        shared with the other interfaces); they wait for it still pending. Tasks recovered
        after a restart are queued regardless of `queue_capacity`: they were already accepted.
        """
        self.store = store
        self.handlers = dict(handlers)
        self.workers = workers
        self.queue_capacity = queue_capacity
        self.task_ttl_seconds = task_ttl_seconds
        self.expiry_interval_seconds = expiry_interval_seconds
        self.retry_after_seconds = retry_after_seconds
        self._stopping = threading.Event()
        self._fresh = FreshTasks()
        self._executor: Executor = ThreadPool(
            workers=workers,
            capacity=queue_capacity,
            retry_after_seconds=retry_after_seconds,
            stopping=self._stopping,
            compute_slots=compute_slots,
            slot_kinds=slot_kinds,
        )
        self._sweeper = ExpirySweeper(expiry_interval_seconds, self.expire_now, self._stopping)
        self._finish_listeners: list[Callable[[str], None]] = []
        self._observers: list[TaskObserver] = []

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
        return self._executor.alive() and self._sweeper.alive()

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        for task_id in recover(self.store):
            self._executor.submit(task_id, bounded=False)
        self._executor.start(self._run, self._kind_of)
        self._sweeper.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Take no new work; give running tasks `timeout` seconds to finish, and put back in
        the queue, without counting it as a failed attempt, any that did not."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        unfinished = self._executor.stop(timeout)
        self._sweeper.join(max(0.0, deadline - time.monotonic()))
        for task_id in unfinished:
            self.store.requeue(task_id, count_attempt=False)
        if unfinished:
            log.info("%d running tasks will run again at the next start", len(unfinished))

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
        fresh = self._fresh.hold(record, arrays or {}, needs_files=bool(files))
        try:
            self._executor.submit(record.id)
        except QueueFull:
            self._fresh.drop(record.id)
            raise
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
            self._fresh.lose(fresh)
            self._executor.cancel(record.id)
            raise
        if self._fresh.stored(fresh):
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
        self._executor.cancel(task_id)
        self._fresh.drop(task_id)
        return self._delete(task_id)

    def queue_length(self) -> int:
        return self._executor.queue_length()

    def running_count(self) -> int:
        """Tasks in the running state. Counted in the store rather than the executor so that it
        changes in the same transaction as the state a client polls: a task seen done is never
        still counted as running while its worker thread winds down."""
        counts = self.store.counts_by_kind()
        return sum(count for (_, state), count in counts.items() if state == TaskState.RUNNING)

    def expire_now(self) -> int:
        return expire(self.store, self.task_ttl_seconds, self._delete)

    def _delete(self, task_id: str) -> bool:
        removed = self.store.delete(task_id)
        self._finished(task_id)
        return removed

    # --- the executor side ------------------------------------------------------------------

    def _kind_of(self, task_id: str) -> str | None:
        fresh = self._fresh.peek(task_id)
        record = fresh.record if fresh is not None else self.store.get(task_id)
        return None if record is None else record.kind

    def _run(self, task_id: str, cancelled: threading.Event) -> None:
        done = False
        try:
            done = self._process(task_id, cancelled)
        finally:
            self._finished(task_id)
        if done:
            # Once the listeners have answered the clients waiting for the result: unlinking
            # the inputs of a 50,000-voiceprint comparison (38 MB) took ~10 ms.
            self.store.discard_inputs(task_id)

    def _start(
        self, task_id: str, cancelled: threading.Event
    ) -> tuple[TaskContext, FreshTask | None] | None:
        """The task's context, and its in-memory form if it was submitted by this process;
        None if it is gone (cancelled while it waited)."""
        taken = self._fresh.take(task_id)
        if taken is not None:
            fresh, on_disk = taken
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

    def _process(self, task_id: str, cancelled: threading.Event) -> bool:
        """Run the task; True if it is done (its inputs then kept for `_run` to remove)."""
        started = self._start(task_id, cancelled)
        if started is None:
            return False
        context, fresh = started
        record = context.record
        with request_ids(record.request_id, record.correlation_id):
            began = time.perf_counter()
            try:
                if self._complete(context, fresh):
                    log.info(
                        "task %s done in %.1f ms", task_id, 1000 * (time.perf_counter() - began)
                    )
                    return True
            except TaskRejected as rejection:
                log.info("task %s rejected: %s", task_id, rejection.message)
                self._observe(record, TaskState.REJECTED, None)
                self._finish_with_error(
                    task_id,
                    fresh,
                    TaskState.REJECTED,
                    stored_error(REJECTED, rejection.message, rejection.fields),
                )
            except Exception as error:  # noqa: BLE001 - any failure fails the task, logged
                if context.should_stop():
                    log.info("task %s stopped: cancelled", task_id)
                    return False
                log.error("task %s failed: %s\n%s", task_id, error, traceback.format_exc().rstrip())
                self._observe(record, TaskState.FAILED, None)
                self._finish_with_error(
                    task_id,
                    fresh,
                    TaskState.FAILED,
                    stored_error(INTERNAL, f"processing failed: {type(error).__name__}: {error}"),
                )
        return False

    def _complete(self, context: TaskContext, fresh: FreshTask | None) -> bool:
        """Run the handler, store the result; False if the task went away meanwhile."""
        record = context.record
        outcome = self.handlers[record.kind](context)
        if fresh is not None and not fresh.settled():
            return False
        if outcome.arrays and not self.store.write_result_arrays(record.id, outcome.arrays):
            return False
        if context.should_stop():
            return False
        # Counted before the state is visible, so that a client that sees the task done also
        # sees it in the metrics (a task removed in between is then counted, but not shown).
        self._observe(record, TaskState.DONE, outcome)
        return self.store.mark_done(record.id, outcome.result, keep_inputs=True)

    def _finish_with_error(
        self, task_id: str, fresh: FreshTask | None, state: TaskState, error: JsonObject
    ) -> None:
        if fresh is not None and not fresh.settled():
            return
        try:
            self.store.mark_finished_with_error(task_id, state, error)
        except Exception:
            # Even the error cannot be recorded (disk full?): the task stays unfinished in the
            # store and runs again after a restart, rather than being reported wrongly.
            log.exception("task %s: cannot record its %s state", task_id, state.value)
