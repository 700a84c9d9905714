"""Every bad request gets its SPE4 error body, never a 500, and loses nothing accepted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from _helpers import (
    COMPARISON,
    RunningServer,
    ServerFactory,
    random_voiceprints,
    start_server,
    wait_for_task,
    wait_until,
)
from voxmatch import Voiceprint
from voxmatch.models import Calibration, ModelDescription

LIMITS = {
    "VOXMATCH_MAX_LIST_LENGTH": "5",
    "VOXMATCH_MAX_MATRIX_SIZE": "12",
    "VOXMATCH_MAX_REQUEST_BYTES": "20000",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("limited") / "data", LIMITS)
    yield running
    running.stop()


def b64(voiceprints: list[Voiceprint]) -> list[str]:
    return [vp.to_base64() for vp in voiceprints]


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "message", "detail"}
    assert body["type"] == error_type
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["detail"], list)
    for item in body["detail"]:
        assert {"location", "message", "type"} <= set(item)
    assert isinstance(body, dict), body
    return body


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"not json", b'{"voiceprints_a": ["x"], "voiceprints_b": ["y"]} trailing', b"\xff"],
    ids=["truncated", "empty", "text", "trailing", "binary"],
)
def test_malformed_json_is_400_request_invalid(limited: RunningServer, body: bytes) -> None:
    response = limited.client().post(
        COMPARISON, content=body, headers={"content-type": "application/json"}
    )
    error = assert_error(response, 400, "request.invalid")
    assert error["message"] == "Invalid request."


def locations(body: dict[str, Any]) -> list[list[str | int]]:
    return [item["location"] for item in body["detail"]]


def test_empty_list_is_422_naming_the_field(limited: RunningServer) -> None:
    response = limited.client().post(
        COMPARISON, json={"voiceprints_a": [], "voiceprints_b": b64(random_voiceprints(1))}
    )
    body = assert_error(response, 422, "request.validation-error")
    assert locations(body) == [["body", "voiceprints_a"]]


def test_too_long_list_is_422_naming_the_field(limited: RunningServer) -> None:
    response = limited.client().post(
        COMPARISON,
        json={
            "voiceprints_a": b64(random_voiceprints(1)),
            "voiceprints_b": b64(random_voiceprints(6)),
        },
    )
    body = assert_error(response, 422, "request.validation-error")
    assert locations(body) == [["body", "voiceprints_b"]]
    assert "5" in body["detail"][0]["message"]


def test_matrix_over_the_limit_is_422(limited: RunningServer) -> None:
    response = limited.client().post(
        COMPARISON,
        json={
            "voiceprints_a": b64(random_voiceprints(4)),
            "voiceprints_b": b64(random_voiceprints(4)),
        },
    )
    body = assert_error(response, 422, "request.validation-error")
    assert "12" in body["detail"][0]["message"]


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        ({"voiceprints_a": ["x"]}, ["body", "voiceprints_b"]),
        ({"voiceprints_a": "abc", "voiceprints_b": ["x"]}, ["body", "voiceprints_a"]),
        ({"voiceprints_a": ["x", 5], "voiceprints_b": ["x"]}, ["body", "voiceprints_a", 1]),
        ([1, 2], ["body"]),
    ],
    ids=["missing-field", "not-a-list", "not-a-string", "not-an-object"],
)
def test_schema_violations_are_422_with_location(
    limited: RunningServer, payload: object, location: list[str | int]
) -> None:
    response = limited.client().post(COMPARISON, json=payload)
    body = assert_error(response, 422, "request.validation-error")
    assert locations(body) == [location]


def test_bad_voiceprint_is_422_naming_list_and_index(limited: RunningServer) -> None:
    client = limited.client()
    good = b64(random_voiceprints(3))
    broken = good[1][:-10] + "A" * 10
    response = client.post(
        COMPARISON, json={"voiceprints_a": good, "voiceprints_b": [good[0], broken]}
    )
    body = assert_error(response, 422, "request.validation-error")
    assert locations(body) == [["body", "voiceprints_b", 1]]
    assert body["detail"][0]["type"] == "voiceprint.checksum"
    garbage = client.post(COMPARISON, json={"voiceprints_a": ["%%%", *good], "voiceprints_b": good})
    assert locations(assert_error(garbage, 422, "request.validation-error")) == [
        ["body", "voiceprints_a", 0]
    ]


def test_phonexia_style_voiceprint_gets_a_clear_message(limited: RunningServer) -> None:
    ubjson_like = "e1UIbW9kZWxTVQ=="  # a UBJSON object, as SPE4's own voiceprints are
    response = limited.client().post(
        COMPARISON, json={"voiceprints_a": [ubjson_like], "voiceprints_b": [ubjson_like]}
    )
    body = assert_error(response, 422, "request.validation-error")
    assert body["detail"][0]["location"] == ["body", "voiceprints_a", 0]
    assert "voxmatch voiceprint" in body["detail"][0]["message"]


def test_models_mixed_between_lists_are_422(limited: RunningServer) -> None:
    # The other model only exists in this test process; the server does not know it, so a
    # voiceprint of it is an unknown model there, and a known one of another list is mixed.
    from voxmatch.models import register

    register(ModelDescription("test-other-model", 192, Calibration.linear(10, -5)))
    other = Voiceprint.from_embedding(np.ones(192), speech_length=3, model="test-other-model")
    response = limited.client().post(
        COMPARISON,
        json={"voiceprints_a": b64(random_voiceprints(2)), "voiceprints_b": [other.to_base64()]},
    )
    body = assert_error(response, 422, "request.validation-error")
    assert locations(body) == [["body", "voiceprints_b", 0]]
    assert body["detail"][0]["type"] == "voiceprint.mixed-models"
    unknown = limited.client().post(
        COMPARISON,
        json={"voiceprints_a": [other.to_base64()], "voiceprints_b": [other.to_base64()]},
    )
    assert assert_error(unknown, 422, "request.validation-error")["detail"][0]["type"] == (
        "voiceprint.unknown-model"
    )


def test_unknown_task_is_404(limited: RunningServer) -> None:
    response = limited.client().get(f"{COMPARISON}/{uuid.uuid4()}")
    assert_error(response, 404, "resource.not-found")


def test_malformed_task_id_is_422(limited: RunningServer) -> None:
    response = limited.client().get(f"{COMPARISON}/not-a-uuid")
    body = assert_error(response, 422, "request.validation-error")
    assert locations(body) == [["path", "task_id"]]


def test_unknown_path_is_404(limited: RunningServer) -> None:
    assert_error(limited.client().get("/api/technology/nothing"), 404, "resource.not-found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", COMPARISON), ("GET", COMPARISON), ("DELETE", "/api/system/info")],
)
def test_wrong_method_is_405(limited: RunningServer, method: str, path: str) -> None:
    response = limited.client().request(method, path)
    assert_error(response, 405, "method.invalid")


def test_body_over_the_limit_is_413(limited: RunningServer) -> None:
    client = limited.client()
    big = {"voiceprints_a": ["A" * 30000], "voiceprints_b": ["B"]}
    assert_error(client.post(COMPARISON, json=big), 413, "request.size-limit-exceeded")

    def chunks() -> Iterator[bytes]:
        # No content-length: the limit must hold while the body streams in.
        yield b'{"voiceprints_a": ["'
        for _ in range(40):
            yield b"A" * 1000
        yield b'"], "voiceprints_b": ["B"]}'

    streamed = client.post(COMPARISON, content=chunks())
    assert_error(streamed, 413, "request.size-limit-exceeded")


def test_errors_do_not_disturb_accepted_tasks(limited: RunningServer) -> None:
    client = limited.client()
    a, b = random_voiceprints(3, seed=5), random_voiceprints(4, seed=6)
    accepted = client.post(COMPARISON, json={"voiceprints_a": b64(a), "voiceprints_b": b64(b)})
    assert accepted.status_code == 202
    for bad in (b"{", b"[]", b'{"voiceprints_a": []}'):
        client.post(COMPARISON, content=bad)
    done = wait_for_task(client, accepted.headers["location"]).json()
    assert done["task"]["state"] == "done"
    assert done["result"]["scores"]["rows_count"] == 4
    assert "Traceback" not in limited.log()


def test_expired_tasks_answer_404_and_leave_no_files(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(
        # Long enough for a busy machine to see the task done before it expires.
        {"VOXMATCH_TASK_TTL_SECONDS": "5", "VOXMATCH_EXPIRY_INTERVAL_SECONDS": "0.2"}
    )
    client = server.client()
    accepted = client.post(
        COMPARISON,
        json={
            "voiceprints_a": b64(random_voiceprints(2)),
            "voiceprints_b": b64(random_voiceprints(2)),
        },
    )
    location = accepted.headers["location"]
    task_id = accepted.json()["task"]["task_id"]
    assert wait_for_task(client, location).json()["task"]["state"] == "done"
    assert (server.data_dir / "tasks" / task_id).exists()
    wait_until(
        lambda: not (server.data_dir / "tasks" / task_id).exists(),
        "the sweeper to delete the expired task's files",
    )
    assert_error(client.get(location), 404, "resource.not-found")
