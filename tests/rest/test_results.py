"""Rendering of task results: the pieces of a streamed document are the one-shot document."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from voxmatch.rest.results import (
    FILE_PIECE_BYTES,
    PIECE_VALUES,
    load_result_arrays,
    open_file,
    render_task,
)
from voxmatch.tasks import TaskRecord, TaskState


def done_task() -> TaskRecord:
    return TaskRecord(
        id="7d0e5bb5-0a4b-4d38-9b3c-8b7c8f3f0c11",
        kind="comparison",
        state=TaskState.DONE,
        created=0.0,
        updated=0.0,
        finished=0.0,
        attempts=1,
        params={},
        result=None,
        error=None,
        request_id=None,
        correlation_id=None,
    )


def one_shot(record: TaskRecord, result: dict[str, object]) -> bytes:
    """The document as orjson renders it in one call (what the REST API always sent)."""
    return orjson.dumps(
        {"task": {"task_id": record.id, "state": "done"}, "result": result, "error": None},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def joined(body: bytes | object) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)  # type: ignore[arg-type]


def scores(values: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (10 * rng.standard_normal(values)).astype(np.float32)


@pytest.mark.parametrize("values", [1, PIECE_VALUES, PIECE_VALUES + 1, 3 * PIECE_VALUES + 17])
def test_a_vector_renders_to_the_same_bytes_whole_or_in_pieces(values: int) -> None:
    record = done_task()
    result: dict[str, object] = {
        "scores": {"rows_count": 1, "columns_count": values, "values": scores(values)}
    }
    body = render_task(record, result)
    # Up to PIECE_VALUES values the body is one piece; beyond, it is streamed.
    assert isinstance(body, bytes) == (values <= PIECE_VALUES)
    assert joined(body) == one_shot(record, result)


def test_matrices_and_several_arrays_render_to_the_same_bytes() -> None:
    record = done_task()
    rows = scores((2 * PIECE_VALUES // 192 + 3) * 192, seed=1).reshape(-1, 192)
    result = {
        "first": rows,
        "middle": ["text", 3, None, scores(5)],
        "second": scores(PIECE_VALUES + 2, seed=2),
        "after": {"nan": np.array([np.nan, 1.5], np.float32)},
    }
    body = render_task(record, result)
    assert not isinstance(body, bytes)
    pieces = list(body)
    # Bounded pieces: none much longer than the rendering of PIECE_VALUES floats.
    assert max(len(piece) for piece in pieces) < 16 * PIECE_VALUES
    assert b"".join(pieces) == one_shot(record, result)


def test_a_large_stored_array_is_mapped_and_renders_like_the_loaded_one(tmp_path: Path) -> None:
    large, small = tmp_path / "large.npy", tmp_path / "small.npy"
    np.save(large, scores(PIECE_VALUES + 5).reshape(-1, 1))
    np.save(small, scores(10))
    arrays = load_result_arrays({"large": large, "small": small})
    assert isinstance(arrays["large"], np.memmap)
    assert not isinstance(arrays["small"], np.memmap)
    record = done_task()
    # Rows of a mapped array too, as the conversion's result lists them.
    result = {
        "values": arrays["large"].reshape(-1),
        "rows": list(arrays["large"][:3]),
        "small": arrays["small"],
    }
    loaded = np.load(large)
    expected = {"values": loaded.reshape(-1), "rows": list(loaded[:3]), "small": np.load(small)}
    assert joined(render_task(record, result)) == one_shot(record, expected)


@pytest.mark.parametrize("size", [0, 1000, FILE_PIECE_BYTES, FILE_PIECE_BYTES + 1, 9_000_001])
def test_a_stored_file_is_sent_whole_and_small_ones_in_one_piece(tmp_path: Path, size: int) -> None:
    path = tmp_path / "out.scores.npy"
    content = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(content)
    body, length = open_file(path)
    assert length == size
    assert isinstance(body, bytes) == (size <= FILE_PIECE_BYTES)
    if not isinstance(body, bytes):
        path.unlink()  # an open file is sent whole even if its task is deleted meanwhile
    assert joined(body) == content


def test_a_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_file(tmp_path / "gone.npy")
