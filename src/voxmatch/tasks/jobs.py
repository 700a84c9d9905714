"""The task kinds: each turns a task's stored inputs into its result by calling the core."""

from __future__ import annotations

import numpy as np

from voxmatch.models.registry import describe
from voxmatch.scoring import rows_per_block, score_matrix
from voxmatch.tasks.extraction_job import EXTRACTION, extraction_handler
from voxmatch.tasks.runner import Handler, TaskContext, TaskOutcome
from voxmatch.tasks.shared_extractor import SharedExtractor
from voxmatch.tasks.voiceprint_jobs import voiceprint_handlers

COMPARISON = "comparison"


def comparison_handler(memory_budget: int) -> Handler:
    """Scores of every pair of inputs `a` and `b`. Rows follow `a` unless the task's params say
    `"rows": "b"` (as SPE4's REST API lays the matrix out).

    The scores are written straight into the result file (memory-mapped), so the matrix exists
    once, and no full-size copy is made to transpose it. The matrix products are always those
    of `score_matrix(a, b)`, row blocks of `a` against all of `b`, and each block is
    transposed into place when rows follow `b`: matrix products of differently shaped inputs
    may round differently in the last bit, and a pair must score the same whichever interface
    asked (gRPC computes `score_matrix(a, b)`).
    """

    def compare(context: TaskContext) -> TaskOutcome:
        calibration = describe(context.params["model"]).calibration
        inputs_a, inputs_b = context.array("a"), context.array("b")
        if context.params.get("rows") == "b":
            scores = context.result_array("scores", (len(inputs_b), len(inputs_a)), np.float32)
            # Faulting a fresh file mapping in column stripes costs several times more than
            # in file order (measured: 3.2 s against 0.5 s for 20,000 x 20,000).
            scores.reshape(-1)[:] = 0
            block_rows = rows_per_block(len(inputs_b), memory_budget)
            block = np.empty((min(block_rows, len(inputs_a)), len(inputs_b)), np.float32)
            for start in range(0, len(inputs_a), block_rows):
                stop = min(start + block_rows, len(inputs_a))
                score_matrix(
                    inputs_a[start:stop],
                    inputs_b,
                    calibration,
                    memory_budget=memory_budget,
                    should_stop=context.should_stop,
                    out=block[: stop - start],
                )
                scores[:, start:stop] = block[: stop - start].T
        else:
            scores = context.result_array("scores", (len(inputs_a), len(inputs_b)), np.float32)
            score_matrix(
                inputs_a,
                inputs_b,
                calibration,
                memory_budget=memory_budget,
                should_stop=context.should_stop,
                out=scores,
            )
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
