"""Accepted tasks survive kill -9; a full queue answers 429 and loses nothing it accepted."""

from __future__ import annotations

import sqlite3

import numpy as np

from _helpers import COMPARISON, burst, comparison_bodies, wait_for_task

TASKS = 40


def test_kill_9_loses_no_accepted_task(server_factory) -> None:
    env = {"VOXMATCH_WORKERS": "1", "VOXMATCH_QUEUE_CAPACITY": "1000"}
    server = server_factory(env)
    bodies, expected = comparison_bodies(TASKS)
    responses = burst(server, bodies, threads=4)
    assert [response.status_code for response in responses] == [202] * TASKS
    server.kill()

    database = sqlite3.connect(server.data_dir / "tasks.sqlite3")
    states = dict(database.execute("SELECT id, state FROM tasks").fetchall())
    database.close()
    task_ids = [response.json()["task"]["task_id"] for response in responses]
    assert set(task_ids) <= set(states), "every 202 was committed before it was sent"
    unfinished = [task_id for task_id in task_ids if states[task_id] in ("pending", "running")]
    assert len(unfinished) >= 5, f"the test needs queued tasks at the kill, had {len(unfinished)}"

    restarted = server_factory(env, data_dir=server.data_dir)
    client = restarted.client()
    for index, response in enumerate(responses):
        final = wait_for_task(client, response.headers["location"], timeout=120).json()
        assert final["task"]["state"] == "done", final
        if index in (0, TASKS - 1) or response.json()["task"]["task_id"] == unfinished[0]:
            scores = final["result"]["scores"]
            matrix = np.array(scores["values"], dtype=np.float32).reshape(1000, 1000)
            np.testing.assert_allclose(matrix, expected(index), atol=1e-5)
    assert "resuming" in restarted.log()


def test_full_queue_answers_429_with_rate_limit_headers(server_factory) -> None:
    server = server_factory({"VOXMATCH_WORKERS": "1", "VOXMATCH_QUEUE_CAPACITY": "2"})
    bodies, _ = comparison_bodies(24)
    responses = burst(server, bodies, threads=4)
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {202, 429}
    refused = [response for response in responses if response.status_code == 429]
    assert refused, "4 clients against 1 worker and a queue of 2 must be refused sometimes"
    for response in refused:
        body = response.json()
        assert body["type"] == "request.rate-limit-exceeded"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-ratelimit-limit"] == "2"
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert int(response.headers["x-ratelimit-reset"]) > 0
    client = server.client()
    for response in responses:
        if response.status_code == 202:
            final = wait_for_task(client, response.headers["location"], timeout=120).json()
            assert final["task"]["state"] == "done"
    # Once drained, the server accepts work again.
    assert client.post(COMPARISON, content=bodies[0]).status_code == 202
