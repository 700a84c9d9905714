"""API keys over REST, through a real server: 401 without a key, tasks private to their key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from _helpers import COMPARISON, RunningServer, random_voiceprints, start_server, wait_for_task
from voxmatch.api_keys import add_key

MERGING = "/api/technology/speaker-identification-voiceprint-merging"


@dataclass
class KeyedServer:
    server: RunningServer
    key_file: Path
    alice: str
    bob: str

    def client(self, key: str | None = None) -> httpx.Client:
        client = self.server.client()
        if key is not None:
            client.headers["x-api-key"] = key
        return client


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    folder = tmp_path_factory.mktemp("keys")
    key_file = folder / "api-keys"
    alice, bob = add_key(key_file, "alice"), add_key(key_file, "bob")
    running = start_server(folder / "data", {"VOXMATCH_API_KEYS_FILE": str(key_file)})
    yield KeyedServer(running, key_file, alice, bob)
    running.stop()


def comparison_body() -> dict[str, list[str]]:
    voiceprints = [voiceprint.to_base64() for voiceprint in random_voiceprints(3, seed=5)]
    return {"voiceprints_a": voiceprints[:2], "voiceprints_b": voiceprints[2:]}


def assert_unauthorized(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["type"] == "request.unauthorized"
    assert body["message"] == "Authentication required."
    (detail,) = body["detail"]
    assert detail["location"] == ["header", "x-api-key"]
    assert detail["type"] == "request.unauthorized"
    assert reason in detail["message"]
    assert "x-request-id" in response.headers  # answered inside the request-id middleware


@pytest.mark.parametrize(
    "request_line",
    [
        ("POST", COMPARISON),
        ("GET", f"{COMPARISON}/{uuid.uuid4()}"),
        ("DELETE", f"{COMPARISON}/{uuid.uuid4()}"),
        ("GET", "/api/system/status"),
        ("GET", "/no/such/path"),
    ],
)
def test_no_key_is_401(keyed: KeyedServer, request_line: tuple[str, str]) -> None:
    method, path = request_line
    response = keyed.client().request(method, path, json=comparison_body())
    assert_unauthorized(response, "an API key is required")


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "not-a-key"},
        {"authorization": "Bearer not-a-key"},
        {"authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"x-api-key": ""},
    ],
)
def test_a_wrong_key_is_401(keyed: KeyedServer, headers: dict[str, str]) -> None:
    response = keyed.client().post(COMPARISON, json=comparison_body(), headers=headers)
    reason = "not valid" if "not-a-key" in str(headers) else "an API key is required"
    assert_unauthorized(response, reason)


def test_a_stored_hash_is_not_a_key(keyed: KeyedServer) -> None:
    stored_hash = keyed.key_file.read_text().split()[1]
    response = keyed.client(stored_hash).get("/api/system/status")
    assert_unauthorized(response, "not valid")


def test_the_key_works_in_either_header(keyed: KeyedServer) -> None:
    for headers in ({"x-api-key": keyed.alice}, {"authorization": f"Bearer {keyed.alice}"}):
        client = keyed.client()
        client.headers.update(headers)
        accepted = client.post(COMPARISON, json=comparison_body())
        assert accepted.status_code == 202, accepted.text
        done = wait_for_task(client, accepted.headers["location"])
        assert done.json()["task"]["state"] == "done"
        assert done.json()["result"]["scores"]["columns_count"] == 2


@pytest.mark.parametrize(
    ("technology", "body"),
    [
        (COMPARISON, comparison_body()),
        (MERGING, {"voiceprints": comparison_body()["voiceprints_a"]}),
    ],
)
def test_a_task_is_invisible_to_another_key(
    keyed: KeyedServer, technology: str, body: dict[str, list[str]]
) -> None:
    alice, bob = keyed.client(keyed.alice), keyed.client(keyed.bob)
    accepted = alice.post(technology, json=body)
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    task_id = location.rsplit("/", 1)[1]
    unknown_id = str(uuid.uuid4())

    def without_id(response: httpx.Response, task: str) -> object:
        return response.status_code, response.text.replace(task, "ID")

    for method in ("GET", "DELETE"):
        theirs = bob.request(method, location)
        nobodys = bob.request(method, f"{technology}/{unknown_id}")
        assert theirs.status_code == 404
        assert theirs.json()["type"] == "resource.not-found"
        # Exactly as if it did not exist.
        assert without_id(theirs, task_id) == without_id(nobodys, unknown_id)
    # Bob's DELETE removed nothing: the task is still Alice's.
    done = wait_for_task(alice, location)
    assert done.json()["task"]["task_id"] == task_id
    assert alice.delete(location).status_code == 204
    assert alice.get(location).status_code == 404


def test_status_needs_a_key_and_info_does_not(keyed: KeyedServer) -> None:
    anonymous = keyed.client()
    assert_unauthorized(anonymous.get("/api/system/status"), "an API key is required")
    status = keyed.client(keyed.bob).get("/api/system/status")
    assert status.status_code == 200
    assert status.json()["status"] == "ok"
    info = anonymous.get("/api/system/info")
    assert info.status_code == 200
    assert set(info.json()) == {"version"}


def test_the_api_description_and_docs_page_stay_open(keyed: KeyedServer) -> None:
    anonymous = keyed.client()
    description = anonymous.get("/openapi.json")
    assert description.status_code == 200
    schema = description.json()
    # Described, so that the docs page's Authorize button sends the key.
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    assert schema["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "401" in schema["paths"][COMPARISON]["post"]["responses"]
    assert schema["paths"]["/api/system/info"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/api/system/status"]["get"]
    docs = anonymous.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_a_key_added_while_the_server_runs_works_at_once(keyed: KeyedServer) -> None:
    carol = add_key(keyed.key_file, "carol")
    response = keyed.client(carol).get("/api/system/status")
    assert response.status_code == 200, response.text


def test_without_keys_nothing_changes(server: RunningServer) -> None:
    client = server.client()
    accepted = client.post(COMPARISON, json=comparison_body())
    assert accepted.status_code == 202
    assert wait_for_task(client, accepted.headers["location"]).json()["task"]["state"] == "done"
    assert client.get("/api/system/status").status_code == 200
    assert client.delete(accepted.headers["location"]).status_code == 204
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})
