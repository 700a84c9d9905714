"""The SPE4 comparison API through a real server on a free port."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import httpx
import numpy as np
import pytest

from _helpers import (
    COMPARISON,
    RunningServer,
    ServerFactory,
    assert_scores_close,
    hold_the_worker,
    model_env,
    random_voiceprints,
    task_state,
    wait_for_task,
    wait_until,
)
from voxmatch import Voiceprint, compare

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def post(client: httpx.Client, a: list[Voiceprint], b: list[Voiceprint]) -> httpx.Response:
    return client.post(
        COMPARISON,
        json={
            "voiceprints_a": [vp.to_base64() for vp in a],
            "voiceprints_b": [vp.to_base64() for vp in b],
        },
    )


def scores_of(client: httpx.Client, a: list[Voiceprint], b: list[Voiceprint]) -> dict[str, Any]:
    accepted = post(client, a, b)
    assert accepted.status_code == 202, accepted.text
    done = wait_for_task(client, accepted.headers["location"])
    body = done.json()
    assert body["task"]["state"] == "done", body
    assert body["error"] is None
    scores = body["result"]["scores"]
    assert isinstance(scores, dict), scores
    return scores


@pytest.mark.parametrize(("count_a", "count_b"), [(3, 2), (2, 3)])
def test_matrix_orientation_follows_spe4_rest(
    server: RunningServer, count_a: int, count_b: int
) -> None:
    client = server.client()
    a = random_voiceprints(count_a, seed=10)
    # Each b is a noisy copy of a different a, so the expected best match is known.
    rng = np.random.default_rng(11)
    b = [
        Voiceprint.from_embedding(
            a[index % count_a].embedding + 0.3 * rng.standard_normal(192), speech_length=5
        )
        for index in range(count_b)
    ]
    scores = scores_of(client, a, b)
    assert scores["rows_count"] == count_b
    assert scores["columns_count"] == count_a
    values = np.array(scores["values"], dtype=np.float32)
    assert values.size == count_a * count_b
    matrix = values.reshape(count_b, count_a)
    # values[r * columns_count + c] = score(a_c, b_r): the transpose of compare(a, b).
    assert_scores_close(matrix, compare(a, b).T)
    for row in range(count_b):
        assert matrix[row].argmax() == row % count_a


def test_a_voiceprint_scores_highest_against_itself(server: RunningServer) -> None:
    client = server.client()
    a = random_voiceprints(4, seed=20)
    b = [a[2], a[0], a[3]]
    scores = scores_of(client, a, b)
    matrix = np.array(scores["values"]).reshape(scores["rows_count"], scores["columns_count"])
    assert matrix.argmax(axis=1).tolist() == [2, 0, 3]


def test_202_carries_task_body_and_both_location_headers(server: RunningServer) -> None:
    client = server.client()
    accepted = post(client, random_voiceprints(2), random_voiceprints(1))
    assert accepted.status_code == 202
    body = accepted.json()
    assert set(body) == {"task"}
    assert set(body["task"]) == {"task_id", "state"}
    task_id = body["task"]["task_id"]
    assert str(uuid.UUID(task_id)) == task_id
    assert body["task"]["state"] in ("pending", "running", "done")
    expected = f"{COMPARISON}/{task_id}"
    assert accepted.headers["location"] == expected
    assert accepted.headers["x-location"] == expected
    polled = wait_for_task(client, expected).json()
    assert set(polled) == {"task", "result", "error"}


@pytest.mark.slow
def test_pending_task_has_null_result_and_error(server_factory: ServerFactory) -> None:
    server = server_factory(
        {**model_env(), "VOXMATCH_WORKERS": "1", "VOXMATCH_POLL_WAIT_SECONDS": "0"}
    )
    client = server.client()
    busy = hold_the_worker(client)
    small = random_voiceprints(1)
    waiting = post(client, small, small)
    body = client.get(waiting.headers["location"]).json()
    # The only worker ran another task from before the POST until after the GET: the task
    # cannot have started.
    assert task_state(client, busy) == "running", "the holding task ended too soon to tell"
    assert body == {
        "task": {"task_id": waiting.json()["task"]["task_id"], "state": "pending"},
        "result": None,
        "error": None,
    }
    assert client.delete(busy).status_code == 204
    assert wait_for_task(client, waiting.headers["location"]).json()["task"]["state"] == "done"


def test_a_poll_waits_briefly_for_the_result(server_factory: ServerFactory) -> None:
    server = server_factory({"VOXMATCH_POLL_WAIT_SECONDS": "30"})
    client = server.client()
    a, b = random_voiceprints(300, seed=3), random_voiceprints(200, seed=4)
    accepted = post(client, a, b)
    # One GET, straight after the POST: it is held until the worker is done.
    answer = client.get(accepted.headers["location"]).json()
    assert answer["task"]["state"] == "done"
    assert answer["result"]["scores"]["rows_count"] == 200


def test_npy_result_has_the_same_matrix(server: RunningServer) -> None:
    client = server.client()
    a, b = random_voiceprints(3, seed=30), random_voiceprints(5, seed=31)
    accepted = post(client, a, b)
    location = accepted.headers["location"]
    as_json = wait_for_task(client, location).json()["result"]["scores"]
    as_npy = client.get(location, headers={"accept": "application/x-npy"})
    assert as_npy.status_code == 200
    assert as_npy.headers["content-type"] == "application/x-npy"
    matrix = np.load(io.BytesIO(as_npy.content), allow_pickle=False)
    assert matrix.dtype == np.float32
    assert matrix.shape == (as_json["rows_count"], as_json["columns_count"]) == (5, 3)
    np.testing.assert_array_equal(matrix.reshape(-1), np.array(as_json["values"], np.float32))


def test_ids_are_echoed_or_generated_on_every_response(server: RunningServer) -> None:
    client = server.client()
    given = {"x-request-id": "req-42", "x-correlation-id": "case-7"}
    for response in (
        client.get("/api/system/info", headers=given),
        client.get(f"{COMPARISON}/{uuid.uuid4()}", headers=given),
        client.post(COMPARISON, content=b"{", headers=given),
    ):
        assert response.headers["x-request-id"] == "req-42"
        assert response.headers["x-correlation-id"] == "case-7"
    generated = client.get("/api/system/info")
    assert HEX_ID.match(generated.headers["x-request-id"])
    assert HEX_ID.match(generated.headers["x-correlation-id"])
    assert (
        generated.headers["x-request-id"] != client.get("/api/system/info").headers["x-request-id"]
    )


def test_ids_appear_in_the_server_log(server: RunningServer) -> None:
    client = server.client()
    accepted = client.post(
        COMPARISON,
        json={
            "voiceprints_a": [random_voiceprints(1)[0].to_base64()],
            "voiceprints_b": [random_voiceprints(1)[0].to_base64()],
        },
        headers={"x-request-id": "logged-request", "x-correlation-id": "logged-case"},
    )
    wait_for_task(client, accepted.headers["location"])
    task_id = accepted.json()["task"]["task_id"]

    def lines() -> list[str]:
        return [line for line in server.log().splitlines() if "request_id=logged-request" in line]

    # The worker logs "done" after it has recorded the result that the poll saw.
    wait_until(
        lambda: any(task_id in line and "done" in line for line in lines()),
        "the worker's log line",
    )
    assert any("correlation_id=logged-case" in line and "POST" in line for line in lines())


def test_system_endpoints(server: RunningServer) -> None:
    client = server.client()
    info = client.get("/api/system/info")
    assert info.status_code == 200
    assert set(info.json()) == {"version"}
    status = client.get("/api/system/status").json()
    assert status["status"] == "ok"
    assert status["queue"]["capacity"] >= 1


def test_openapi_and_docs_are_served(server: RunningServer) -> None:
    client = server.client()
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert "post" in paths[COMPARISON]
    task_path = paths[f"{COMPARISON}/{{task_id}}"]
    assert {"get", "delete"} <= set(task_path)
    request_schema = paths[COMPARISON]["post"]["requestBody"]["content"]["application/json"]
    assert "voiceprints_a" in str(request_schema)
    assert client.get("/docs").status_code == 200


def test_delete_cancels_and_removes_a_task(server_factory: ServerFactory) -> None:
    server = server_factory({"VOXMATCH_WORKERS": "1"})
    client = server.client()
    a = random_voiceprints(1000, seed=2)
    locations = [post(client, a, a).headers["location"] for _ in range(4)]
    for location in locations:
        assert client.delete(location).status_code == 204
        assert client.get(location).status_code == 404
        assert client.delete(location).status_code == 404
    task_ids = [location.rsplit("/", 1)[1] for location in locations]

    def idle() -> bool:
        queue = client.get("/api/system/status").json()["queue"]
        return bool(queue["waiting"] == 0 and queue["running"] == 0)

    # A deleted task's folder is moved away before it is removed, so a worker still finishing
    # a block of it cannot leave a file behind, whenever it stops.
    wait_until(idle, "the worker to stop the cancelled tasks")
    leftovers = [path.name for path in (server.data_dir / "tasks").iterdir()]
    assert not set(task_ids) & set(leftovers)
    # The server keeps working after cancellations.
    assert scores_of(client, a[:2], a[:3])["rows_count"] == 3
