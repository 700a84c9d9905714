"""Extraction on a real Ray cluster of several nodes on this machine: `voxmatch extract --ray`
and the server's extraction tasks give the voiceprints of local extraction, and a node lost in
the middle of a run costs nothing but time."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from _bulk_speech import (
    EMBEDDING_TOLERANCE,
    assert_same_voiceprints,
    expected_voiceprints,
    speech_folder,
    voxmatch_command,
    written_voiceprints,
)
from _helpers import (
    EXTRACTION,
    ServerFactory,
    model_env,
    speech_clip,
    task_state,
    wait_for_task,
    wait_until,
)
from _ray_cluster import LOOPBACK_RAY_ENVIRONMENT, assert_clear_cluster_failure, local_cluster
from tools import corpora
from voxmatch import Voiceprint
from voxmatch import extract as extract_here

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_cluster(nodes=2) as started:
        yield started


def cluster_env(address: str) -> dict[str, str]:
    return {
        **os.environ,
        **LOOPBACK_RAY_ENVIRONMENT,
        **model_env(),
        "VOXMATCH_RAY_ADDRESS": address,
    }


def test_extract_on_the_cluster_gives_the_local_voiceprints(
    cluster: Cluster, tmp_path: Path
) -> None:
    files = speech_folder(tmp_path / "speech", 4)
    (tmp_path / "speech" / "a" / "broken.wav").write_bytes(b"not audio at all\n" * 20)
    largest = max(path.stat().st_size for path in files.values())
    # Over the limit of what is sent to the cluster: reported, not sent.
    (tmp_path / "speech" / "big.wav").write_bytes(next(iter(files.values())).read_bytes() * 3)
    limit = {"VOXMATCH_MAX_UPLOAD_BYTES": str(largest)}
    result = subprocess.run(
        voxmatch_command("extract", "speech", "--out", "vps", "--ray", cluster.address),
        cwd=tmp_path,
        env={**cluster_env(cluster.address), **limit},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr
    (broken,) = [line for line in result.stderr.splitlines() if "broken.wav" in line]
    assert broken.startswith("voxmatch: speech/a/broken.wav: not a readable audio file"), broken
    (big,) = [line for line in result.stderr.splitlines() if "big.wav" in line]
    assert f"over max_upload_bytes ({largest}) for the cluster" in big, big
    assert (
        result.stderr.splitlines()[-1] == f"voxmatch: 2 of {len(files) + 2} files could not be used"
    )
    assert_same_voiceprints(written_voiceprints(tmp_path / "vps"), expected_voiceprints(files))


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def extraction_task(client: httpx.Client, content: bytes) -> dict[str, Any]:
    accepted = client.post(EXTRACTION, files={"file": ("upload.wav", content)})
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"], timeout=300).json()
    assert isinstance(body, dict)
    return body


def assert_channels_are(channels: list[dict[str, Any]], expected: list[Voiceprint]) -> None:
    """A REST result's channels hold the voiceprints of local extraction (EMBEDDING_TOLERANCE:
    another process's onnxruntime)."""
    assert len(channels) == len(expected)
    for channel, reference in zip(channels, expected, strict=True):
        voiceprint = Voiceprint.from_base64(channel["voiceprint"])
        assert voiceprint.speech_length == pytest.approx(reference.speech_length, abs=1e-3)
        np.testing.assert_allclose(
            voiceprint.embedding,
            reference.embedding,
            rtol=EMBEDDING_TOLERANCE,
            atol=EMBEDDING_TOLERANCE,
        )


def test_rest_extraction_on_the_cluster_gives_the_local_voiceprint(
    cluster: Cluster, server_factory: ServerFactory
) -> None:
    stereo = np.stack([speech_clip("FEE083", "trn09"), speech_clip("FEE083", "trn09")[::-1]], 1)
    expected = extract_here(wav_bytes(stereo))
    server = server_factory(cluster_env(cluster.address))
    client = server.client()
    body = extraction_task(client, wav_bytes(stereo))
    assert body["task"]["state"] == "done", body
    channels = body["result"]["channels"]
    assert [channel["channel_number"] for channel in channels] == [0, 1]
    assert_channels_are(channels, expected)
    rejected = extraction_task(client, b"this is not audio at all, just text\n" * 10)
    assert rejected["task"]["state"] == "rejected", rejected
    error = rejected["error"]
    assert error["type"] == "task.validation-error"
    assert error["message"].startswith("The media file cannot be used: not a readable audio file")
    assert error["detail"][0]["location"] == ["file"]
    assert client.get("/api/system/status").status_code == 200, "the server is well"


def long_stereo_recording() -> bytes:
    """Seven minutes a channel of real speech: a task on it runs for many seconds."""
    excerpts = [corpora.load(item.path) for item in corpora.ami_files()]
    return wav_bytes(np.stack([np.concatenate(excerpts), np.concatenate(excerpts[::-1])], 1))


