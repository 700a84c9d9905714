"""What a task kind sees of its task and what it gives back, in no interface's convention.

A kind returns domain results (numbers, base64 voiceprints, arrays) or rejects its input with
`FieldError`s naming the input by a path; each interface renders those in its own way (SPE4
JSON and error bodies in voxmatch.rest).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxmatch.tasks.store import JsonObject, TaskRecord, TaskStore

REJECTED = "rejected"
"""The `type` of a stored error of a task whose input was invalid."""
INTERNAL = "internal"
"""The `type` of a stored error of a task that failed for a reason of the server's."""


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one input of a task: where (`path`, e.g. ("file",)), a stable
    machine-readable `reason`, and a sentence for people."""

    path: tuple[str | int, ...]
    reason: str
    message: str


class TaskRejected(Exception):
    """Raised by a handler when the task's input turns out to be invalid (state `rejected`)."""

    def __init__(self, message: str, fields: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fields = tuple(fields)


def stored_error(error_type: str, message: str, fields: Sequence[FieldError] = ()) -> JsonObject:
    """The error of a finished task as the store keeps it: {"type", "message", "fields":
    [{"path", "reason", "message"}]}, `type` one of REJECTED and INTERNAL."""
    return {
        "type": error_type,
        "message": message,
        "fields": [
            {"path": list(item.path), "reason": item.reason, "message": item.message}
            for item in fields
        ],
    }


@dataclass(frozen=True)
class WorkDone:
    """How much work a task did, for the server's counters (see voxmatch.metrics)."""

    audio_seconds: float = 0.0
    speech_seconds: float = 0.0
    scores: int = 0


@dataclass
class TaskOutcome:
    result: JsonObject
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    work: WorkDone = field(default_factory=WorkDone)


class TaskContext:
    """What a handler sees of its task: parameters, inputs, and whether to stop early."""

    def __init__(
        self,
        record: TaskRecord,
        store: TaskStore,
        arrays: Mapping[str, npt.NDArray[Any]] | None,
        cancelled: threading.Event,
        stored: Callable[[], bool] | None = None,
    ) -> None:
        self.record = record
        self.params = record.params
        self._store = store
        self._arrays = arrays or {}
        self._cancelled = cancelled
        self._stored = stored

    def array(self, name: str) -> npt.NDArray[Any]:
        if name in self._arrays:
            return self._arrays[name]
        return self._store.input_array(self.record.id, name)

    def file(self, name: str) -> Path:
        return self._store.input_file(self.record.id, name)

    def result_array(
        self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike
    ) -> np.memmap[Any, np.dtype[Any]]:
        """A result array written in place in its file (see `TaskStore.open_result_array`);
        return it in the outcome's `arrays` under the same name."""
        if self._stored is not None and not self._stored():
            raise RuntimeError("the task could not be stored")
        return self._store.open_result_array(self.record.id, name, shape, dtype)

    def should_stop(self) -> bool:
        return self._cancelled.is_set()


Handler = Callable[[TaskContext], TaskOutcome]
