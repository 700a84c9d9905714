"""The blocks of a comparison as tasks of a Ray cluster (docs/scale-out.md).

Imported only where a Ray address is configured. The comparison's inputs are put into the
object store once; each row block is a Ray task (`_score_block`, in this module so that every
worker imports it from the installed voxmatch) that returns its float32 scores, or for top_k
only its k best per row, and each is written into the result file as it arrives. At most a
window of blocks is in flight, so the object store holds the inputs and a window of blocks
whatever the size of the matrix. A block whose node dies is run again elsewhere by Ray
(`BLOCK_RETRIES`); a cluster that goes away fails the comparison with `ClusterUnreachable`.

The Ray driver of a comparison is a child process of the server (`_drive`), not the server
itself: a Ray driver whose local raylet dies terminates its own process at its next use of the
object store, and the server must outlive its cluster. The child maps the task's result file
and writes the blocks into it; the server only waits for it, passes a cancellation on, and turns
its end into the task's outcome.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import RayError, RayTaskError

from voxmatch import cluster
from voxmatch.blocked_comparison import BlockedComparison, BlockedResult, LocalExecutor, Side
from voxmatch.scoring import Traits
from voxmatch.stopping import StopCheck, Stopped, check

BLOCK_RETRIES = 5
"""Times Ray runs a block again after its worker or node died, before the comparison fails."""

BLOCKS_PER_CPU = 2
"""Blocks in flight per CPU of the cluster: one computing, one travelling back."""

STORE_SHARE = 4
"""The window's blocks may take at most 1/STORE_SHARE of the object store's memory."""

POLL_SECONDS = 0.2
"""How often a wait looks up whether the task was cancelled or the other side went away."""

LOCAL_BELOW_SCORES = 1 << 22
"""Comparisons of fewer scores (about 2,000 x 2,000) run in the server: a driver process and
the cluster's round trips cost about a second, and such a comparison takes tens of ms here."""

_STOP = "stop"


@ray.remote(max_retries=BLOCK_RETRIES)
def _score_block(comparison: BlockedComparison, start: int, stop: int) -> npt.NDArray[Any]:
    return comparison.score(slice(start, stop))


@dataclass(frozen=True)
class _ResultFile:
    """Where the child writes: the task's result file, as the server opened it."""

    path: str
    offset: int
    shape: tuple[int, int]
    dtype: np.dtype[Any]
    transposed: bool


class RayExecutor:
    """Runs comparison blocks on the Ray cluster at `address`, from a driver process of its own
    per comparison; small comparisons (`LOCAL_BELOW_SCORES`) run in this thread."""

    def __init__(self, address: str, window: int | None = None) -> None:
        self.address = address
        self.window = window

    def run(
        self, comparison: BlockedComparison, result: BlockedResult, should_stop: StopCheck
    ) -> None:
        if len(comparison.rows) * len(comparison.columns) < LOCAL_BELOW_SCORES:
            LocalExecutor().run(comparison, result, should_stop)
            return
        check(should_stop, "comparison")
        array = result.array()
        # The task's result file, opened by the store (results this large are never in memory).
        assert isinstance(array, np.memmap)
        assert array.filename is not None
        target = _ResultFile(
            str(array.filename), array.offset, result.shape, result.dtype, result.transposed
        )
        plain = dataclasses.replace(
            comparison, rows=_plain(comparison.rows), columns=_plain(comparison.columns)
        )
        spawning = multiprocessing.get_context("spawn")
        ours, theirs = spawning.Pipe()
        driver = spawning.Process(
            target=_drive,
            args=(theirs, self.address, plain, target, self.window),
            name="voxmatch-ray-comparison",
            daemon=True,
        )
        driver.start()
        theirs.close()
        try:
            outcome = _wait_for(driver, ours, should_stop)
        finally:
            ours.close()
            driver.join(10)
            if driver.is_alive():
                driver.kill()
                driver.join()
        if outcome is None:
            raise cluster.ClusterUnreachable(
                f"the Ray cluster at {self.address} failed during the comparison (its driver"
                " process ended); a retry may succeed once it is back"
            )
        kind, message = outcome
        if kind == "unreachable":
            raise cluster.ClusterUnreachable(message)
        if kind == "failed":
            raise RuntimeError(message)


