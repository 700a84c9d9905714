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
from threadpoolctl import threadpool_limits

from tools import corpora
from voxmatch.cluster import LOOPBACK_ONLY_ENVIRONMENT as LOOPBACK_RAY_ENVIRONMENT
from voxmatch.extraction import load_extractor
from voxmatch.models.registry import DEFAULT_MODEL_NAME

SAMPLE_SECONDS = 0.2
"""How often the CPU time of the Ray actors is read while a run goes on."""


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


def floor_seconds(folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of bare inference over the folder's files, one onnxruntime and one
    BLAS thread, after a warm-up."""
    threadpool_limits(1, user_api="blas")
    extractor = load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir(), threads=1)
    files = sorted(folder.glob("*.wav"))
    extractor.extract_source(files[0])
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        extractor.extract_source(path)
    return time.perf_counter() - started, time.process_time() - cpu


def actor_cpu_seconds() -> dict[int, float]:
    """CPU seconds so far of each extraction actor's process on this machine (/proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        try:
            if (
                not entry.name.isdigit()
                or b"ExtractionWorker" not in (entry / "cmdline").read_bytes()
            ):
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def cli_seconds(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of `voxmatch extract ARGS`, and CPU seconds of it and its worker processes,
    or of the Ray actors it used (sampled from /proc while it runs: the last few tenths of a
    second of each actor are missed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    actors: dict[int, float] = {}
    with subprocess.Popen(
        [sys.executable, "-m", "voxmatch", "extract", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        while run.poll() is None:
            actors.update(actor_cpu_seconds())
            time.sleep(SAMPLE_SECONDS)
        errors = run.stderr.read() if run.stderr else ""
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"voxmatch extract {' '.join(args)} failed:\n{errors}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu + sum(actors.values())


def report(
    label: str, audio: float, wall: float, cpu: float, cores: int, floor: tuple[float, float]
) -> float:
    """Print a run's figures; its ratio to the floor in throughput per core (wall based)."""
    per_core = audio / wall / cores
    ratio = audio / floor[0] / per_core
    print(
        f"{label:<30} {wall:6.1f} s wall on {cores} core(s): {per_core:5.1f} h of audio per hour"
        f" per core ({audio / wall:5.1f}x real time), {ratio:.2f}x the floor;"
        f" CPU {cpu:6.1f} s, {cpu / floor[1]:.2f}x the floor's"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="times each file is extracted")
    parser.add_argument("--processes", type=int, default=2, help="local worker processes")
    parser.add_argument("--nodes", type=int, default=2, help="simulated Ray nodes (1 CPU each)")
    args = parser.parse_args(argv)
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
        print(f"load average before: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")
        floor = floor_seconds(folder)
        print(
            f"{'floor: bare inference':<30} {floor[0]:6.1f} s wall on 1 core(s):"
            f" {audio / floor[0] / 1:5.1f} h of audio per hour per core"
            f" ({audio / floor[0]:5.1f}x real time); CPU {floor[1]:6.1f} s,"
            f" {1000 * floor[1] / files:.0f} ms per file"
        )
        local = cli_seconds(
            [str(folder), "--out", str(Path(scratch, "local")), "--processes", str(args.processes)],
            env,
        )
        local_ratio = report(
            f"local, --processes {args.processes}", audio, *local, args.processes, floor
        )
        os.environ.update(LOOPBACK_RAY_ENVIRONMENT)
        from ray.cluster_utils import Cluster

        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            for _ in range(args.nodes - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            print(f"({args.nodes} simulated nodes up in {time.perf_counter() - started:.1f} s)")
            on_ray = cli_seconds(
                [str(folder), "--out", str(Path(scratch, "ray")), "--ray", cluster.address], env
            )
        finally:
            cluster.shutdown()  # type: ignore[no-untyped-call]
        ray_ratio = report(f"Ray, {args.nodes} nodes", audio, *on_ray, args.nodes, floor)
        print(f"load average after: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")
        local_vps = sorted(path.name for path in Path(scratch, "local").glob("*.vp"))
        ray_vps = sorted(path.name for path in Path(scratch, "ray").glob("*.vp"))
        assert local_vps == ray_vps, "the same voiceprint files"
        assert len(local_vps) == files, "every file gave its voiceprint"
        print(
            f"per file: {1000 * on_ray[1] / files:.0f} ms of CPU on Ray,"
            f" {1000 * local[1] / files:.0f} ms locally, {1000 * floor[1] / files:.0f} ms bare."
            " A cluster of N machines of C"
            f" cores (one actor per core) extracts about N x C x {audio / on_ray[1]:.0f} times"
            " real time, less what the nodes share with other work."
        )
    print("targets: local within 1.5x the floor per core, Ray within 2.5x")
    return 0 if local_ratio <= 1.5 and ray_ratio <= 2.5 else 1


if __name__ == "__main__":
    sys.exit(main())
