"""GET /metrics through a real server: requests, tasks and the work they did, as scraped."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import orjson
import pytest
import soundfile as sf

from _helpers import (
    COMPARISON,
    RunningServer,
    model_env,
    random_voiceprints,
    speech_clip,
    start_server,
    wait_for_task,
)
from _scrape import scrape, value

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
TASK_ROUTE = f"{COMPARISON}/{{task_id}}"
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("metrics") / "data",
        {**model_env(), "VOXMATCH_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)},
    )
    yield running
    running.stop()


def comparison_body(count_a: int, count_b: int) -> bytes:
    return orjson.dumps(
        {
            "voiceprints_a": [v.to_base64() for v in random_voiceprints(count_a, seed=1)],
            "voiceprints_b": [v.to_base64() for v in random_voiceprints(count_b, seed=2)],
        }
    )


def run_comparison(server: RunningServer, count_a: int, count_b: int) -> None:
    client = server.client()
    accepted = client.post(
        COMPARISON,
        content=comparison_body(count_a, count_b),
        headers={"content-type": "application/json"},
    )
    assert accepted.status_code == 202, accepted.text
    assert wait_for_task(client, accepted.headers["location"]).json()["task"]["state"] == "done"


def test_a_request_is_counted_once_under_its_route_template(server: RunningServer) -> None:
    client = server.client()
    unknown_task = str(uuid.uuid4())
    before = scrape(client)
    assert client.get(f"{COMPARISON}/{unknown_task}").status_code == 404
    after = scrape(client)

    labels = {"route": TASK_ROUTE, "method": "GET", "status": "404"}
    requests = "voxmatch_http_requests_total"
    assert value(after, requests, **labels) == value(before, requests, **labels) + 1
    latency = "voxmatch_http_request_duration_seconds_count"
    route = {"route": TASK_ROUTE, "method": "GET"}
    assert value(after, latency, **route) == value(before, latency, **route) + 1
    # The first scrape is itself a request, counted by the second.
    scrapes = {"route": "/metrics", "method": "GET", "status": "200"}
    assert value(after, requests, **scrapes) == value(before, requests, **scrapes) + 1
    # Raw paths never become labels: task ids would make a series per task.
    assert not any(unknown_task in str(labels) for _, labels in after)


def test_answers_given_before_routing_are_labelled_by_route(server: RunningServer) -> None:
    client = server.client()
    before = scrape(client)
    too_large = client.post(
        COMPARISON,
        content=b" " * (MAX_REQUEST_BYTES + 1),
        headers={"content-type": "application/json"},
    )
    assert too_large.status_code == 413
    assert client.get("/no/such/page").status_code == 404
    assert client.delete(COMPARISON).status_code == 405
    after = scrape(client)

    requests = "voxmatch_http_requests_total"
    for labels in (
        {"route": COMPARISON, "method": "POST", "status": "413"},
        {"route": "unmatched", "method": "GET", "status": "404"},
        {"route": COMPARISON, "method": "DELETE", "status": "405"},
    ):
        assert value(after, requests, **labels) == value(before, requests, **labels) + 1, labels


def test_a_comparison_task_shows_by_kind_state_and_scores(server: RunningServer) -> None:
    client = server.client()
    before = scrape(client)
    run_comparison(server, 3, 4)
    after = scrape(client)

    done = {"kind": "comparison", "state": "done"}
    assert value(after, "voxmatch_tasks", **done) == value(before, "voxmatch_tasks", **done) + 1
    finished = "voxmatch_tasks_finished_total"
    assert value(after, finished, **done) == value(before, finished, **done) + 1
    scores = "voxmatch_comparison_scores_total"
    assert value(after, scores) == value(before, scores) + 12
    # Every kind and state has a series from the start, zero until its first task.
    assert ("voxmatch_tasks", frozenset({"kind": "merging", "state": "failed"}.items())) in after
    assert value(after, "voxmatch_queue_waiting_tasks") == 0
    assert value(after, "voxmatch_running_tasks") == 0
    assert value(after, "voxmatch_queue_capacity_tasks") > 0


def test_an_extraction_counts_its_audio_and_speech_seconds(server: RunningServer) -> None:
    clip = speech_clip("FEE083", "trn09")
    silence = np.zeros(16000 * 2, dtype=np.float32)
    samples = np.concatenate([silence, clip, silence])
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    client = server.client()
    before = scrape(client)
    accepted = client.post(EXTRACTION, files={"file": ("audio.wav", buffer.getvalue())})
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"], timeout=180).json()
    assert body["task"]["state"] == "done", body
    after = scrape(client)

    audio = "voxmatch_extraction_audio_seconds_total"
    speech = "voxmatch_extraction_speech_seconds_total"
    # The whole recording is analysed (no speech cap); its length is exact to a sample.
    seconds = len(samples) / 16000
    assert value(after, audio) - value(before, audio) == pytest.approx(seconds, abs=1e-3)
    (channel,) = body["result"]["channels"]
    # The result rounds speech_length to the millisecond.
    assert value(after, speech) - value(before, speech) == pytest.approx(
        channel["speech_length"], abs=1e-3
    )
    assert 0 < channel["speech_length"] < seconds
    done = {"kind": "extraction", "state": "done"}
    assert value(after, "voxmatch_tasks", **done) == value(before, "voxmatch_tasks", **done) + 1


def test_a_rejected_task_counts_under_its_state(server: RunningServer) -> None:
    client = server.client()
    before = scrape(client)
    accepted = client.post(EXTRACTION, files={"file": ("audio.wav", b"not audio at all" * 64)})
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"]).json()
    assert body["task"]["state"] == "rejected", body
    after = scrape(client)

    rejected = {"kind": "extraction", "state": "rejected"}
    for name in ("voxmatch_tasks", "voxmatch_tasks_finished_total"):
        assert value(after, name, **rejected) == value(before, name, **rejected) + 1, name
    audio = "voxmatch_extraction_audio_seconds_total"
    assert value(after, audio) == value(before, audio)


def test_task_figures_are_read_from_the_store_after_a_restart(
    server_factory: Callable[..., RunningServer],
) -> None:
    first = server_factory()
    run_comparison(first, 2, 2)
    first.stop()

    again = server_factory(data_dir=first.data_dir)
    samples = scrape(again.client())
    done = {"kind": "comparison", "state": "done"}
    assert value(samples, "voxmatch_tasks", **done) == 1
    # Counters are of this process: it finished nothing yet.
    assert value(samples, "voxmatch_tasks_finished_total", **done) == 0


def test_openmetrics_is_served_when_asked_for(server: RunningServer) -> None:
    response = server.client().get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
