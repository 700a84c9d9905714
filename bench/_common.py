"""Shared pieces of the benchmarks: a real server in a subprocess, timing, synthetic voiceprints."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxmatch.voiceprint import VoiceprintBatch

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Timing:
    best: float
    median: float

    def __str__(self) -> str:
        return f"best {1000 * self.best:8.1f} ms, median {1000 * self.median:8.1f} ms"


def measure(action: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return Timing(min(times), statistics.median(times))


def random_voiceprints(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((count, 192)).astype(np.float32)
    speech = rng.uniform(5, 60, count).astype(np.float32)
    batch = VoiceprintBatch(embeddings, speech, "campplus-zh-en-16k-advanced")
    return batch.to_base64_list()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    endpoints: dict[str, str]
    """`rest`: the base URL, `grpc`: host:port."""


@contextmanager
def server_process(*extra_args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start `voxmatch serve` on free ports in a fresh data folder; yield it once it listens,
    and stop it (if it is still running) on the way out."""
    with tempfile.TemporaryDirectory(prefix="voxmatch-bench-") as data_dir:
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
                data_dir,
                *extra_args,
            ],
            env={**os.environ, "VOXMATCH_LOG_LEVEL": "warning", **(env or {})},
        )
        endpoints = Path(data_dir) / "endpoints.json"
        try:
            deadline = time.monotonic() + 120
            while not endpoints.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.05)
            yield Server(process, dict(json.loads(endpoints.read_text())))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(30)


@contextmanager
def running_server(*extra_args: str, env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Start `voxmatch serve` on free ports in a fresh data folder; yield its endpoints
    (`rest`: the base URL, `grpc`: host:port)."""
    with server_process(*extra_args, env=env) as server:
        yield server.endpoints


def memory_status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status (VmRSS, VmHWM: the peak RSS...), in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Vm") and value.strip().endswith("kB"):
            values[name] = 1024 * int(value.split()[0])
    return values
