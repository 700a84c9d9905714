"""Comparisons on a real Ray cluster of several nodes on this machine (loopback only): the same
results over REST as the local runner's, a node lost mid-comparison, the cluster lost."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from _helpers import (
    COMPARISON,
    RunningServer,
    assert_scores_close,
    children_of,
    comparison_request,
    finished_comparison,
    hold_the_worker,
    model_env,
    random_voiceprints,
    start_server,
    task_state,
    wait_for_task,
    wait_until,
)
from _ray_cluster import LOOPBACK_RAY_ENVIRONMENT, assert_clear_cluster_failure, local_cluster
from voxmatch.models.registry import DEFAULT_MODEL_NAME, describe
from voxmatch.scoring import score_matrix
from voxmatch.voiceprint import Voiceprint

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster

NPY = "application/x-npy"
SMALL_BLOCKS = {
    "VOXMATCH_MEMORY_BUDGET_BYTES": str(1024 * 1024),
    "VOXMATCH_MAX_MATRIX_SIZE": str(30_000_000),
}
"""1 MiB a block: 3,000 x 2,000 runs in 94 blocks of 32 rows of a."""


def ray_server(data_dir: Path, cluster: Cluster, **settings: str) -> RunningServer:
    return start_server(
        data_dir,
        {
            **LOOPBACK_RAY_ENVIRONMENT,
            **SMALL_BLOCKS,
            "VOXMATCH_RAY_ADDRESS": cluster.address,
            **settings,
        },
    )


@pytest.fixture(scope="class")
def cluster() -> Iterator[Cluster]:
    with local_cluster(nodes=2) as running:
        yield running


@pytest.fixture(scope="class")
def servers(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """A server whose comparisons run on the cluster, and one that runs them itself."""
    on_ray = ray_server(tmp_path_factory.mktemp("ray") / "data", cluster)
    try:
        local = start_server(tmp_path_factory.mktemp("local") / "data", SMALL_BLOCKS)
        try:
            yield on_ray, local
        finally:
            local.stop()
    finally:
        on_ray.stop()


def as_matrix(result: dict[str, Any]) -> np.ndarray:
    scores = result["scores"]
    return np.array(scores["values"], np.float32).reshape(scores["rows_count"], -1)


def npy(client: httpx.Client, location: str) -> np.ndarray:
    answer = client.get(location, headers={"accept": NPY})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == NPY
    loaded: np.ndarray = np.load(io.BytesIO(answer.content), allow_pickle=False)
    return loaded


def expected_scores(a: list[Voiceprint], b: list[Voiceprint]) -> np.ndarray:
    """In REST orientation: rows follow b."""
    return score_matrix(
        np.stack([vp.embedding for vp in a]),
        np.stack([vp.embedding for vp in b]),
        describe(DEFAULT_MODEL_NAME).calibration,
    ).T


def driver_processes(server: RunningServer) -> list[int]:
    """The server's spawned children: Ray drivers of comparisons (not its resource tracker)."""
    found = []
    for pid in children_of(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        if b"spawn_main" in command:
            found.append(pid)
    return found


def loaded_libraries(server: RunningServer) -> str:
    return Path(f"/proc/{server.process.pid}/maps").read_text()


def status(server: RunningServer) -> dict[str, Any]:
    answer = server.client().get("/api/system/status")
    assert answer.status_code == 200
    runner: dict[str, Any] = answer.json()["runner"]
    return runner


class TestOnASharedCluster:
    """One cluster (two nodes) for these tests, shut down before the fault tests start theirs:
    the machine has two cores."""

    def test_a_comparison_on_the_cluster_equals_the_local_runners(
        self,
        servers: tuple[RunningServer, RunningServer],
    ) -> None:
        on_ray, local = servers
        ray_client, local_client = on_ray.client(timeout=300), local.client(timeout=300)
        a, b = random_voiceprints(3000, seed=1), random_voiceprints(2000, seed=2)
        ray_location, ray_result = finished_comparison(
            ray_client, comparison_request(a, b), timeout=300
        )
        local_location, local_result = finished_comparison(
            local_client, comparison_request(a, b), timeout=300
        )
        assert ray_result["scores"]["rows_count"] == local_result["scores"]["rows_count"] == 2000
        assert ray_result["scores"]["columns_count"] == 3000
        ray_matrix, local_matrix = as_matrix(ray_result), as_matrix(local_result)
        # Blocks scored by other processes (other BLAS threads): equal within float32 rounding.
        assert_scores_close(ray_matrix, local_matrix)
        assert_scores_close(ray_matrix, expected_scores(a, b))
        assert np.ptp(ray_matrix) > 1.0  # real scores, not a matrix of zeros
        ray_npy, local_npy = npy(ray_client, ray_location), npy(local_client, local_location)
        assert ray_npy.dtype == np.float32
        assert ray_npy.shape == (2000, 3000)
        np.testing.assert_array_equal(ray_npy, ray_matrix)
        assert_scores_close(ray_npy, local_npy)

    def test_top_k_on_the_cluster_equals_the_local_runners(
        self,
        servers: tuple[RunningServer, RunningServer],
    ) -> None:
        on_ray, local = servers
        a, b = random_voiceprints(3000, seed=3), random_voiceprints(1500, seed=4)
        k = 5
        _, ray_result = finished_comparison(
            on_ray.client(timeout=300), comparison_request(a, b, top_k=k), timeout=300
        )
        _, local_result = finished_comparison(
            local.client(timeout=300), comparison_request(a, b, top_k=k), timeout=300
        )
        full = expected_scores(a, b)
        for result in (ray_result, local_result):
            assert (result["top_k"]["rows_count"], result["top_k"]["k"]) == (1500, k)
        ray_indices = np.array(ray_result["top_k"]["indices"]).reshape(1500, k)
        ray_scores = np.array(ray_result["top_k"]["scores"], np.float32).reshape(1500, k)
        local_scores = np.array(local_result["top_k"]["scores"], np.float32).reshape(1500, k)
        # Near-equal scores may swap places between two runs: the ranked scores must agree, and
        # each index the cluster gave must point at the score it gave.
        assert_scores_close(ray_scores, local_scores)
        assert_scores_close(ray_scores, np.take_along_axis(full, ray_indices, axis=1))
        assert all(len(set(row.tolist())) == k for row in ray_indices)

    def test_status_names_the_runner(self, servers: tuple[RunningServer, RunningServer]) -> None:
        on_ray, local = servers
        assert status(local) == {"kind": "local"}
        runner = status(on_ray)
        assert runner["kind"] == "ray"
        assert runner["reachable"] is True, runner
        assert (runner["nodes"], runner["cpus"]) == (2, 2.0)

    def test_a_cancelled_comparison_stops_its_driver(
        self, servers: tuple[RunningServer, RunningServer]
    ) -> None:
        on_ray, _ = servers
        client = on_ray.client(timeout=300)
        a, b = random_voiceprints(8000, seed=13), random_voiceprints(3000, seed=14)
        accepted = client.post(COMPARISON, json=comparison_request(a, b))
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        wait_until(lambda: bool(driver_processes(on_ray)), "the comparison's driver process")
        assert client.delete(location).status_code == 204
        assert client.get(location).status_code == 404
        wait_until(lambda: not driver_processes(on_ray), "the driver process to end")
        assert client.get("/health/ready").status_code == 200

    def test_ray_is_loaded_only_by_the_server_given_an_address(
        self, servers: tuple[RunningServer, RunningServer]
    ) -> None:
        on_ray, local = servers
        a, b = random_voiceprints(30, seed=9), random_voiceprints(20, seed=10)
        for server in servers:
            finished_comparison(server.client(), comparison_request(a, b), timeout=300)
            assert status(server)["kind"] in {"local", "ray"}
        # Importing ray loads its core library into the process.
        assert "_raylet" in loaded_libraries(on_ray)
        assert "_raylet" not in loaded_libraries(local)

    def test_a_comparison_accepted_before_a_crash_completes_on_the_cluster_after_restart(
        self, cluster: Cluster, tmp_path: Path
    ) -> None:
        # One worker, held by a long extraction (on the cluster too), so that the comparison
        # is still waiting, stored and acknowledged, when the server is killed.
        one_worker = {**model_env(), "VOXMATCH_WORKERS": "1"}
        first = ray_server(tmp_path / "data", cluster, **one_worker)
        try:
            client = first.client(timeout=300)
            holding = hold_the_worker(client)
            a, b = random_voiceprints(3000, seed=21), random_voiceprints(2000, seed=22)
            accepted = client.post(COMPARISON, json=comparison_request(a, b))
            assert accepted.status_code == 202, accepted.text
            location = accepted.headers["location"]
            assert task_state(client, location) == "pending"
            assert task_state(client, holding) == "running", "the holding task ended too soon"
            first.kill()
        finally:
            first.stop()
        again = ray_server(first.data_dir, cluster, **one_worker)
        try:
            client = again.client(timeout=300)
            assert client.delete(holding).status_code == 204
            answer = wait_for_task(client, location, timeout=300).json()
            assert answer["task"]["state"] == "done", answer
            assert_scores_close(as_matrix(answer["result"]), expected_scores(a, b))
        finally:
            again.stop()


def some_scores_written(server: RunningServer, location: str) -> bool:
    """Whether the result file, zeros until then, holds scores: blocks are written a band of
    1,029 columns (49 blocks) at a time, so the first band is in while the others compute."""
    task_id = location.rstrip("/").rsplit("/", 1)[-1]
    found = list(server.data_dir.rglob(f"{task_id}/out.scores.npy.partial"))
    if not found:
        return False
    first_row = np.load(found[0], mmap_mode="r")[0]
    return bool(np.count_nonzero(first_row))


def test_a_node_lost_mid_comparison_costs_nothing_but_time(tmp_path: Path) -> None:
    with local_cluster(nodes=3) as own:
        server = ray_server(tmp_path / "data", own)
        try:
            client = server.client(timeout=300)
            a, b = random_voiceprints(8000, seed=5), random_voiceprints(3000, seed=6)
            accepted = client.post(COMPARISON, json=comparison_request(a, b))
            assert accepted.status_code == 202, accepted.text
            location = accepted.headers["location"]
            # 381 blocks of 21 rows: once a band of them is written, the rest are on the nodes
            # (unless all are done by the removal, which the checks below do not need).
            wait_until(lambda: some_scores_written(server, location), "the first band")
            own.remove_node(own.list_all_nodes()[-1])  # type: ignore[no-untyped-call]
            answer = wait_for_task(client, location, timeout=300).json()
            assert answer["task"]["state"] == "done", answer
            assert_scores_close(as_matrix(answer["result"]), expected_scores(a, b))
            assert server.process.poll() is None
        finally:
            server.stop()


def test_a_lost_cluster_fails_comparisons_cleanly(tmp_path: Path) -> None:
    with local_cluster(nodes=2) as own:
        server = ray_server(tmp_path / "data", own)
        try:
            client = server.client(timeout=300)
            a, b = random_voiceprints(3000, seed=7), random_voiceprints(2000, seed=8)
            assert status(server)["reachable"] is True
            address = own.address
            own.shutdown()  # type: ignore[no-untyped-call]
            accepted = client.post(COMPARISON, json=comparison_request(a, b))
            assert accepted.status_code == 202, accepted.text
            answer = wait_for_task(client, accepted.headers["location"], timeout=120).json()
            assert answer["task"]["state"] == "failed", answer
            message = answer["error"]["message"]
            assert_clear_cluster_failure(message, address)
            runner = status(server)
            assert runner["kind"] == "ray"
            assert runner["reachable"] is False, runner
            assert runner["error"]
            assert client.get("/health/ready").status_code == 200
            assert server.process.poll() is None
        finally:
            server.stop()


def test_nothing_at_the_address_fails_comparisons_cleanly(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    # Nothing listens there now: Ray alone would retry for minutes.
    server = start_server(
        tmp_path / "data",
        {**LOOPBACK_RAY_ENVIRONMENT, **SMALL_BLOCKS, "VOXMATCH_RAY_ADDRESS": address},
    )
    try:
        runner = status(server)
        assert runner["reachable"] is False, runner
        assert address in runner["error"], runner
        client = server.client()
        a, b = random_voiceprints(3000, seed=11), random_voiceprints(2000, seed=12)
        accepted = client.post(COMPARISON, json=comparison_request(a, b))
        assert accepted.status_code == 202, accepted.text
        answer = wait_for_task(client, accepted.headers["location"], timeout=120).json()
        assert answer["task"]["state"] == "failed", answer
        assert f"no Ray cluster answers at {address}" in answer["error"]["message"], answer
    finally:
        server.stop()
