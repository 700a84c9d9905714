"""A comparison too large to render in one piece, fetched as JSON and as .npy from a real server."""

from __future__ import annotations

import io

import numpy as np
import orjson

from _helpers import COMPARISON, ServerFactory, assert_scores_close, random_batch, wait_for_task
from voxmatch import compare
from voxmatch.rest.results import FILE_PIECE_BYTES, PIECE_VALUES

NPY = "application/x-npy"


def test_a_large_result_is_the_same_matrix_as_json_and_as_npy(
    server_factory: ServerFactory,
) -> None:
    # 1100 x 1000 scores: more than one JSON piece, and a .npy file sent in several pieces.
    count_a, count_b = 1000, 1100
    assert count_a * count_b > PIECE_VALUES
    assert 4 * count_a * count_b > FILE_PIECE_BYTES
    server = server_factory({"VOXMATCH_MAX_MATRIX_SIZE": str(count_a * count_b)})
    client = server.client()
    batch_a, batch_b = random_batch(count_a, seed=41), random_batch(count_b, seed=42)
    accepted = client.post(
        COMPARISON,
        content=orjson.dumps(
            {"voiceprints_a": batch_a.to_base64_list(), "voiceprints_b": batch_b.to_base64_list()}
        ),
        headers={"content-type": "application/json"},
    )
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    as_json = wait_for_task(client, location)
    assert as_json.json()["task"]["state"] == "done"

    as_npy = client.get(location, headers={"accept": NPY})
    assert as_npy.status_code == 200
    assert as_npy.headers["content-type"] == NPY
    assert as_npy.headers["x-task-state"] == "done"
    assert int(as_npy.headers["content-length"]) == len(as_npy.content)
    matrix = np.load(io.BytesIO(as_npy.content), allow_pickle=False)
    assert matrix.dtype == np.float32
    # Rows follow voiceprints_b: values[r * columns_count + c] = score(a_c, b_r).
    assert matrix.shape == (count_b, count_a)
    assert_scores_close(matrix, compare(batch_a, batch_b).T)  # server and this process

    # The streamed JSON is, byte for byte, orjson's one-shot rendering of the stored matrix.
    task_id = accepted.json()["task"]["task_id"]
    expected = orjson.dumps(
        {
            "task": {"task_id": task_id, "state": "done"},
            "result": {
                "scores": {
                    "rows_count": count_b,
                    "columns_count": count_a,
                    "values": matrix.reshape(-1),
                }
            },
            "error": None,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.content == expected
    assert client.get(location).content == expected
