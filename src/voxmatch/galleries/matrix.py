"""A gallery's embeddings: one float32 file of rows, appended to and read through a memory map.

Rows are only ever appended: a speaker whose voiceprint changes gets a new row, and the old one
becomes garbage that SQLite no longer points to. A row is written (and flushed, with `fsync`)
before the SQLite commit that points to it, so a row the database names is always complete on
disk; rows past the last one the database names are leftovers of an enrolment that was never
acknowledged, and the next append overwrites them. Compaction copies the live rows into a file
of the next generation; the database commit that switches generations is the moment it counts.

The file grows in steps (its capacity doubles), so an append does not remap it each time. A
search holds on to the map it started with: growing or compacting makes a new map, never
changes the rows an old one shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

MIN_CAPACITY = 1024
"""Rows a new file has room for."""


def matrix_path(folder: Path, generation: int) -> Path:
    return folder / f"embeddings-{generation}.f32"


class EmbeddingFile:
    """The open embeddings file of one generation, with its current memory map."""

    def __init__(self, path: Path, dim: int, *, fsync: bool) -> None:
        self.path = path
        self.dim = dim
        self.row_bytes = 4 * dim
        self._fsync = fsync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        self.capacity = max(MIN_CAPACITY, size // self.row_bytes)
        if size < self.capacity * self.row_bytes:
            os.ftruncate(self._fd, self.capacity * self.row_bytes)
        self.rows = self._map()

    def _map(self) -> npt.NDArray[np.float32]:
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.capacity, self.dim))

    def write(self, start: int, rows: npt.NDArray[np.float32]) -> bool:
        """Write `rows` from row `start` on, growing the file if need be; flush them with
        `fsync`. True when the map changed (the caller publishes the new `rows`)."""
        grown = False
        needed = start + len(rows)
        if needed > self.capacity:
            capacity = self.capacity
            while capacity < needed:
                capacity *= 2
            os.ftruncate(self._fd, capacity * self.row_bytes)
            self.capacity = capacity
            grown = True
        data = memoryview(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        written = 0
        offset = start * self.row_bytes
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], offset + written)
        if self._fsync:
            os.fdatasync(self._fd)
        if grown:
            self.rows = self._map()
        return grown

    def close(self) -> None:
        os.close(self._fd)


def write_compacted(
    source: npt.NDArray[np.float32], keep: npt.NDArray[np.intp], path: Path, *, fsync: bool
) -> None:
    """A new embeddings file holding rows `keep` of `source`, in that order."""
    dim = source.shape[1]
    partial = path.with_suffix(".partial")
    with partial.open("wb") as stream:
        for start in range(0, len(keep), 65536):
            stream.write(np.ascontiguousarray(source[keep[start : start + 65536]]).tobytes())
        padding = max(MIN_CAPACITY - len(keep), 0)
        stream.write(bytes(4 * dim * padding))
        if fsync:
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(partial, path)
