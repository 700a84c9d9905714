"""Uploads stream into the data folder, limits hold while they stream, a failed upload leaves
nothing, and a full queue refuses an upload before its body is read."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _raw_http import (
    Connection,
    Multipart,
    RawResponse,
    connect,
    multipart,
    request_head,
    wait_until,
)

from _helpers import RunningServer, ServerFactory, model_env, start_server, wait_for_task

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
MIB = 1024 * 1024
UPLOAD_LIMIT = 4 * MIB
NOT_AUDIO = b"\x01\x02 not audio " * 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("uploads") / "data",
        {**model_env(), "VOXMATCH_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)},
    )
    yield running
    running.stop()


def staged_bytes(server: RunningServer) -> int:
    return sum(path.stat().st_size for path in (server.data_dir / "staging").iterdir())


def task_folders(server: RunningServer) -> set[Path]:
    return set((server.data_dir / "tasks").iterdir())


def upload_head(form: Multipart, file_size: int, **extra: str) -> bytes:
    headers = {"content-type": form.content_type, "content-length": str(form.length(file_size))}
    return request_head("POST", EXTRACTION, {**headers, **extra})


def assert_error(
    response: httpx.Response | RawResponse, status: int, error_type: str
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == error_type, body
    return body


def test_the_file_streams_into_the_data_folder(server: RunningServer) -> None:
    content = bytes(range(256)) * (3 * MIB // 256)
    form = multipart()
    connection = connect(server)
    connection.send(upload_head(form, len(content)) + form.before_file + content[: 2 * MIB])
    # Half sent, at least one batch of it is already written into the data folder.
    wait_until(lambda: staged_bytes(server) >= MIB, "the upload reaches the staging folder")
    connection.send(content[2 * MIB :] + form.after_file)
    response = connection.read_response()
    connection.close()
    assert response.status == 202, response
    assert not any((server.data_dir / "staging").iterdir()), "moved into its task, not copied"
    task = wait_for_task(server.client(), response.headers["location"], timeout=180).json()
    assert task["task"]["state"] == "rejected"  # the bytes are not audio


def test_an_upload_cut_midway_leaves_nothing(server: RunningServer) -> None:
    before = task_folders(server)
    form = multipart()
    connection = connect(server)
    connection.send(upload_head(form, 3 * MIB) + form.before_file + b"\0" * (2 * MIB))
    wait_until(lambda: staged_bytes(server) >= MIB, "the upload reaches the staging folder")
    connection.close()
    wait_until(
        lambda: not any((server.data_dir / "staging").iterdir()), "the partial upload is gone"
    )
    assert task_folders(server) == before
    wait_until(lambda: f"went away during POST {EXTRACTION}" in server.log(), "the server notices")
    assert "Traceback" not in server.log()


def test_a_file_over_the_limit_is_413_while_it_streams(server: RunningServer) -> None:
    client = server.client()
    # Within the body allowance for the form's framing, so only the file's own count refuses it.
    just_over = client.post(EXTRACTION, files={"file": ("a.wav", b"\0" * (UPLOAD_LIMIT + 1000))})
    body = assert_error(just_over, 413, "request.size-limit-exceeded")
    assert body["detail"][0]["location"] == ["body", "file"]

    form = multipart()

    def chunked() -> Iterator[bytes]:
        # No content-length: only counting while the body arrives can refuse it.
        yield form.before_file
        for _ in range(2 * UPLOAD_LIMIT // MIB):
            yield b"\0" * MIB
        yield form.after_file

    streamed = client.post(
        EXTRACTION, content=chunked(), headers={"content-type": form.content_type}
    )
    assert_error(streamed, 413, "request.size-limit-exceeded")
    assert not any((server.data_dir / "staging").iterdir())
    assert client.get("/api/system/info").status_code == 200


def test_form_fields_beyond_their_budget_are_413(server: RunningServer) -> None:
    response = server.client().post(
        EXTRACTION, files={"file": ("a.wav", NOT_AUDIO)}, data={"config": " " * 70_000}
    )
    body = assert_error(response, 413, "request.size-limit-exceeded")
    assert body["detail"][0]["location"] == ["body", "config"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"file": "x"}', "application/json"),
        (b'--b\r\ncontent-disposition: form-data; name="file"\r\n\r\nabc', "multipart/form-data"),
        (
            b'--b\r\ncontent-disposition: form-data; name="file"\r\n\r\nabc',
            "multipart/form-data; boundary=b",
        ),
        (
            b"--b\r\ncontent-disposition: form-data\r\n\r\nabc\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
    ],
    ids=["json", "no-boundary", "no-closing-boundary", "part-without-name"],
)
def test_bodies_that_are_not_a_usable_form_are_400(
    server: RunningServer, content: bytes, content_type: str
) -> None:
    response = server.client().post(
        EXTRACTION, content=content, headers={"content-type": content_type}
    )
    body = assert_error(response, 400, "request.invalid")
    assert body["detail"][0]["location"] == ["body"]


def test_a_second_file_is_422(server: RunningServer) -> None:
    response = server.client().post(
        EXTRACTION, files=[("file", ("a.wav", NOT_AUDIO)), ("file", ("b.wav", NOT_AUDIO))]
    )
    body = assert_error(response, 422, "request.validation-error")
    assert body["detail"][0]["location"] == ["body", "file"]


def test_an_empty_file_is_rejected_without_showing_a_server_path(server: RunningServer) -> None:
    client = server.client()
    accepted = client.post(EXTRACTION, files={"file": ("empty.wav", b"")})
    assert accepted.status_code == 202, accepted.text
    task = wait_for_task(client, accepted.headers["location"], timeout=180)
    error = task.json()["error"]
    assert "empty" in error["message"]
    data_folder = str(server.data_dir.resolve())
    assert data_folder not in task.text
    assert "in.audio" not in task.text


def send_upload_expecting_continue(server: RunningServer) -> tuple[Connection, RawResponse]:
    """Send only the head of an upload, with `Expect: 100-continue`; the server's first answer."""
    form = multipart()
    connection = connect(server)
    connection.send(upload_head(form, len(NOT_AUDIO), expect="100-continue"))
    first = connection.read_response()
    if first.status == 100:
        connection.send(form.body(NOT_AUDIO))
    return connection, first


