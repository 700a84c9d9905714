"""Comparisons in row blocks: one plan, and executors that run its blocks here or on a cluster.

A comparison is split into row blocks of one side, each scored against the whole other side:
every block is an independent piece of work whose result (its float32 scores, or for top_k
only its k best per row) is written into the task's result file as it arrives, so no part of
the system holds the whole matrix. `LocalExecutor` runs the blocks in this thread, in order;
`voxmatch.ray_comparison.RayExecutor` runs them as tasks of a Ray cluster.

Which side is blocked is fixed by what a pair's score must not depend on. A full matrix is
always the products of `score_matrix(a-block, b)`, block starts on multiples of
`rows_per_block(len(b), memory_budget)`, as gRPC computes `score_matrix(a, b)`: the same
matrix products, hence the same bits on the same BLAS (see scoring._score_region), whatever
interface asked and whichever way its result is laid out (rows of `b` are the transpose of
each block, written into place). A top_k comparison ranks, for each voiceprint of `b`, the
best of `a`: its blocks are slices of `b` of `TOP_K_ROWS`, each searched against all of `a`.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, Self

import numpy as np
import numpy.typing as npt

from voxmatch.models.registry import Calibration
from voxmatch.scoring import FloatMatrix, Traits, rows_per_block, score_matrix
from voxmatch.stopping import StopCheck, check
from voxmatch.top_k import search_top_k

TOP_K_DTYPE = np.dtype([("index", np.int32), ("score", np.float32)])
"""One match of a top_k comparison: the index of a voiceprint of `a` and its score. Indices and
scores are kept in one structured array so that the result's .npy file holds both."""

TOP_K_ROWS = 512
"""Voiceprints of `b` ranked in one `search_top_k`: its blocks then span thousands of columns
of `a`, and its running top k (rows x k) stays a few MB."""

RELEASE_BYTES = 256 * 1024 * 1024
"""Bytes written through the result file's mapping after which its pages are unmapped from
this process (they stay in the page cache, dirty until written back): a 10 GB result would
otherwise count 10 GB in the server's resident memory by the time it is done."""

BAND_COLUMNS = 1024
"""Columns of a transposed result written at once: a 4 KB page of float32 of each row."""

ROWS_PER_WRITE = 1024
"""Rows of the result file a transposed band is written into at a time, then unmapped."""

FAULT_AROUND_BYTES = 64 * 1024
"""What the kernel maps around a faulting page of a file already in the page cache (Linux's
fault_around_bytes, 64 KB by default)."""

ResultOpener = Callable[[tuple[int, int], np.dtype[Any]], npt.NDArray[Any]]
"""Opens the result file, memory-mapped, for a result of that shape and dtype."""


@dataclass(frozen=True)
class Side:
    """The voiceprints of one side of a comparison: embeddings and what calibration needs."""

    embeddings: FloatMatrix
    traits: Traits

    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitem__(self, rows: slice) -> Side:
        return Side(self.embeddings[rows], self.traits[rows])