def test_a_cancelled_rest_task_on_the_cluster_frees_the_server_for_the_next(
    cluster: Cluster, server_factory: ServerFactory
) -> None:
    server = server_factory(cluster_env(cluster.address))
    client = server.client()
    accepted = client.post(EXTRACTION, files={"file": ("long.wav", long_stereo_recording())})
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    wait_until(lambda: task_state(client, location) == "running", "the task to start")
    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 404
    clip = speech_clip("MEE009", "dev00")
    body = extraction_task(client, wav_bytes(clip))
    assert body["task"]["state"] == "done", body
    (channel,) = body["result"]["channels"]
    (reference,) = extract_here(wav_bytes(clip))
    np.testing.assert_allclose(
        Voiceprint.from_base64(channel["voiceprint"]).embedding,
        reference.embedding,
        rtol=EMBEDDING_TOLERANCE,
        atol=EMBEDDING_TOLERANCE,
    )


def test_a_node_lost_in_the_middle_of_a_run_still_gives_every_voiceprint(tmp_path: Path) -> None:
    files = speech_folder(tmp_path / "speech", 12)
    # Last in name order, a minute of speech each: they still wait for an actor when the first
    # voiceprint is written, so every actor, the lost one too, has files queued at the loss.
    excerpts = [corpora.load(item.path) for item in corpora.ami_files()]
    for index in range(6):
        path = tmp_path / "speech" / f"zz-minute-{index}.wav"
        sf.write(path, np.concatenate(excerpts[2 * index : 2 * index + 2]), 16000)
        files[path.name] = path
    out = tmp_path / "vps"
    expected = expected_voiceprints(files)
    with local_cluster(nodes=3) as cluster:
        run = subprocess.Popen(
            voxmatch_command("extract", "speech", "--out", "vps", "--ray", cluster.address),
            cwd=tmp_path,
            env=cluster_env(cluster.address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: any(out.rglob("*.vp")), "the first voiceprint", timeout=300)
            # One actor holds each node's CPU; the head node is the one the run is connected
            # to, so another is the one to lose.
            done_before = len(list(out.rglob("*.vp")))
            head = cluster.head_node
            nodes = cluster.list_all_nodes()  # type: ignore[no-untyped-call]
            lost = next(node for node in nodes if node is not head)
            cluster.remove_node(lost)
            stdout, stderr = run.communicate(timeout=600)
        finally:
            run.kill()
            run.wait()
    assert done_before < len(expected), "the node was lost before the run's end"
    assert run.returncode == 0, stderr
    assert_same_voiceprints(written_voiceprints(out), expected)
    assert len(stdout.splitlines()) == len(expected), "each voiceprint written once"
    assert "lost 1 cluster worker(s) with their nodes during the run" in stderr


def test_a_node_lost_in_the_middle_of_a_rest_task_still_gives_its_voiceprints(
    server_factory: ServerFactory,
) -> None:
    recording = long_stereo_recording()
    expected = extract_here(recording)
    os.environ.update(LOOPBACK_RAY_ENVIRONMENT)
    from ray.cluster_utils import Cluster

    # No CPU on the head: the server's one actor can only be on the first node.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        first = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        server = server_factory(cluster_env(cluster.address))
        client = server.client()
        accepted = client.post(EXTRACTION, files={"file": ("long.wav", recording)})
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        # Given to the one actor there can be, on the first node (the only one with a CPU):
        # removing that node then takes the file with it, whatever the actor was doing.
        wait_until(
            lambda: "its file is on a cluster actor" in server.log(), "the file to reach its actor"
        )
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster.remove_node(first)
        body = wait_for_task(client, location, timeout=600).json()
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]
    assert body["task"]["state"] == "done", body
    assert_channels_are(body["result"]["channels"], expected)
    assert "its extraction actor was lost with its node" in server.log()


def test_a_lost_cluster_fails_extractions_and_the_server_stays_up(
    server_factory: ServerFactory,
) -> None:
    clip = wav_bytes(speech_clip("FEE083", "trn09"))
    with local_cluster(nodes=2) as own:
        address = own.address
        server = server_factory(cluster_env(address))
        client = server.client()
        # The server's driver process has joined the cluster and its actor holds the model.
        assert extraction_task(client, clip)["task"]["state"] == "done"
    # A Ray driver ends its own process when its cluster dies: only the server's driver
    # process may, never the server.
    body = extraction_task(client, clip)
    assert body["task"]["state"] == "failed", body
    message = body["error"]["message"]
    assert_clear_cluster_failure(message, address)
    assert server.process.poll() is None
    assert client.get("/health/ready").status_code == 200
    runner = client.get("/api/system/status").json()["runner"]
    assert runner["reachable"] is False, runner
