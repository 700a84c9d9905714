"""Liveness and readiness probes through a real server."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from _helpers import RunningServer


def test_a_running_server_is_live_and_ready(server: RunningServer) -> None:
    client = server.client()
    live = client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "live"})
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"task_store": "ok", "workers": "ok"}}


def test_not_ready_when_the_data_folder_is_gone(
    server_factory: Callable[..., RunningServer],
) -> None:
    running = server_factory()
    client = running.client()
    assert client.get("/health/ready").status_code == 200
    # As when the volume holding the data folder goes away under the server.
    shutil.rmtree(running.data_dir)

    ready = client.get("/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready"
    assert body["checks"]["workers"] == "ok"
    assert body["checks"]["task_store"].startswith("cannot write: ")
    assert str(running.data_dir) not in ready.text  # never the server's own paths
    # Still live: restarting the process would not bring the folder back.
    assert client.get("/health/live").status_code == 200