@dataclass(frozen=True)
class BlockedComparison:
    """Row blocks of `rows`, each scored against all of `columns`."""

    rows: Side
    columns: Side
    calibration: Calibration
    memory_budget: int
    block_rows: int
    top_k: int | None
    """None: every score of each block; else the k best columns of each row, best first."""

    @classmethod
    def scores(cls, a: Side, b: Side, calibration: Calibration, memory_budget: int) -> Self:
        """Every score of a x b, in the blocks `score_matrix(a, b)` itself makes."""
        block_rows = rows_per_block(len(b), memory_budget)
        return cls(a, b, calibration, memory_budget, block_rows, None)

    @classmethod
    def best_of_a(
        cls, a: Side, b: Side, calibration: Calibration, top_k: int, memory_budget: int
    ) -> Self:
        """For each voiceprint of `b`, its k = min(`top_k`, len(a)) best of `a`."""
        return cls(b, a, calibration, memory_budget, TOP_K_ROWS, min(top_k, len(a)))

    def blocks(self) -> Iterator[slice]:
        for start in range(0, len(self.rows), self.block_rows):
            yield slice(start, min(start + self.block_rows, len(self.rows)))

    @property
    def block_count(self) -> int:
        return -(-len(self.rows) // self.block_rows)

    @property
    def block_bytes(self) -> int:
        """What the largest block's result weighs: what travels back per block."""
        rows = min(self.block_rows, len(self.rows))
        if self.top_k is None:
            return rows * len(self.columns) * 4
        return rows * self.top_k * TOP_K_DTYPE.itemsize

    def score(
        self,
        block: slice,
        rows: Side | None = None,
        *,
        should_stop: StopCheck | None = None,
        out: FloatMatrix | None = None,
    ) -> npt.NDArray[Any]:
        """The result of one block: (rows x len(columns)) float32 scores, written into `out`
        if given, or for top_k a (rows x k) TOP_K_DTYPE array. `rows` is `self.rows[block]`
        where a caller already holds it."""
        rows = self.rows[block] if rows is None else rows
        if self.top_k is None:
            return score_matrix(
                rows.embeddings,
                self.columns.embeddings,
                self.calibration,
                row_traits=rows.traits,
                column_traits=self.columns.traits,
                memory_budget=self.memory_budget,
                should_stop=should_stop,
                out=out,
            )
        found = search_top_k(
            rows.embeddings,
            self.columns.embeddings,
            self.calibration,
            self.top_k,
            row_traits=rows.traits,
            column_traits=self.columns.traits,
            should_stop=should_stop,
        )
        best = np.empty(found.columns.shape, TOP_K_DTYPE)
        best["index"] = found.columns
        best["score"] = found.scores
        return best


class BlockedResult:
    """The result file of a comparison, filled block by block in any order.

    Full scores are laid out rows of the plan first, or transposed (`transposed`: the plan's
    rows are the file's columns, as SPE4's REST API wants rows on `b`); top_k results always
    follow the plan's rows (rows on `b`). The file is opened at the first block: until the
    task's inputs are on disk there is no task folder, and a one-block comparison need not
    wait for that before it starts computing.
    """

    def __init__(
        self, comparison: BlockedComparison, open_result: ResultOpener, *, transposed: bool
    ) -> None:
        self._open = open_result
        self.transposed = transposed and comparison.top_k is None
        rows, columns = len(comparison.rows), len(comparison.columns)
        self.dtype: np.dtype[Any] = (
            TOP_K_DTYPE if comparison.top_k is not None else np.dtype(np.float32)
        )
        if comparison.top_k is not None:
            self.shape = (rows, comparison.top_k)
        else:
            self.shape = (columns, rows) if self.transposed else (rows, columns)
        self._array: npt.NDArray[Any] | None = None
        self._unreleased = 0
        self._plan_rows = rows
        # Bands are whole blocks, so that every block falls in exactly one band.
        self._band_rows = comparison.block_rows * -(-BAND_COLUMNS // comparison.block_rows)
        self._bands: dict[int, tuple[FloatMatrix, int]] = {}
        """Bands of a transposed result not yet whole: their rows so far, and how many."""

    def array(self) -> npt.NDArray[Any]:
        if self._array is None:
            self._array = self._open(self.shape, self.dtype)
        return self._array

    def in_place(self, block: slice) -> FloatMatrix | None:
        """Where a block's full scores can be computed directly, if the layout allows it."""
        if self.transposed or self.dtype != np.float32:
            return None
        target: FloatMatrix = self.array()[block]
        return target

    def write(self, block: slice, values: npt.NDArray[Any]) -> None:
        """Put a block's result in place (a no-op for one computed `in_place`)."""
        if self.transposed:
            self._write_into_band(block, values)
            return
        array = self.array()
        if not np.shares_memory(array, values):
            array[block] = values
        self._unreleased += values.nbytes
        if self._unreleased >= RELEASE_BYTES:
            self.release()

    def _write_into_band(self, block: slice, values: npt.NDArray[Any]) -> None:
        """Transposed, a block is a strip of columns of the file: its rows of a few hundred
        bytes each would dirty every page of the file again and again (each written back to
        disk as often). Blocks are gathered into bands of `BAND_COLUMNS` or more first, and a
        band is written once it is whole: a page of the file is then dirtied once or twice."""
        index = block.start // self._band_rows
        first = index * self._band_rows
        last = min(first + self._band_rows, self._plan_rows)
        if (block.start, block.stop) == (first, last):
            self._write_columns(block, values)
            return
        band, filled = self._bands.pop(index, (None, 0))
        if band is None:
            band = np.empty((last - first, self.shape[0]), np.float32)
        band[block.start - first : block.stop - first] = values
        filled += block.stop - block.start
        if filled == last - first:
            self._write_columns(slice(first, last), band)
        else:
            self._bands[index] = (band, filled)

    def _write_columns(self, columns: slice, values: npt.NDArray[Any]) -> None:
        """values.T into columns `columns` of the file, a band of `ROWS_PER_WRITE` rows at a
        time, each band unmapped once written: a fault maps up to FAULT_AROUND_BYTES of the
        file around it, and every row of the file is touched."""
        array = self.array()
        for first in range(0, array.shape[0], ROWS_PER_WRITE):
            last = min(first + ROWS_PER_WRITE, array.shape[0])
            array[first:last, columns] = values[:, first:last].T
            self._unmap(array, first, last)

    def release(self) -> None:
        """Unmap the pages written so far from this process; the page cache keeps them."""
        self._unreleased = 0
        if self._array is not None and isinstance(self._array.base, mmap.mmap):
            self._array.base.madvise(mmap.MADV_DONTNEED)

    @staticmethod
    def _unmap(array: npt.NDArray[Any], first: int, last: int) -> None:
        """Unmap the pages of rows first..last (and those mapped around them)."""
        mapping = array.base
        if not isinstance(array, np.memmap) or not isinstance(mapping, mmap.mmap):
            return  # a small result, in memory until it is written
        row_bytes = array.strides[0]
        # np.memmap maps from the allocation boundary at or before the array's offset.
        leading = array.offset % mmap.ALLOCATIONGRANULARITY
        start = max(0, leading + first * row_bytes - FAULT_AROUND_BYTES)
        start -= start % mmap.PAGESIZE
        stop = min(len(mapping), leading + last * row_bytes + FAULT_AROUND_BYTES)
        mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


class BlockExecutor(Protocol):
    def run(
        self, comparison: BlockedComparison, result: BlockedResult, should_stop: StopCheck
    ) -> None:
        """Score every block of `comparison` and write each into `result` as it is done.
        Raises `stopping.Stopped` once `should_stop` says so."""


class LocalExecutor:
    """The blocks in order, in this thread: a small comparison is one block, scored straight
    into the result file where its layout allows."""

    def run(
        self, comparison: BlockedComparison, result: BlockedResult, should_stop: StopCheck
    ) -> None:
        buffer: FloatMatrix | None = None
        for block in comparison.blocks():
            check(should_stop, "comparison")
            target = result.in_place(block) if comparison.top_k is None else None
            if target is None and comparison.top_k is None:
                if buffer is None:
                    buffer = np.empty(
                        (min(comparison.block_rows, len(comparison.rows)), len(comparison.columns)),
                        np.float32,
                    )
                target = buffer[: block.stop - block.start]
            values = comparison.score(block, should_stop=should_stop, out=target)
            result.write(block, values)
