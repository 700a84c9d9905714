"""Asynchronous work: durable task store, worker pool, and the task kinds voxmatch runs.

Interfaces import from here only, never from the submodules.
"""

from voxmatch.tasks.executor import QueueFull
from voxmatch.tasks.extraction_job import EXTRACTION
from voxmatch.tasks.jobs import COMPARISON
from voxmatch.tasks.kinds import (
    INTERNAL,
    REJECTED,
    FieldError,
    TaskContext,
    TaskOutcome,
    TaskRejected,
    WorkDone,
)
from voxmatch.tasks.runner import TaskRunner
from voxmatch.tasks.store import JsonObject, TaskRecord, TaskState, TaskStore
from voxmatch.tasks.voiceprint_jobs import CONVERSION, MERGING, MERGING_CONDITION_ARRAYS

__all__ = [
    "COMPARISON",
    "CONVERSION",
    "EXTRACTION",
    "INTERNAL",
    "MERGING",
    "MERGING_CONDITION_ARRAYS",
    "REJECTED",
    "FieldError",
    "JsonObject",
    "QueueFull",
    "TaskContext",
    "TaskOutcome",
    "TaskRecord",
    "TaskRejected",
    "TaskRunner",
    "TaskState",
    "TaskStore",
    "WorkDone",
]