def _wait_for(
    driver: multiprocessing.process.BaseProcess, connection: Connection, should_stop: StopCheck
) -> tuple[str, str] | None:
    """The driver's last word: ("done", ""), ("unreachable" | "failed", message), or None if
    it ended without one. Raises Stopped, once the driver stopped, if `should_stop` says so."""
    while True:
        if should_stop():
            connection.send(_STOP)
            driver.join(10)
            raise Stopped("the comparison stopped on request")
        try:
            if connection.poll(POLL_SECONDS):
                kind, message = connection.recv()
                return str(kind), str(message)
        except (EOFError, OSError):
            return None
        if not driver.is_alive() and not connection.poll():
            return None


def _drive(
    connection: Connection,
    address: str,
    comparison: BlockedComparison,
    target: _ResultFile,
    window: int | None,
) -> None:
    """The driver process: the blocks on the cluster, into the result file; its last word
    goes back through `connection`."""
    mapped = np.memmap(
        target.path, dtype=target.dtype, mode="r+", offset=target.offset, shape=target.shape
    )
    result = BlockedResult(comparison, lambda shape, dtype: mapped, transposed=target.transposed)

    def should_stop() -> bool:
        # A message (the server's stop) or the server's end of the pipe closed.
        return connection.poll()

    try:
        cluster.connect(address)
        _run_blocks(address, comparison, result, should_stop, window)
        mapped.flush()
    except Stopped:
        return
    except RayTaskError as error:
        # A block raised: the comparison's own error, not the cluster's.
        cause = error.as_instanceof_cause()  # type: ignore[no-untyped-call]
        connection.send(("failed", f"{type(cause).__name__}: {cause}"))
        return
    except (RayError, ConnectionError, cluster.ClusterUnreachable) as error:
        detail = str(error) if isinstance(error, cluster.ClusterUnreachable) else None
        connection.send(
            (
                "unreachable",
                detail
                or f"the Ray cluster at {address} failed during the comparison"
                f" ({type(error).__name__}); a retry may succeed once it is back",
            )
        )
        return
    connection.send(("done", ""))


def _run_blocks(
    address: str,
    comparison: BlockedComparison,
    result: BlockedResult,
    should_stop: StopCheck,
    window: int | None,
) -> None:
    shared = ray.put(comparison)
    in_flight = window or _window(comparison.block_bytes)
    blocks = comparison.blocks()
    pending: dict[ray.ObjectRef[Any], slice] = {}
    last_answer = time.monotonic()
    try:
        while True:
            for block in blocks:
                pending[_score_block.remote(shared, block.start, block.stop)] = block
                if len(pending) >= in_flight:
                    break
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            check(should_stop, "comparison")
            if not ready:
                if time.monotonic() - last_answer > POLL_SECONDS and not cluster.answers(address):
                    raise ConnectionError("the cluster's head does not answer")
                continue
            last_answer = time.monotonic()
            for reference in ready:
                result.write(pending.pop(reference), ray.get(reference))
    finally:
        # Cancelling asks the cluster: not when it is what failed.
        if pending and cluster.answers(address):
            for reference in pending:
                ray.cancel(reference)


def _window(block_bytes: int) -> int:
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    by_cpu = BLOCKS_PER_CPU * max(1, int(resources.get("CPU", 1)))
    store = float(resources.get("object_store_memory", 0.0))
    if store <= 0:
        return by_cpu
    return max(1, min(by_cpu, int(store / STORE_SHARE / max(1, block_bytes))))


def _plain(side: Side) -> Side:
    """Plain arrays: a memory map of the task's input files would pickle as a copy anyway."""
    return Side(
        np.asarray(side.embeddings),
        Traits(np.asarray(side.traits.conditions), np.asarray(side.traits.speech_lengths)),
    )
