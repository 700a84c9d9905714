"""The durable task store: task rows in SQLite (WAL), task inputs and results as files.

A task's input files are written (and renamed into place) before its row is committed, and the
row is committed before anyone learns the task id, so an accepted task survives a crash of the
process at any point. Results are written the same way before the row says `done`.

Layout inside the data folder::

    tasks.sqlite3            one row per task
    tasks/<task id>/         in.<name>.npy / in.<name>.bin (inputs), out.<name>.npy (results)
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxmatch._sqlite import immediate_transaction

JsonObject = dict[str, Any]

_ZEROS_BYTES = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    request_id TEXT,
    correlation_id TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, created);
CREATE INDEX IF NOT EXISTS tasks_by_finished ON tasks (finished) WHERE finished IS NOT NULL;
"""


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def finished(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.REJECTED)


@dataclass(frozen=True)
class TaskRecord:
    id: str
    kind: str
    state: TaskState
    created: float
    updated: float
    finished: float | None
    attempts: int
    params: JsonObject
    result: JsonObject | None
    error: JsonObject | None
    request_id: str | None
    correlation_id: str | None
    owner: str | None = None
    """The NAME of the API key that created the task; None when keys are off."""


class TaskStore:
    def __init__(self, data_dir: Path, *, fsync: bool = False) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "tasks"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir = data_dir / "staging"
        self.staging_dir.mkdir(exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            data_dir / "tasks.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode loses nothing when the process dies; FULL also survives power loss.
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self._add_owner_column()

    def _add_owner_column(self) -> None:
        """Databases made before API keys have no owner column: their tasks are nobody's."""
        columns = {str(row[1]) for row in self._db.execute("PRAGMA table_info(tasks)")}
        if "owner" not in columns:
            self._db.execute("ALTER TABLE tasks ADD COLUMN owner TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db, self._lock)

    def staging_path(self) -> Path:
        """A fresh path, on the task files' file system, to receive an upload before `create`
        moves it into its task (a rename, not a copy)."""
        return self.staging_dir / f"{uuid.uuid4()}.part"

    def task_dir(self, task_id: str) -> Path:
        return self.files_dir / task_id

    def create(
        self,
        kind: str,
        params: JsonObject,
        *,
        task_id: str,
        arrays: Mapping[str, npt.NDArray[Any]] | None = None,
        files: Mapping[str, Path] | None = None,
        request_id: str | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
    ) -> TaskRecord:
        """Persist a new pending task: its input files first, then its row."""
        folder = self.task_dir(task_id)
        folder.mkdir()
        try:
            for name, array in (arrays or {}).items():
                self._write_array(folder / f"in.{name}.npy", array)
            for name, source in (files or {}).items():
                destination = folder / f"in.{name}.bin"
                shutil.move(source, destination)
                if self._fsync:
                    _fsync_file(destination)
            if self._fsync:
                # The folder holds its files' names, and its parent the folder's own name.
                _fsync_file(folder)
                _fsync_file(self.files_dir)
            now = time.time()
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO tasks (id, kind, state, created, updated, params, request_id,"
                    " correlation_id, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        task_id,
                        kind,
                        TaskState.PENDING.value,
                        now,
                        now,
                        json.dumps(params),
                        request_id,
                        correlation_id,
                        owner,
                    ),
                )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        record = self.get(task_id)
        assert record is not None
        return record

    def get(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, kind, state, created, updated, finished, attempts, params, result,"
                " error, request_id, correlation_id, owner FROM tasks WHERE id = ?",
                (task_id,),
            ).fetchone()
        return None if row is None else _record(row)

    def input_array(self, task_id: str, name: str) -> npt.NDArray[Any]:
        return _load_array(self.task_dir(task_id) / f"in.{name}.npy")

    def input_file(self, task_id: str, name: str) -> Path:
        return self.task_dir(task_id) / f"in.{name}.bin"

    def result_array(self, task_id: str, name: str) -> npt.NDArray[Any]:
        return _load_array(self.task_dir(task_id) / f"out.{name}.npy")

    def result_array_path(self, task_id: str, name: str) -> Path:
        return self.task_dir(task_id) / f"out.{name}.npy"

    def mark_running(self, task_id: str) -> bool:
        """Move a pending task to running; False if it is gone (cancelled meanwhile)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, updated = ?, attempts = attempts + 1"
                " WHERE id = ? AND state = ?",
                (TaskState.RUNNING.value, time.time(), task_id, TaskState.PENDING.value),
            )
            return cursor.rowcount == 1

    def open_result_array(
        self, task_id: str, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike
    ) -> np.memmap[Any, np.dtype[Any]]:
        """A result array to fill in place, mapped on its own .npy file in the task's folder:
        a large result then exists once, in the file it is served from. `write_result_arrays`
        puts it in place.

        The file is written whole (zeros) before its pages are touched: its disk space is then
        reserved, so a full disk is an error here rather than a SIGBUS at the first write of a
        page of a sparse file, and its pages are in the page cache, so filling the mapping in
        any order is cheap. (Faulting the pages of a sparse or preallocated file cost the
        kernel 0.3 to 3 s of zeroing per 1.6 GB on ext4, measured; writing zeros, 0.3 to 0.5 s.)
        """
        partial = _partial(self.task_dir(task_id) / f"out.{name}.npy")
        mapped = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        zeros = bytes(_ZEROS_BYTES)
        with partial.open("r+b") as stream:
            stream.seek(mapped.offset)
            for start in range(0, mapped.nbytes, len(zeros)):
                stream.write(zeros[: mapped.nbytes - start])
        return mapped

    def write_result_arrays(self, task_id: str, arrays: Mapping[str, npt.NDArray[Any]]) -> bool:
        """Write a task's result arrays (before `mark_done`), or put in place those filled by
        `open_result_array`; False if the task is gone."""
        folder = self.task_dir(task_id)
        try:
            for name, array in arrays.items():
                path = folder / f"out.{name}.npy"
                if isinstance(array, np.memmap) and _same_path(array.filename, _partial(path)):
                    self._put_mapped_array(path, array)
                else:
                    self._write_array(path, array)
        except FileNotFoundError:
            return False  # the task was deleted while its result was being written
        return True

    def mark_done(self, task_id: str, result: JsonObject, *, keep_inputs: bool = False) -> bool:
        """Flip the row to done (its result arrays already written); False if it is gone or
        already finished. Its input files are removed, unless `keep_inputs` leaves that to a
        later `discard_inputs`."""
        return self._finish(task_id, TaskState.DONE, result=result, keep_inputs=keep_inputs)

    def mark_finished_with_error(self, task_id: str, state: TaskState, error: JsonObject) -> bool:
        if state not in (TaskState.FAILED, TaskState.REJECTED):
            raise ValueError(f"{state} is not an error state")
        return self._finish(task_id, state, error=error)

    def _finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        result: JsonObject | None = None,
        error: JsonObject | None = None,
        keep_inputs: bool = False,
    ) -> bool:
        """Move an unfinished task to `state`; False if it is gone or already finished (a
        finished task is never overwritten, whoever tries)."""
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, updated = ?, finished = ?, result = ?, error = ?"
                " WHERE id = ? AND state IN (?, ?)",
                (
                    state.value,
                    now,
                    now,
                    None if result is None else json.dumps(result),
                    None if error is None else json.dumps(error),
                    task_id,
                    TaskState.PENDING.value,
                    TaskState.RUNNING.value,
                ),
            )
            finished = cursor.rowcount == 1
        if finished and not keep_inputs:
            self.discard_inputs(task_id)
        return finished

    def requeue(self, task_id: str, *, count_attempt: bool = True) -> None:
        """Put a running task back to pending: after a crash (the attempt counts, in case the
        task is what crashes the process) or at a clean shutdown (it does not)."""
        refund = 0 if count_attempt else 1
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET state = ?, updated = ?, attempts = MAX(attempts - ?, 0)"
                " WHERE id = ? AND state = ?",
                (TaskState.PENDING.value, time.time(), refund, task_id, TaskState.RUNNING.value),
            )

    def delete(self, task_id: str) -> bool:
        with self._transaction() as db:
            removed = db.execute("DELETE FROM tasks WHERE id = ?", (task_id,)).rowcount == 1
        # Moved out of the task folders first: a worker still writing this task's result then
        # finds no folder, instead of adding a file to it while it is being removed.
        doomed = self.staging_dir / f"{task_id}.deleted"
        try:
            self.task_dir(task_id).rename(doomed)
        except FileNotFoundError:
            return removed
        shutil.rmtree(doomed, ignore_errors=True)
        return removed

    def unfinished(self) -> list[TaskRecord]:
        """Tasks pending or running, oldest first: the work to resume after a restart."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, state, created, updated, finished, attempts, params, result,"
                " error, request_id, correlation_id, owner FROM tasks WHERE state IN (?, ?)"
                " ORDER BY created",
                (TaskState.PENDING.value, TaskState.RUNNING.value),
            ).fetchall()
        return [_record(row) for row in rows]

    def expired_ids(self, finished_before: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM tasks WHERE finished IS NOT NULL AND finished < ?",
                (finished_before,),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def remove_orphan_folders(self) -> int:
        """Delete task folders with no row: left by a crash between the files and the commit."""
        with self._lock:
            known = {str(row[0]) for row in self._db.execute("SELECT id FROM tasks")}
        removed = 0
        for leftover in self.staging_dir.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)  # a deletion cut short
            else:
                leftover.unlink(missing_ok=True)
        for folder in self.files_dir.iterdir():
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        counts = {state.value: 0 for state in TaskState}
        counts.update({str(state): int(count) for state, count in rows})
        return counts

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        """Tasks by (kind, state); pairs without tasks are left out."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, state, COUNT(*) FROM tasks GROUP BY kind, state"
            ).fetchall()
        return {(str(kind), str(state)): int(count) for kind, state, count in rows}

    def check_writable(self) -> None:
        """Raise OSError or sqlite3.Error unless a task could be stored now: the data folder
        takes a new file, and the database grants its write lock."""
        probe = self.data_dir / f".writable-{uuid.uuid4()}"
        probe.write_bytes(b"")
        probe.unlink()
        with self._transaction():
            pass

    def _write_array(self, path: Path, array: npt.NDArray[Any]) -> None:
        partial = _partial(path)
        with partial.open("wb") as stream:
            np.save(stream, array, allow_pickle=False)
            if self._fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(partial, path)

    def _put_mapped_array(self, path: Path, array: np.memmap[Any, np.dtype[Any]]) -> None:
        if self._fsync:
            array.flush()
            _fsync_file(_partial(path))
        # Without fsync the written pages need no flush: a read of the file sees them, as it
        # sees the pages of a plain write, and the kernel writes them back in its own time.
        os.replace(_partial(path), path)

    def discard_inputs(self, task_id: str) -> None:
        """Remove a finished task's input files (the row says it needs them no more)."""
        folder = self.task_dir(task_id)
        for path in folder.glob("in.*"):
            path.unlink(missing_ok=True)


def _partial(path: Path) -> Path:
    """Where a file is written before it is renamed into place."""
    return path.with_name(path.name + ".partial")


def _same_path(mapped: str | Path | None, path: Path) -> bool:
    # NumPy keeps a memory map's file name as it was given: a str or a Path.
    return mapped is not None and os.path.abspath(mapped) == os.path.abspath(path)


def _load_array(path: Path) -> npt.NDArray[Any]:
    array: npt.NDArray[Any] = np.load(path, allow_pickle=False)
    return array


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _record(row: tuple[Any, ...]) -> TaskRecord:
    return TaskRecord(
        id=row[0],
        kind=row[1],
        state=TaskState(row[2]),
        created=row[3],
        updated=row[4],
        finished=row[5],
        attempts=row[6],
        params=json.loads(row[7]),
        result=None if row[8] is None else json.loads(row[8]),
        error=None if row[9] is None else json.loads(row[9]),
        request_id=row[10],
        correlation_id=row[11],
        owner=row[12],
    )
