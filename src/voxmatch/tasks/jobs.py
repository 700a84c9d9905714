"""The task kinds: each turns a task's stored inputs into its result by calling the core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from voxmatch.calibration_profiles import calibration_from_json
from voxmatch.config import Settings
from voxmatch.models.registry import Calibration, describe
from voxmatch.scoring import FloatMatrix, Traits, rows_per_block, score_matrix
from voxmatch.shared_extractor import SharedExtractor
from voxmatch.tasks.extraction_job import EXTRACTION, extraction_handler
from voxmatch.tasks.kinds import Handler, TaskContext, TaskOutcome, WorkDone
from voxmatch.tasks.store import JsonObject
from voxmatch.tasks.voiceprint_jobs import voiceprint_handlers
from voxmatch.top_k import search_top_k

COMPARISON = "comparison"

TOP_K_DTYPE = np.dtype([("index", np.int32), ("score", np.float32)])
"""One match of a top_k comparison: the index of a voiceprint of `a` and its score. Indices and
scores are kept in one structured array so that the result's .npy file holds both."""

TOP_K_ROWS = 512
"""Voiceprints of `b` ranked in one `search_top_k`: its blocks then span thousands of columns
of `a`, and its running top k (rows x k) stays a few MB."""


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
        calibration = _calibration(context.params)
        inputs_a, inputs_b = _Inputs.of(context, "a"), _Inputs.of(context, "b")
        top_k = context.params.get("top_k")
        if top_k is not None:
            return _best_of_a(context, inputs_a, inputs_b, calibration, int(top_k))
        if context.params.get("rows") == "b":
            scores = _scores_on_b(context, inputs_a, inputs_b, calibration, memory_budget)
        else:
            scores = context.result_array("scores", (len(inputs_a), len(inputs_b)), np.float32)
            score_matrix(
                inputs_a.embeddings,
                inputs_b.embeddings,
                calibration,
                row_traits=inputs_a.traits,
                column_traits=inputs_b.traits,
                memory_budget=memory_budget,
                should_stop=context.should_stop,
                out=scores,
            )
        return TaskOutcome(
            result={"rows_count": scores.shape[0], "columns_count": scores.shape[1]},
            arrays={"scores": scores},
            work=WorkDone(scores=int(scores.size)),
        )

    return compare


def _calibration(params: JsonObject) -> Calibration:
    """The calibration stored with the task (a named profile's, as it was when the task was
    accepted), else the model's shipped one."""
    stored = params.get("calibration")
    if stored is None:
        return describe(params["model"]).calibration
    return calibration_from_json(stored)


@dataclass(frozen=True)
class _Inputs:
    embeddings: FloatMatrix
    traits: Traits

    @classmethod
    def of(cls, context: TaskContext, side: str) -> _Inputs:
        embeddings = context.array(side)
        try:
            traits = Traits(
                context.array(f"{side}_conditions"), context.array(f"{side}_speech_lengths")
            )
        except FileNotFoundError:
            # Accepted by a version that stored embeddings only (before conditions existed),
            # and recovered by this one: its voiceprints were all version 1, wideband.
            traits = Traits.unknown(len(embeddings))
        return cls(embeddings, traits)

    def __len__(self) -> int:
        return len(self.embeddings)


def _scores_on_b(
    context: TaskContext,
    inputs_a: _Inputs,
    inputs_b: _Inputs,
    calibration: Calibration,
    memory_budget: int,
) -> np.memmap[Any, np.dtype[Any]]:
    """score_matrix(a, b).T, computed block by block and written into the result file."""
    block_rows = rows_per_block(len(inputs_b), memory_budget)
    block = np.empty((min(block_rows, len(inputs_a)), len(inputs_b)), np.float32)
    scores: np.memmap[Any, np.dtype[Any]] | None = None
    for start in range(0, len(inputs_a), block_rows):
        stop = min(start + block_rows, len(inputs_a))
        score_matrix(
            inputs_a.embeddings[start:stop],
            inputs_b.embeddings,
            calibration,
            row_traits=inputs_a.traits[start:stop],
            column_traits=inputs_b.traits,
            memory_budget=memory_budget,
            should_stop=context.should_stop,
            out=block[: stop - start],
        )
        if scores is None:
            # Opened once the first block is computed: until the inputs are on disk there is
            # no task folder, and a small comparison (one block) need not wait for that.
            scores = context.result_array("scores", (len(inputs_b), len(inputs_a)), np.float32)
        scores[:, start:stop] = block[: stop - start].T
    assert scores is not None  # inputs hold at least one voiceprint
    return scores


def _best_of_a(
    context: TaskContext,
    inputs_a: _Inputs,
    inputs_b: _Inputs,
    calibration: Calibration,
    top_k: int,
) -> TaskOutcome:
    """For each voiceprint of `b`, the k = min(`top_k`, len(a)) best of `a`, best first: a
    `TOP_K_DTYPE` array of len(b) x k. The rows of `b` are ranked a slice at a time, and
    `search_top_k` scores each slice against `a` in blocks, so no more than a block of the
    len(b) x len(a) scores ever exists."""
    k = min(top_k, len(inputs_a))
    best: np.memmap[Any, np.dtype[Any]] | None = None
    for start in range(0, len(inputs_b), TOP_K_ROWS):
        stop = min(start + TOP_K_ROWS, len(inputs_b))
        found = search_top_k(
            inputs_b.embeddings[start:stop],
            inputs_a.embeddings,
            calibration,
            k,
            row_traits=inputs_b.traits[start:stop],
            column_traits=inputs_a.traits,
            should_stop=context.should_stop,
        )
        if best is None:
            # As in `_scores_on_b`: the task folder exists once the inputs are on disk.
            best = context.result_array("scores", (len(inputs_b), k), TOP_K_DTYPE)
        best["index"][start:stop] = found.columns
        best["score"][start:stop] = found.scores
    assert best is not None  # inputs hold at least one voiceprint
    return TaskOutcome(
        result={"rows_count": len(inputs_b), "k": k},
        arrays={"scores": best},
        work=WorkDone(scores=len(inputs_a) * len(inputs_b)),
    )


def build_handlers(
    *,
    memory_budget: int,
    extractor: SharedExtractor,
    max_audio_seconds: float,
    extraction_cluster: Settings | None = None,
) -> dict[str, Handler]:
    """`extraction_cluster`: settings whose `ray_address` names the cluster that extracts."""
    return {
        COMPARISON: comparison_handler(memory_budget),
        EXTRACTION: extraction_handler(extractor, max_audio_seconds, extraction_cluster),
        **voiceprint_handlers(),
    }
