"""The task kinds: each turns a task's stored inputs into its result by calling the core."""

from __future__ import annotations

import numpy as np

from voxmatch.models.registry import describe
from voxmatch.scoring import score_matrix
from voxmatch.tasks.extraction_job import EXTRACTION, extraction_handler
from voxmatch.tasks.runner import Handler, TaskContext, TaskOutcome, WorkDone
from voxmatch.tasks.shared_extractor import SharedExtractor
from voxmatch.tasks.voiceprint_jobs import voiceprint_handlers

COMPARISON = "comparison"


def comparison_handler(memory_budget: int) -> Handler:
    """Scores of every pair of inputs `a` and `b`. Rows follow `a` unless the task's params say
    `"rows": "b"` (as SPE4's REST API lays the matrix out).

    The matrix is always computed with rows on `a` and transposed when asked: matrix products
    of differently shaped inputs may round differently in the last bit, and a pair must score
    the same whichever interface asked.
    """

    def compare(context: TaskContext) -> TaskOutcome:
        calibration = describe(context.params["model"]).calibration
        scores = score_matrix(
            context.array("a"),
            context.array("b"),
            calibration,
            memory_budget=memory_budget,
            should_stop=context.should_stop,
        )
        if context.params.get("rows") == "b":
            scores = np.ascontiguousarray(scores.T)
        return TaskOutcome(
            result={"rows_count": scores.shape[0], "columns_count": scores.shape[1]},
            arrays={"scores": scores},
            work=WorkDone(scores=int(scores.size)),
        )

    return compare


def build_handlers(
    *, memory_budget: int, extractor: SharedExtractor, max_audio_seconds: float
) -> dict[str, Handler]:
    return {
        COMPARISON: comparison_handler(memory_budget),
        EXTRACTION: extraction_handler(extractor, max_audio_seconds),
        **voiceprint_handlers(),
    }
