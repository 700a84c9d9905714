"""Test helpers: real voxmatch servers in subprocesses, voiceprints, polling."""

from __future__ import annotations

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

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

from voxmatch import Voiceprint, VoiceprintBatch, compare
from voxmatch.models import DEFAULT_MODEL_NAME

COMPARISON = "/api/technology/speaker-identification-voiceprint-comparison"


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
    from voxmatch import _corpora

    runs = [
        segment
        for segment in _corpora.ami_segments(min_seconds)
        if segment.speaker == speaker and segment.path.stem == recording
    ]
    assert runs, f"no run of {speaker} in {recording}"
    longest = max(runs, key=lambda segment: segment.end - segment.start)
    return _corpora.load_segment(longest)


def model_env() -> dict[str, str]:
    """Server settings that take the model files from the tests' shared cache, fetched once."""
    from voxmatch import _corpora
    from voxmatch.assets import locate_all
    from voxmatch.models.registry import CAMPPLUS_WEIGHTS
    from voxmatch.vad import SILERO_VAD_SEQUENCE

    folder = _corpora.models_cache_dir()
    locate_all([CAMPPLUS_WEIGHTS, SILERO_VAD_SEQUENCE], folder)
    return {"VOXMATCH_MODELS_DIR": str(folder), "VOXMATCH_MODEL_CACHE_DIR": str(folder)}
