"""Test helpers: real voxmatch servers in subprocesses, voiceprints, polling."""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import orjson
import soundfile as sf
from numpy.typing import NDArray

from voxmatch import Voiceprint, VoiceprintBatch, compare
from voxmatch.models import CAMPPLUS, DEFAULT_MODEL_NAME

COMPARISON = "/api/technology/speaker-identification-voiceprint-comparison"
EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"

FLOAT32_EPS = float(np.finfo(np.float32).eps)

SCORE_TOLERANCE = 2 * CAMPPLUS.embedding_dim * FLOAT32_EPS * CAMPPLUS.calibration.highest_scale
"""How far apart two float32 computations of one score may be (about 8.8e-4).

A score is `scale * dot(a, b) / (|a| |b|) + offset`. Matrix products computed along different
paths (another process, BLAS thread count, block or batch size, CPU kernel) may sum the D terms
of a dot product in another order: BLAS promises no order. Each order is within D * eps of the
exact dot product (relative to |a| |b|: the worst case of float32 summation), so two orders are
within 2 * D * eps of each other in cosine, which the calibration scale multiplies. The norms
and the affine step are the same NumPy code on both paths. Differences actually seen are a few
ulps of the score, at most 4.8e-6 (1500 x 1100 scores, OpenBLAS's SkylakeX, Haswell, Zen and
Prescott kernels, 1 or 2 threads, whole or in blocks); the bound is kept so that no CPU can fail
a test by luck, and is still far below any real error (a wrong pair, orientation or calibration
is off by whole units)."""

VAD_PROBABILITY_TOLERANCE = 1e-5
"""How far apart two float32 computations of one VAD speech probability may be.

The probabilities (in [0, 1]) come out of about ten float32 layers and an LSTM state carried
from window to window; onnxruntime picks kernels by batch size and CPU, and each may round a
layer a few ulps differently. 1e-5 is about 84 ulps of 1.0: room for that to compound through
the layers and the recurrence, and 50 times below the closest any probability of the test speech
comes to a decision threshold (5e-4)."""


def assert_scores_close(actual: npt.ArrayLike, expected: npt.ArrayLike) -> None:
    """Scores computed along different paths agree to float32 precision (SCORE_TOLERANCE)."""
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=0,
        atol=SCORE_TOLERANCE,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The convention of every CLI error: exit `code`, one `voxmatch: ...` line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voxmatch: "), result.stderr
    return lines[0]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll `condition` until it holds; fail, saying `what` was awaited, after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    data_dir: Path
    base_url: str
    env: dict[str, str]
    log_path: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, timeout: float = 60) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._close_clients()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._close_clients()

    def _close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


ServerFactory = Callable[..., RunningServer]
"""The `server_factory` fixture: starts a server with extra environment and arguments."""


def start_server(
    data_dir: Path, env: dict[str, str] | None = None, *args: str, timeout: float = 300
) -> RunningServer:
    """Start `voxmatch serve` on free ports and wait until it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoints = data_dir / "endpoints.json"
    endpoints.unlink(missing_ok=True)  # stale after a kill -9
    full_env = {**os.environ, **(env or {})}
    log_path = data_dir.parent / f"{data_dir.name}-server-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voxmatch",
                "serve",
                "--port",
                "0",
                "--grpc-port",
                "0",
                "--data-dir",
                str(data_dir),
                *args,
            ],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while not endpoints.exists():
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    base_url = json.loads(endpoints.read_text())["rest"]
    return RunningServer(process, data_dir, base_url, full_env, log_path)


def random_voiceprints(count: int, seed: int = 0, speech_length: float = 12.0) -> list[Voiceprint]:
    rng = np.random.default_rng(seed)
    return [
        Voiceprint.from_embedding(rng.standard_normal(192), speech_length=speech_length)
        for _ in range(count)
    ]


def wait_for_task(client: httpx.Client, location: str, timeout: float = 60) -> httpx.Response:
    """Poll until the task is finished; return the final GET response."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location)
        assert response.status_code == 200, response.text
        if response.json()["task"]["state"] in ("done", "failed", "rejected"):
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"task {location} did not finish: {response.text}")
        time.sleep(0.01)


def comparison_request(a: list[Voiceprint], b: list[Voiceprint], **extra: Any) -> dict[str, Any]:
    """The JSON body of a comparison of `a` and `b`, with `extra` fields (top_k, calibration)."""
    return {
        "voiceprints_a": [vp.to_base64() for vp in a],
        "voiceprints_b": [vp.to_base64() for vp in b],
        **extra,
    }


