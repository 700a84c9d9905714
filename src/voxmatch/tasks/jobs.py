"""The task kinds: each turns a task's stored inputs into its result by calling the core."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from voxmatch.blocked_comparison import TOP_K_DTYPE as TOP_K_DTYPE
from voxmatch.blocked_comparison import TOP_K_ROWS as TOP_K_ROWS
from voxmatch.blocked_comparison import (
    BlockedComparison,
    BlockedResult,
    BlockExecutor,
    LocalExecutor,
    Side,
)
from voxmatch.calibration_profiles import calibration_from_json
from voxmatch.config import Settings
from voxmatch.models.registry import Calibration, describe
from voxmatch.scoring import Traits
from voxmatch.shared_extractor import SharedExtractor
from voxmatch.tasks.extraction_job import EXTRACTION, extraction_handler
from voxmatch.tasks.kinds import Handler, TaskContext, TaskOutcome, WorkDone
from voxmatch.tasks.store import JsonObject
from voxmatch.tasks.voiceprint_jobs import voiceprint_handlers

COMPARISON = "comparison"

IN_MEMORY_RESULT_BYTES = 8 << 20
"""Results up to this size (2,097,152 float32 scores) are computed in memory and written to
their file once, when done: a mapped result file is written whole as zeros first, then faulted
in page by page, which costs a 1000 x 1000 comparison more than the one write (the mapped file
is what keeps large results from existing twice). With the local runner only: the Ray runner's
driver process writes into the file (and a top_k result is small whatever the scores behind
it)."""


def comparison_handler(memory_budget: int, executor: BlockExecutor | None = None) -> Handler:
    """Scores of every pair of inputs `a` and `b`. Rows follow `a` unless the task's params say
    `"rows": "b"` (as SPE4's REST API lays the matrix out). With `top_k`, for each voiceprint
    of `b` the k = min(`top_k`, len(a)) best of `a`, best first: a `TOP_K_DTYPE` array of
    len(b) x k.

    The comparison runs in row blocks (voxmatch.blocked_comparison) on `executor` (in this
    thread when None, or on a Ray cluster), each block written straight into the result file
    (memory-mapped) as it is done, so the matrix exists once, and no full-size copy is made to
    transpose it (a result of at most IN_MEMORY_RESULT_BYTES is filled in memory instead, and
    written once). The matrix products are always those of `score_matrix(a, b)`, row blocks of
    `a` against all of `b`, and each block is transposed into place when rows follow `b`:
    matrix products of differently shaped inputs may round differently in the last bit, and a
    pair must score the same whichever interface asked (gRPC computes `score_matrix(a, b)`).
    A block scored on a cluster node is the same product on another CPU and BLAS build: equal
    to the local one within float32 rounding, not necessarily to the bit.
    """
    run_blocks = executor or LocalExecutor()

    def compare(context: TaskContext) -> TaskOutcome:
        calibration = _calibration(context.params)
        side_a, side_b = _side(context, "a"), _side(context, "b")
        top_k = context.params.get("top_k")
        if top_k is None:
            comparison = BlockedComparison.scores(side_a, side_b, calibration, memory_budget)
        else:
            comparison = BlockedComparison.best_of_a(
                side_a, side_b, calibration, int(top_k), memory_budget
            )

        def open_result(shape: tuple[int, int], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
            result_bytes = shape[0] * shape[1] * dtype.itemsize
            if executor is None and result_bytes <= IN_MEMORY_RESULT_BYTES:
                return np.empty(shape, dtype)
            return context.result_array("scores", shape, dtype)

        result = BlockedResult(
            comparison, open_result, transposed=context.params.get("rows") == "b"
        )
        run_blocks.run(comparison, result, context.should_stop)
        scores = result.array()
        result.release()
        work = WorkDone(scores=len(side_a) * len(side_b))
        if comparison.top_k is not None:
            described: JsonObject = {"rows_count": scores.shape[0], "k": comparison.top_k}
        else:
            described = {"rows_count": scores.shape[0], "columns_count": scores.shape[1]}
        return TaskOutcome(result=described, arrays={"scores": scores}, work=work)

    return compare


def _calibration(params: JsonObject) -> Calibration:
    """The calibration stored with the task (a named profile's, as it was when the task was
    accepted), else the model's shipped one."""
    stored = params.get("calibration")
    if stored is None:
        return describe(params["model"]).calibration
    return calibration_from_json(stored)


def _side(context: TaskContext, side: str) -> Side:
    embeddings = context.array(side)
    try:
        traits = Traits(
            context.array(f"{side}_conditions"), context.array(f"{side}_speech_lengths")
        )
    except FileNotFoundError:
        # Accepted by a version that stored embeddings only (before conditions existed),
        # and recovered by this one: its voiceprints were all version 1, wideband.
        traits = Traits.unknown(len(embeddings))
    return Side(embeddings, traits)


def build_handlers(
    *,
    memory_budget: int,
    extractor: SharedExtractor,
    max_audio_seconds: float,
    cluster: Settings | None = None,
) -> dict[str, Handler]:
    """The handler of every task kind. With `cluster` (settings whose `ray_address` is set),
    comparisons score their blocks and extractions run on that Ray cluster (imported only
    then)."""
    comparison_executor: BlockExecutor | None = None
    if cluster is not None:
        from voxmatch.ray_comparison import RayExecutor

        assert cluster.ray_address is not None
        comparison_executor = RayExecutor(cluster.ray_address)
    return {
        COMPARISON: comparison_handler(memory_budget, comparison_executor),
        EXTRACTION: extraction_handler(extractor, max_audio_seconds, cluster),
        **voiceprint_handlers(),
    }
