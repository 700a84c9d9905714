"""JSON request bodies are gathered whole by the server's HTTP protocol before the app reads
them: however they arrive, with `Expect: 100-continue`, or cut short by the client."""

from __future__ import annotations

import numpy as np
import orjson
from _raw_http import connect, request_head

from _helpers import (
    COMPARISON,
    RunningServer,
    assert_scores_close,
    random_batch,
    wait_for_task,
    wait_until,
)
from voxmatch import compare

PIECE_BYTES = 1000
"""Bytes sent per `sendall`, far below one read of the server: the body arrives in many."""


def comparison_body() -> tuple[bytes, np.ndarray]:
    """A 300 x 200 comparison body (about 0.6 MB) and the REST score matrix it must give."""
    batch_a, batch_b = random_batch(300, seed=11), random_batch(200, seed=12)
    body = orjson.dumps(
        {"voiceprints_a": batch_a.to_base64_list(), "voiceprints_b": batch_b.to_base64_list()}
    )
    return body, compare(batch_a, batch_b).T


def json_head(length: int, **extra: str) -> bytes:
    return request_head(
        "POST",
        COMPARISON,
        {"content-type": "application/json", "content-length": str(length), **extra},
    )


def assert_scores(server: RunningServer, location: str, expected: np.ndarray) -> None:
    done = wait_for_task(server.client(), location).json()
    assert done["task"]["state"] == "done", done
    scores = done["result"]["scores"]
    assert (scores["rows_count"], scores["columns_count"]) == expected.shape
    assert_scores_close(np.reshape(scores["values"], expected.shape), expected)


def test_a_body_sent_in_many_pieces_is_read_whole(server: RunningServer) -> None:
    body, expected = comparison_body()
    connection = connect(server)
    connection.send(json_head(len(body)))
    for start in range(0, len(body), PIECE_BYTES):
        connection.send(body[start : start + PIECE_BYTES])
    response = connection.read_response()
    connection.close()
    assert response.status == 202, response.body
    assert_scores(server, response.headers["location"], expected)


def test_a_body_sent_after_100_continue_is_read(server: RunningServer) -> None:
    body, expected = comparison_body()
    connection = connect(server)
    connection.send(json_head(len(body), expect="100-continue"))
    assert connection.read_response().status == 100
    connection.send(body)
    response = connection.read_response()
    connection.close()
    assert response.status == 202, response.body
    assert_scores(server, response.headers["location"], expected)


def test_a_client_gone_halfway_through_its_body_leaves_the_server_serving(
    server: RunningServer,
) -> None:
    body, expected = comparison_body()
    connection = connect(server)
    connection.send(json_head(len(body)) + body[: len(body) // 2])
    connection.close()
    wait_until(lambda: "went away during POST" in server.log(), "the request ends")
    assert "Traceback" not in server.log()

    accepted = server.client().post(
        COMPARISON, content=body, headers={"content-type": "application/json"}
    )
    assert accepted.status_code == 202, accepted.text
    assert_scores(server, accepted.headers["location"], expected)
