"""Accepted tasks survive kill -9; a full queue answers 429 and loses nothing it accepted."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from _helpers import (
    COMPARISON,
    ServerFactory,
    assert_scores_close,
    burst,
    comparison_bodies,
    hold_the_worker,
    model_env,
    task_state,
    wait_for_task,
)

TASKS = 8


@pytest.mark.slow
def test_kill_9_loses_no_accepted_task(server_factory: ServerFactory) -> None:
    env = {**model_env(), "VOXMATCH_WORKERS": "1", "VOXMATCH_QUEUE_CAPACITY": "1000"}
    server = server_factory(env)
    holding = hold_the_worker(server.client())
    bodies, expected = comparison_bodies(TASKS)
    responses = burst(server, bodies, threads=4)
    assert [response.status_code for response in responses] == [202] * TASKS
    server.kill()

    database = sqlite3.connect(server.data_dir / "tasks.sqlite3")
    states = dict(database.execute("SELECT id, state FROM tasks").fetchall())
    database.close()
    # The only worker was on the holding task until the kill, so every task accepted after it
    # was still waiting.
    assert states[holding.rsplit("/", 1)[1]] == "running", "the holding task ended too soon"
    task_ids = [response.json()["task"]["task_id"] for response in responses]
    assert set(task_ids) <= set(states), "every 202 was committed before it was sent"
    unfinished = [task_id for task_id in task_ids if states[task_id] in ("pending", "running")]
    assert len(unfinished) >= 5, f"the test needs queued tasks at the kill, had {len(unfinished)}"

    restarted = server_factory(env, data_dir=server.data_dir)
    client = restarted.client()
    assert client.delete(holding).status_code == 204  # its work is not what is checked here
    for index, response in enumerate(responses):
        final = wait_for_task(client, response.headers["location"], timeout=120).json()
        assert final["task"]["state"] == "done", final
        if index in (0, TASKS - 1) or response.json()["task"]["task_id"] == unfinished[0]:
            scores = final["result"]["scores"]
            matrix = np.array(scores["values"], dtype=np.float32).reshape(1000, 1000)
            assert_scores_close(matrix, expected(index))
    assert "resuming" in restarted.log()


@pytest.mark.slow
def test_full_queue_answers_429_with_rate_limit_headers(server_factory: ServerFactory) -> None:
    server = server_factory(
        {**model_env(), "VOXMATCH_WORKERS": "1", "VOXMATCH_QUEUE_CAPACITY": "2"}
    )
    client = server.client()
    holding = hold_the_worker(client)
    bodies, _ = comparison_bodies(12)
    responses = burst(server, bodies, threads=4)
    # The only worker stayed on the holding task: nothing left the queue during the burst.
    assert task_state(client, holding) == "running", "the holding task ended too soon"
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {202, 429}
    refused = [response for response in responses if response.status_code == 429]
    assert refused, "4 clients against a busy worker and a queue of 2 must be refused"
    for response in refused:
        body = response.json()
        assert body["type"] == "request.rate-limit-exceeded"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-ratelimit-limit"] == "2"
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert int(response.headers["x-ratelimit-reset"]) > 0
    assert client.delete(holding).status_code == 204
    for response in responses:
        if response.status_code == 202:
            final = wait_for_task(client, response.headers["location"], timeout=120).json()
            assert final["task"]["state"] == "done"
    # Once drained, the server accepts work again.
    assert client.post(COMPARISON, content=bodies[0]).status_code == 202
