"""The task kinds: each turns a task's stored inputs into its result by calling the core."""

from __future__ import annotations

import numpy as np

from voxmatch.extraction import SharedExtractor
from voxmatch.models.registry import describe
from voxmatch.scoring import score_matrix
from voxmatch.tasks.extraction_job import EXTRACTION, extraction_handler
from voxmatch.tasks.runner import Handler, TaskContext, TaskOutcome
from voxmatch.tasks.voiceprint_jobs import voiceprint_handlers

COMPARISON = "comparison"


def comparison_handler(memory_budget: int) -> Handler:
    """Scores with voiceprints_b as rows and voiceprints_a as columns, as SPE4 REST lays it out.

    The matrix is computed with rows on a, as gRPC and the Python API have it, and then
    transposed: matrix products of differently shaped inputs may round differently in the last
    bit, and a pair must score the same whichever interface asked.
    """

    def compare(context: TaskContext) -> TaskOutcome:
        calibration = describe(context.params["model"]).calibration
        scores_ab = score_matrix(
            context.array("a"),
            context.array("b"),
            calibration,
            memory_budget=memory_budget,
            should_stop=context.should_stop,
        )
        scores = np.ascontiguousarray(scores_ab.T)
        return TaskOutcome(
            result={"rows_count": scores.shape[0], "columns_count": scores.shape[1]},
            arrays={"scores": scores},
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