def test_a_full_queue_refuses_an_upload_before_its_body(server_factory: ServerFactory) -> None:
    full = server_factory({**model_env(), "VOXMATCH_WORKERS": "1", "VOXMATCH_QUEUE_CAPACITY": "1"})
    # While this connection holds the database's write lock, no task can be stored: the one
    # worker waits on the first task, and the next one stays in the queue, which is then full.
    # The probes take milliseconds; the server waits for the lock up to its busy timeout (10 s).
    database = sqlite3.connect(full.data_dir / "tasks.sqlite3", isolation_level=None, timeout=30)
    database.execute("BEGIN IMMEDIATE")
    waiting: list[Connection] = []
    try:
        refused = None
        for _ in range(3):  # the third is refused at the latest
            connection, first = send_upload_expecting_continue(full)
            if first.status != 100:
                refused = first
                connection.close()
                break
            waiting.append(connection)
            # Its task is queued once its folder exists (then its row waits for the lock).
            wait_until(lambda: len(task_folders(full)) == len(waiting), "the upload is queued")
        assert refused is not None, "the queue of one never filled"
        body = assert_error(refused, 429, "request.rate-limit-exceeded")
        assert body["detail"]
        assert refused.headers["retry-after"] == "1"

        # Without `Expect`, the answer still comes while the body is far from sent.
        form = multipart()
        connection = connect(full)
        connection.send(upload_head(form, 100 * MIB) + form.before_file + b"\0" * 1000)
        assert_error(connection.read_response(), 429, "request.rate-limit-exceeded")
        connection.close()
    finally:
        database.execute("ROLLBACK")
        database.close()
    for connection in waiting:
        assert connection.read_response().status == 202
        connection.close()
    assert not any((full.data_dir / "staging").iterdir())
