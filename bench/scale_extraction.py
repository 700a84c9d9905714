"""Bulk extraction throughput, in hours of audio per hour per core, against bare inference.

The speech: every AMI excerpt (14 x 30 s), the LibriVox reader's and the CMU AN4 utterances
(all fetched by tools.corpora), each written `--copies` times as a 16-bit WAV file into one
folder, so that the workers share many files, as in an archive. Three runs on the same files:

- floor: bare inference, the Extractor in this process on one onnxruntime thread, file after
  file (decode, voice activity detection, network): what one core does with no orchestration;
- local: `voxmatch extract DIR --processes P` (P worker processes, one thread each), end to end
  as a user runs it: start-up, model loading in each process, writing the voiceprints;
- Ray: `voxmatch extract DIR --ray ADDRESS` against a `ray.cluster_utils` cluster of `--nodes`
  simulated nodes of one CPU each on this machine (one actor per node), end to end.

Throughput per core = audio hours / wall hours / cores used (1 for the floor, P locally, the
nodes' CPUs on Ray); the ratio is the floor's throughput per core over the run's (1.0: every
core as busy as the bare model; targets: local <= 1.5, Ray <= 2.5). On one machine of C cores
the simulated nodes share those cores, so Ray can only add overhead; the per-file figures say
what N real machines would give.

    .venv/bin/python -m bench.scale_extraction [--copies N] [--processes P] [--nodes N]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

from tools import corpora
from voxmatch.extraction import load_extractor
from voxmatch.models.registry import DEFAULT_MODEL_NAME

LOOPBACK_RAY_ENVIRONMENT = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
"""Every Ray process on 127.0.0.1 (see tests/_ray_cluster.py)."""


def write_corpus(folder: Path, copies: int) -> float:
    """The speech files, `copies` times over; their seconds of audio."""
    signals = [corpora.load(item.path) for item in corpora.ami_files()]
    signals += [corpora.load(item.path) for item in corpora.librivox_files() + corpora.an4_files()]
    seconds = 0.0
    for copy in range(copies):
        for index, signal in enumerate(signals):
            buffer = io.BytesIO()
            soundfile.write(buffer, signal, 16000, format="WAV", subtype="PCM_16")
            (folder / f"{copy:03d}-{index:02d}.wav").write_bytes(buffer.getvalue())
            seconds += signal.shape[0] / 16000
    return seconds


def floor_seconds(folder: Path) -> float:
    """Wall seconds of bare inference over the folder's files, one thread, after a warm-up."""
    extractor = load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir(), threads=1)
    files = sorted(folder.glob("*.wav"))
    extractor.extract_source(files[0])
    started = time.perf_counter()
    for path in files:
        extractor.extract_source(path)
    return time.perf_counter() - started


def cli_seconds(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "voxmatch", "extract", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"voxmatch extract {' '.join(args)} failed:\n{result.stderr}")
    return elapsed


def report(label: str, audio: float, wall: float, cores: int, floor_per_core: float) -> float:
    per_core = audio / wall / cores
    ratio = floor_per_core / per_core
    print(
        f"{label:<34} {wall:7.1f} s wall, {cores} core(s): {per_core:6.1f} h of audio per hour"
        f" per core, {audio / wall:6.1f}x real time; ratio to the floor {ratio:.2f}"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="times each file is extracted")
    parser.add_argument("--processes", type=int, default=2, help="local worker processes")
    parser.add_argument("--nodes", type=int, default=2, help="simulated Ray nodes (1 CPU each)")
    args = parser.parse_args()
    env = {
        **os.environ,
        **LOOPBACK_RAY_ENVIRONMENT,
        "VOXMATCH_MODELS_DIR": str(corpora.models_cache_dir()),
        "VOXMATCH_MODEL_CACHE_DIR": str(corpora.models_cache_dir()),
        "VOXMATCH_EXTRACTION_THREADS": "1",
    }
    with tempfile.TemporaryDirectory(prefix="voxmatch-scale-") as scratch:
        folder = Path(scratch, "speech")
        folder.mkdir()
        audio = write_corpus(folder, args.copies)
        files = len(list(folder.glob("*.wav")))
        print(f"{files} files of real speech, {audio:.0f} s ({audio / 3600:.2f} h)")
        floor = floor_seconds(folder)
        floor_per_core = audio / floor
        print(
            f"{'floor: bare inference, 1 thread':<34} {floor:7.1f} s wall, 1 core(s):"
            f" {floor_per_core:6.1f} h of audio per hour per core,"
            f" {1000 * floor / files:.0f} ms per file"
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        local = cli_seconds(
            [str(folder), "--out", str(Path(scratch, "local")), "--processes", str(args.processes)],
            env,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        local_ratio = report(
            f"local, --processes {args.processes}", audio, local, args.processes, floor_per_core
        )
        print(f"{'':<34} CPU time of the run {cpu:.1f} s ({cpu / floor:.2f}x the floor's wall)")
        os.environ.update(LOOPBACK_RAY_ENVIRONMENT)
        from ray.cluster_utils import Cluster

        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            for _ in range(args.nodes - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            print(f"{args.nodes} simulated nodes up in {time.perf_counter() - started:.1f} s")
            ray_wall = cli_seconds(
                [str(folder), "--out", str(Path(scratch, "ray")), "--ray", cluster.address], env
            )
        finally:
            cluster.shutdown()  # type: ignore[no-untyped-call]
        ray_ratio = report(f"Ray, {args.nodes} nodes", audio, ray_wall, args.nodes, floor_per_core)
        local_vps = sorted(Path(scratch, "local").glob("*.vp"))
        ray_vps = sorted(Path(scratch, "ray").glob("*.vp"))
        assert [path.name for path in local_vps] == [path.name for path in ray_vps]
        assert len(local_vps) == files, "every file gave its voiceprint"
        ray_per_core = audio / ray_wall / args.nodes
        print(
            f"per file on Ray: {1000 * ray_wall * args.nodes / files:.0f} ms of a node's core"
            f" (floor {1000 * floor / files:.0f} ms); a cluster of N machines of C cores (one"
            f" actor per core) would extract about N x C x {ray_per_core:.0f} times real time"
        )
    print("targets: local within 1.5x the floor per core, Ray within 2.5x")
    return 0 if local_ratio <= 1.5 and ray_ratio <= 2.5 else 1


if __name__ == "__main__":
    sys.exit(main())
