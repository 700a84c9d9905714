"""The blocks of a comparison as tasks of a Ray cluster (docs/scale-out.md).

Imported only where a Ray address is configured. The comparison's inputs are put into the
object store once; each row block is a Ray task (`_score_block`, in this module so that every
worker imports it from the installed voxmatch) that returns its float32 scores, or for top_k
only its k best per row, and the server writes each into the result file as it arrives. At most
`window` blocks are in flight, so the object store holds the inputs and a window of blocks
whatever the size of the matrix. A block whose node dies is run again elsewhere by Ray
(`BLOCK_RETRIES`); a cluster that goes away fails the comparison with `ClusterUnreachable`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import RayError, RayTaskError

from voxmatch import cluster
from voxmatch.blocked_comparison import BlockedComparison, BlockedResult, Side
from voxmatch.scoring import Traits
from voxmatch.stopping import StopCheck, check

BLOCK_RETRIES = 5
"""Times Ray runs a block again after its worker or node died, before the comparison fails."""

BLOCKS_PER_CPU = 2
"""Blocks in flight per CPU of the cluster: one computing, one travelling back."""

STORE_SHARE = 4
"""The window's blocks may take at most 1/STORE_SHARE of the object store's memory."""

POLL_SECONDS = 0.5
"""How often a wait for blocks looks up whether the task was cancelled or the cluster left."""


@ray.remote(max_retries=BLOCK_RETRIES)
def _score_block(comparison: BlockedComparison, start: int, stop: int) -> npt.NDArray[Any]:
    return comparison.score(slice(start, stop))


class RayExecutor:
    """Runs comparison blocks on the Ray cluster at `address` (joined at the first comparison)."""

    def __init__(self, address: str, window: int | None = None) -> None:
        self.address = address
        self.window = window

    def run(
        self, comparison: BlockedComparison, result: BlockedResult, should_stop: StopCheck
    ) -> None:
        check(should_stop, "comparison")
        cluster.connect(self.address)
        try:
            self._run(comparison, result, should_stop)
        except RayTaskError as error:
            # A block raised: the comparison's own error, not the cluster's.
            raise error.as_instanceof_cause() from None  # type: ignore[no-untyped-call]
        except (RayError, ConnectionError) as error:
            cluster.lost(self.address)
            raise cluster.ClusterUnreachable(
                f"the Ray cluster at {self.address} failed during the comparison"
                f" ({type(error).__name__}); a retry may succeed once it is back"
            ) from None

    def _run(
        self, comparison: BlockedComparison, result: BlockedResult, should_stop: StopCheck
    ) -> None:
        # Plain arrays: a memory map of the task's input files pickles as a copy anyway, and
        # the object store then holds each side once for every block of every node.
        shared = ray.put(
            dataclasses.replace(
                comparison, rows=_plain(comparison.rows), columns=_plain(comparison.columns)
            )
        )
        window = self.window or self._window(comparison.block_bytes)
        blocks = comparison.blocks()
        pending: dict[ray.ObjectRef[Any], slice] = {}
        last_answer = time.monotonic()
        try:
            while True:
                for block in blocks:
                    pending[_score_block.remote(shared, block.start, block.stop)] = block
                    if len(pending) >= window:
                        break
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                check(should_stop, "comparison")
                if not ready:
                    if time.monotonic() - last_answer > POLL_SECONDS and not cluster.answers(
                        self.address
                    ):
                        raise ConnectionError("the cluster's head does not answer")
                    continue
                last_answer = time.monotonic()
                for reference in ready:
                    block = pending.pop(reference)
                    result.write(block, ray.get(reference))
        finally:
            # Cancelling asks the cluster: not when it is what failed.
            if pending and cluster.answers(self.address):
                for reference in pending:
                    ray.cancel(reference)

    def _window(self, block_bytes: int) -> int:
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        by_cpu = BLOCKS_PER_CPU * max(1, int(resources.get("CPU", 1)))
        store = float(resources.get("object_store_memory", 0.0))
        if store <= 0:
            return by_cpu
        return max(1, min(by_cpu, int(store / STORE_SHARE / max(1, block_bytes))))


def _plain(side: Side) -> Side:
    return Side(
        np.asarray(side.embeddings),
        Traits(np.asarray(side.traits.conditions), np.asarray(side.traits.speech_lengths)),
    )
