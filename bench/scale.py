"""Large comparisons to `.npy`, with the local runner and with the Ray runner, against the floor.

The floor, measured in this process in the same run, is the bare `score_matrix(a, b)` of the
same inputs plus `np.save` of the matrix to a file. End to end is a real client against a real
`voxmatch serve` on loopback: POST the two lists, poll with `Accept: application/x-npy` until
the task is done, and stream the `.npy` to a file on disk. The Ray runner's server uses a
cluster of 2 simulated nodes of 1 CPU each (`ray.cluster_utils`, on this machine, loopback
only). Targets: local <= 1.5x its floor, Ray <= 2.5x.

Per-block figures (what a real cluster's throughput follows from): the time of one block
scored in this process, the bytes it sends back, and the blocks per second each runner
sustained end to end.

`--huge` adds 50,000 x 50,000 (10 GB of float32) with the local runner to a `.npy` on disk,
reporting the server's peak resident memory (VmHWM; target under 2 GB).

`--extraction` then runs bench.scale_extraction (bulk extraction throughput locally and on Ray
against bare inference; see its own options there).

    .venv/bin/python -m bench.scale [--size 20000] [--repeats 2] [--huge] [--extraction]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson

from bench import scale_extraction
from bench._common import memory_status, random_voiceprints, server_process
from voxmatch.blocked_comparison import BlockedComparison, Side
from voxmatch.cluster import LOOPBACK_ONLY_ENVIRONMENT as LOOPBACK_RAY_ENVIRONMENT
from voxmatch.models.registry import describe
from voxmatch.scoring import DEFAULT_MEMORY_BUDGET, Traits, score_matrix
from voxmatch.voiceprint import decode_base64_batch

PATH = "/api/technology/speaker-identification-voiceprint-comparison"
NPY = "application/x-npy"
COPY_BYTES = 16 << 20


def body(count_a: int, count_b: int) -> bytes:
    return orjson.dumps(
        {
            "voiceprints_a": random_voiceprints(count_a, seed=1),
            "voiceprints_b": random_voiceprints(count_b, seed=2),
        }
    )


def floor(request: bytes, out: Path) -> float:
    """Seconds of the bare product plus np.save (inputs decoded beforehand, not timed)."""
    lists = orjson.loads(request)
    batch_a = decode_base64_batch(lists["voiceprints_a"])
    batch_b = decode_base64_batch(lists["voiceprints_b"])
    started = time.perf_counter()
    scores = score_matrix(
        batch_a.embeddings, batch_b.embeddings, describe(batch_a.model).calibration
    )
    np.save(out, scores)
    elapsed = time.perf_counter() - started
    del scores
    out.unlink()
    return elapsed


def block_figures(request: bytes) -> tuple[int, float, int, int]:
    """(block rows, seconds of one block scored here, bytes of one block, blocks)."""
    lists = orjson.loads(request)
    batch_a = decode_base64_batch(lists["voiceprints_a"])
    batch_b = decode_base64_batch(lists["voiceprints_b"])
    comparison = BlockedComparison.scores(
        Side(batch_a.embeddings, Traits.of(batch_a)),
        Side(batch_b.embeddings, Traits.of(batch_b)),
        describe(batch_a.model).calibration,
        DEFAULT_MEMORY_BUDGET,
    )
    block = next(comparison.blocks())
    comparison.score(block)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        comparison.score(block)
        times.append(time.perf_counter() - started)
    return comparison.block_rows, min(times), comparison.block_bytes, comparison.block_count


def end_to_end(base_url: str, request: bytes, out: Path) -> float:
    """Seconds from the POST to the last byte of the .npy written to `out`."""
    address = urllib.parse.urlsplit(base_url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=3600)
    started = time.perf_counter()
    connection.request("POST", PATH, body=request, headers={"content-type": "application/json"})
    answer = connection.getresponse()
    text = answer.read()
    if answer.status != 202:
        raise RuntimeError(f"POST answered {answer.status}: {text[:300]!r}")
    location = answer.getheader("location") or ""
    while True:
        connection.request("GET", location, headers={"accept": NPY})
        answer = connection.getresponse()
        if answer.status == 200 and answer.getheader("content-type") == NPY:
            with out.open("wb") as stream:
                while piece := answer.read(COPY_BYTES):
                    stream.write(piece)
            return time.perf_counter() - started
        text = answer.read()
        if answer.status != 200 or b'"state":"failed"' in text or b'"state":"rejected"' in text:
            raise RuntimeError(f"GET answered {answer.status}: {text[:300]!r}")
        time.sleep(0.05)


@contextmanager
def ray_cluster(nodes: int) -> Iterator[str]:
    os.environ.update(LOOPBACK_RAY_ENVIRONMENT)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert cluster.address is not None
        yield cluster.address
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


def check_npy(path: Path, shape: tuple[int, int]) -> None:
    stored = np.load(path, mmap_mode="r")
    if stored.shape != shape or stored.dtype != np.float32:
        raise RuntimeError(f"unexpected result {stored.shape} {stored.dtype}")


def compare_runners(size: int, folder: Path, repeats: int) -> None:
    """Each runner's best end to end of `repeats` against the best floor of as many runs,
    each floor measured next to the runner's own runs (the machine may be shared)."""
    request = body(size, size)
    out = folder / "scores.npy"
    settings = ("--set", f"max_matrix_size={size * size}")
    print(f"{size} x {size} to .npy ({len(request) / 1e6:.0f} MB request), best of {repeats}")
    rows, block_seconds, block_bytes, blocks = block_figures(request)
    print(
        f"  one block here: {rows} rows x {size} columns, {1000 * block_seconds:.1f} ms,"
        f" {block_bytes / 1e6:.1f} MB back; {blocks} blocks"
    )
    runners = (("local runner", False, 1.5), ("Ray runner (2 nodes x 1 CPU)", True, 2.5))
    for name, on_ray, target in runners:
        with contextlib.ExitStack() as stack:
            extra: tuple[str, ...] = ()
            if on_ray:
                address = stack.enter_context(ray_cluster(nodes=2))
                extra = ("--set", f"ray_address={address}")
            server = stack.enter_context(server_process(*settings, *extra))
            floors, runs = [], []
            for _ in range(repeats):
                floors.append(floor(request, out))
                runs.append(end_to_end(server.endpoints["rest"], request, out))
                check_npy(out, (size, size))
        best_floor, best_run = min(floors), min(runs)
        print(f"  floor (score_matrix + np.save)   {best_floor:7.2f} s  (runs: {_seconds(floors)})")
        print(
            f"  {name:32} {best_run:7.2f} s  ratio {best_run / best_floor:.2f}"
            f" (target <= {target})  {blocks / best_run:.1f} blocks/s"
            f"  (runs: {_seconds(runs)})"
        )
    out.unlink(missing_ok=True)


def _seconds(times: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in times)


def huge(folder: Path) -> None:
    size = 50_000
    request = body(size, size)
    out = folder / "huge.npy"
    print(f"{size} x {size} to .npy, local runner ({len(request) / 1e6:.0f} MB request)")
    with server_process("--set", f"max_matrix_size={size * size}") as server:
        elapsed = end_to_end(server.endpoints["rest"], request, out)
        peak = memory_status(server.process.pid)["VmHWM"]
    check_npy(out, (size, size))
    print(
        f"  done in {elapsed:.1f} s, {out.stat().st_size / 1e9:.1f} GB on disk;"
        f" server peak resident memory {peak / 2**30:.2f} GiB (target < 2 GB)"
    )
    out.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--huge", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--extraction",
        action="store_true",
        help="then bulk extraction throughput, locally and on Ray (bench.scale_extraction)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voxmatch-scale-") as folder:
        compare_runners(args.size, Path(folder), args.repeats)
        if args.huge:
            huge(Path(folder))
    if args.extraction:
        return scale_extraction.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