def finished_comparison(
    client: httpx.Client, request: dict[str, Any], timeout: float = 60
) -> tuple[str, dict[str, Any]]:
    """The location and `result` of the done comparison task of `request`."""
    accepted = client.post(COMPARISON, json=request)
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    done = wait_for_task(client, location, timeout).json()
    assert done["task"]["state"] == "done", done
    return location, done["result"]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) is in parentheses and may hold spaces.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def burst(server: RunningServer, bodies: list[bytes], threads: int) -> list[httpx.Response]:
    """POST every body as fast as `threads` clients can; keep responses in body order."""
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def worker(offset: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            for index in range(offset, len(bodies), threads):
                responses[index] = client.post(
                    COMPARISON, content=bodies[index], headers={"content-type": "application/json"}
                )

    pool = [threading.Thread(target=worker, args=(offset,)) for offset in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert all(response is not None for response in responses)
    return [response for response in responses if response is not None]


def random_batch(count: int, seed: int) -> VoiceprintBatch:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((count, 192)).astype(np.float32)
    return VoiceprintBatch(embeddings, np.full(count, 12.0, np.float32), DEFAULT_MODEL_NAME)


def comparison_bodies(count: int) -> tuple[list[bytes], Callable[[int], np.ndarray]]:
    """`count` 1000 x 1000 comparison bodies, and the REST score matrix each must give."""
    shared_a = random_batch(1000, seed=1)
    listed_a = shared_a.to_base64_list()
    b_sets = [random_batch(1000, seed=100 + index) for index in range(count)]
    bodies = [
        orjson.dumps({"voiceprints_a": listed_a, "voiceprints_b": b.to_base64_list()})
        for b in b_sets
    ]

    def expected(index: int) -> np.ndarray:
        return compare(shared_a, b_sets[index]).T

    return bodies, expected


def speech_clip(speaker: str, recording: str, min_seconds: float = 3.0) -> NDArray[np.float32]:
    """The longest single-speaker run of `speaker` in AMI recording `recording` (16 kHz)."""
    from tools import corpora

    runs = [
        segment
        for segment in corpora.ami_segments(min_seconds)
        if segment.speaker == speaker and segment.path.stem == recording
    ]
    assert runs, f"no run of {speaker} in {recording}"
    longest = max(runs, key=lambda segment: segment.end - segment.start)
    return corpora.load_segment(longest)


def model_env() -> dict[str, str]:
    """Server settings that take the model files from the tests' shared cache, fetched once."""
    from tools import corpora
    from voxmatch.assets import locate_all
    from voxmatch.models.registry import CAMPPLUS_WEIGHTS
    from voxmatch.vad import SILERO_VAD_SEQUENCE

    folder = corpora.models_cache_dir()
    locate_all([CAMPPLUS_WEIGHTS, SILERO_VAD_SEQUENCE], folder)
    return {"VOXMATCH_MODELS_DIR": str(folder), "VOXMATCH_MODEL_CACHE_DIR": str(folder)}


def task_state(client: httpx.Client, location: str) -> str:
    response = client.get(location)
    assert response.status_code == 200, response.text
    return str(response.json()["task"]["state"])


@functools.cache
def holding_audio() -> bytes:
    """Seven minutes of real speech as a 7-channel 16-bit WAV (13 MB): the 14 AMI excerpts, two
    after one another on each channel. Extracting it keeps a worker busy for many seconds."""
    from tools import corpora

    excerpts = [corpora.load(speech_file.path) for speech_file in corpora.ami_files()]
    channels = [np.concatenate(excerpts[index : index + 2]) for index in range(0, 14, 2)]
    length = min(channel.shape[0] for channel in channels)
    buffer = io.BytesIO()
    sf.write(
        buffer,
        np.stack([channel[:length] for channel in channels], axis=1),
        16000,
        format="WAV",
        subtype="PCM_16",
    )
    return buffer.getvalue()


def hold_the_worker(client: httpx.Client) -> str:
    """Give a worker a real, long task: the extraction of `holding_audio`, channel by channel.
    Returns the task's location once a worker runs it (the server needs `model_env()`).

    How long it runs depends on the machine, so a test that needs a busy worker checks that this
    task is still running *after* the observations it draws conclusions from: only then do they
    prove anything. DELETE the task to stop it (extraction checks for a stop every few seconds
    of audio).
    """
    accepted = client.post(EXTRACTION, files={"file": ("holding.wav", holding_audio())})
    assert accepted.status_code == 202, accepted.text
    location = str(accepted.headers["location"])
    wait_until(lambda: task_state(client, location) == "running", "a worker to take the task")
    return location


def restart_after_kill(
    server: RunningServer, server_factory: ServerFactory, env: dict[str, str], holding: str
) -> httpx.Client:
    """kill -9 a server whose only worker is on `holding` (from `hold_the_worker`), so that
    every task accepted since is still waiting; start it again on the same data folder, stop the
    holding task, and give a client of the restarted server."""
    assert task_state(server.client(), holding) == "running", "the holding task ended too soon"
    server.kill()
    client = server_factory(env, data_dir=server.data_dir).client()
    assert client.delete(holding).status_code == 204
    return client
