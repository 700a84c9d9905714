"""Response bodies of done tasks, made from their stored result files when a client asks.

A result is rendered only in the form the client asked for: a `.npy` request streams the
stored file as it is, and JSON is rendered with orjson straight from the NumPy arrays (never
through Python lists of floats). A large array is rendered slice by slice into a streamed
response, so that a 20,000 x 20,000 score matrix (1.6 GB of floats, about 4.5 GB of JSON) never
exists as one JSON text: the server's memory stays near the size of the stored result.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from voxmatch.rest.errors import detail_item
from voxmatch.tasks import REJECTED, JsonObject, TaskRecord

ResultRenderer = Callable[[JsonObject, Mapping[str, npt.NDArray[Any]]], dict[str, Any]]
"""Builds the `result` object of a done task from its stored result and arrays; values may be
NumPy arrays, which orjson renders without Python floats."""

PIECE_VALUES = 1 << 20
"""Values of an array rendered as JSON in one go (about 11 MB of JSON text for float32
scores); larger arrays are rendered in slices of this size. An array of at most this many
values (a 1000 x 1000 matrix, say) is rendered in one piece into an ordinary response."""

FILE_PIECE_BYTES = 4 << 20
"""Bytes of a stored file sent per piece; a smaller file is sent in one response body."""

Body = bytes | Iterator[bytes | memoryview]
"""A response body: whole, or in pieces to be streamed."""


def render_task(record: TaskRecord, result: dict[str, Any] | None) -> Body:
    """The GET body of a task, SPE4's `{"task", "result", "error"}`: one piece unless `result`
    holds an array of more than PIECE_VALUES values."""
    document = {
        "task": {"task_id": record.id, "state": record.state.value},
        "result": result,
        "error": None if record.error is None else render_error(record.error),
    }
    large: list[npt.NDArray[Any]] = []
    marker = f"voxmatch-array-{uuid.uuid4().hex}-"
    rendered = orjson.dumps(_set_aside(document, large, marker), option=orjson.OPT_SERIALIZE_NUMPY)
    if not large:
        return rendered
    return _pieces(rendered, large, marker.encode())


def render_error(error: JsonObject) -> JsonObject:
    """A finished task's stored error (see voxmatch.tasks.kinds.stored_error) as SPE4's error
    body: a rejected input is a `task.validation-error` whose detail locates each field."""
    if "fields" not in error:
        # Stored by a voxmatch before tasks kept neutral errors: already SPE4's error body.
        return error
    return {
        "type": "task.validation-error" if error["type"] == REJECTED else error["type"],
        "message": error["message"],
        "detail": [
            detail_item(list(item["path"]), item["message"], item["reason"])
            for item in error["fields"]
        ],
    }


def _set_aside(value: Any, large: list[npt.NDArray[Any]], marker: str) -> Any:
    """`value` with each large array replaced by a marker string, the array kept in `large`;
    memory-mapped arrays and strided views (a field of a structured array) become plain
    contiguous arrays (orjson renders only those)."""
    if isinstance(value, np.ndarray):
        if value.size <= PIECE_VALUES:
            return np.asarray(value, order="C")
        large.append(np.asarray(value))
        return f"{marker}{len(large) - 1}"
    if isinstance(value, dict):
        return {key: _set_aside(item, large, marker) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_set_aside(item, large, marker) for item in value]
    return value


def _pieces(
    rendered: bytes, large: list[npt.NDArray[Any]], marker: bytes
) -> Iterator[bytes | memoryview]:
    rest = rendered
    for index, array in enumerate(large):
        before, rest = rest.split(b'"' + marker + str(index).encode() + b'"', 1)
        yield before
        yield from _array_pieces(array)
    yield rest


def _array_pieces(array: npt.NDArray[Any]) -> Iterator[memoryview]:
    """orjson's rendering of `array` in slices along its first axis, as views of the rendered
    text (not copies): each slice renders as `[...]`, and the slices' contents joined by commas
    are the whole array's contents. A slice after the first is rendered from the row before
    it on, so that its text holds the comma that joins it to the one before: the view starts
    at that comma."""
    rows = max(1, PIECE_VALUES // max(1, array[0].size if array.ndim > 1 else 1))
    for start in range(0, len(array), rows):
        stop = min(start + rows, len(array))
        rendered = _render(array[max(0, start - 1) : stop])
        # The rendering `[row]` of the row before, but its `]`: the text up to the comma.
        skip = 0 if start == 0 else len(_render(array[start - 1 : start])) - 1
        end = len(rendered) if stop == len(array) else len(rendered) - 1
        yield memoryview(rendered)[skip:end]


def _render(array: npt.NDArray[Any]) -> bytes:
    return orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY)


def load_result_arrays(paths: Mapping[str, Path]) -> dict[str, npt.NDArray[Any]]:
    """Stored result arrays to render: small ones read, large ones memory-mapped (read by the
    rendering, piece by piece, from the page cache)."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, path in paths.items():
        large = path.stat().st_size > PIECE_VALUES * 4
        arrays[name] = np.load(path, mmap_mode="r" if large else None, allow_pickle=False)
    return arrays


def open_file(path: Path) -> tuple[Body, int]:
    """The body of a stored file, and its size. The file is opened at once: a task deleted
    later still sends the file whole. Raises FileNotFoundError if it is gone."""
    stream = path.open("rb")
    try:
        size = os.fstat(stream.fileno()).st_size
        if size > FILE_PIECE_BYTES:
            return _file_pieces(stream), size
        with stream:
            return stream.read(), size
    except BaseException:
        stream.close()
        raise


def _file_pieces(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while piece := stream.read(FILE_PIECE_BYTES):
            yield piece
