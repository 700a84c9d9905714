"""Peak memory of the server against the size of its work: long extractions, large comparisons.

(a) Extraction over REST of recordings of real speech 1, 10, 30 and 120 minutes long (the
corpus clips of tools.corpora concatenated into one 16-bit WAV file): a fresh server for
each length, so that peaks do not carry over; reported are the server's peak RSS (VmHWM of
/proc/<pid>/status) and its RSS once the task is done. Target: a peak under 1 GB at any length.

(b) Square comparisons of 5,000, 10,000 and 20,000 voiceprints fetched as .npy, end to end: a
real client POSTs the voiceprints, polls with `Accept: application/x-npy`, and writes the
streamed result to a file; a fresh server for each run. The floor, measured in the same run
in a child process, in turn with the end-to-end runs (best of --repeats each): the score
matrix of the same embeddings (`score_matrix`, rows = b as the REST result, the server's BLAS
threads) and `np.save` to a file, with the child's own peak RSS. Targets: end to end within
1.5 x the floor's time; server peak RSS within 1.2 x the matrix size + 300 MB.

A guard watches the server and kills it when its RSS passes --kill-above (GB), reporting
"killed above X GB" for that point instead of taking the machine down.

    .venv/bin/python -m bench.memory [--extraction] [--comparison] [--minutes 1 10]
        [--sizes 5000 10000 20000] [--repeats 3] [--kill-above 6] [--blas-threads 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import soundfile
from threadpoolctl import threadpool_limits

from bench._common import Server, memory_status, server_process
from tools import corpora
from voxmatch.models.registry import DEFAULT_MODEL_NAME, describe
from voxmatch.scoring import score_matrix
from voxmatch.voiceprint import VoiceprintBatch

COMPARISON = "/api/technology/speaker-identification-voiceprint-comparison"
EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
NPY = "application/x-npy"
GB = 1e9
MB = 1e6
SAMPLE_RATE = 16000
PIECE = 4 << 20


class Guard:
    """Kills the server when its RSS passes a limit, from a thread that polls it."""

    def __init__(self, server: Server, limit_bytes: float) -> None:
        self.server = server
        self.limit = limit_bytes
        self.killed = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Guard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        process = self.server.process
        while not self._done.wait(0.02) and process.poll() is None:
            try:
                rss = memory_status(process.pid)["VmRSS"]
            except (FileNotFoundError, ProcessLookupError, KeyError):
                return
            if rss > self.limit:
                self.killed = True
                process.kill()
                return


@dataclass
class Point:
    seconds: float
    peak: int
    """The server's VmHWM."""
    after: int
    """The server's VmRSS once the work is done."""


class Killed(Exception):
    pass


def connect(server: Server) -> http.client.HTTPConnection:
    address = urllib.parse.urlsplit(server.endpoints["rest"])
    return http.client.HTTPConnection(address.hostname or "", address.port, timeout=3600)


def finished(server: Server, guard: Guard, work: Iterator[None]) -> Point:
    """Run `work` against the server; the server's memory afterwards (Killed if the guard had
    to kill it)."""
    started = time.perf_counter()
    try:
        for _ in work:
            pass
    except (OSError, http.client.HTTPException):
        if guard.killed:
            raise Killed from None
        raise
    seconds = time.perf_counter() - started
    if guard.killed:
        raise Killed
    status = memory_status(server.process.pid)
    return Point(seconds, status["VmHWM"], status["VmRSS"])


def poll(
    connection: http.client.HTTPConnection, location: str, accept: str
) -> Generator[None, None, http.client.HTTPResponse]:
    """GET the task until it is done (the server holds each GET a while); returns the
    response of the done task, its body unread when it is a .npy file."""
    while True:
        connection.request("GET", location, headers={"accept": accept})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET answered {response.status}: {response.read()[:300]!r}")
        if response.getheader("content-type") == NPY:
            return response
        body = orjson.loads(response.read())
        state = body["task"]["state"]
        if state == "done":
            return response
        if state not in ("pending", "running"):
            raise RuntimeError(f"the task ended {state}: {body['error']}")
        yield


# --- (b) comparison -----------------------------------------------------------------------


def voiceprint_embeddings(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 192)).astype(np.float32)


def floor_child(folder: Path, blas_threads: int) -> None:
    """In a child process: score_matrix + np.save of the embeddings in `folder`; prints the
    seconds and the child's peak RSS as JSON."""
    threadpool_limits(blas_threads, user_api="blas")
    embeddings_a = np.load(folder / "a.npy")
    embeddings_b = np.load(folder / "b.npy")
    calibration = describe(DEFAULT_MODEL_NAME).calibration
    started = time.perf_counter()
    scores = score_matrix(embeddings_b, embeddings_a, calibration)
    np.save(folder / "floor.npy", scores)
    seconds = time.perf_counter() - started
    peak = memory_status(os.getpid())["VmHWM"]
    print(json.dumps({"seconds": seconds, "peak": peak}))


def comparison_floor(folder: Path, blas_threads: int) -> tuple[float, int]:
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.memory",
            "--floor-child",
            str(folder),
            "--blas-threads",
            str(blas_threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(answer.stdout)
    return float(result["seconds"]), int(result["peak"])


def compare_over_rest(server: Server, body: bytes, destination: Path) -> Iterator[None]:
    connection = connect(server)
    connection.request("POST", COMPARISON, body=body, headers={"content-type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 202:
        raise RuntimeError(f"POST answered {response.status}: {answer[:300]!r}")
    done = yield from poll(connection, response.getheader("location") or "", NPY)
    if done.getheader("content-type") != NPY:
        raise RuntimeError(f"the result came as {done.getheader('content-type')}, not {NPY}")
    with destination.open("wb") as stream:
        while piece := done.read(PIECE):
            stream.write(piece)
    connection.close()


def run_comparisons(sizes: list[int], kill_above: float, blas_threads: int, repeats: int) -> bool:
    print("(b) square comparisons fetched as .npy, end to end; floor = score_matrix + np.save")
    print(f"    BLAS threads {blas_threads} (server and floor); best of {repeats}, floor and end")
    print("    to end in turn, a fresh server each time (peaks: the highest of the runs); the")
    print(f"    guard kills the server above {kill_above:g} GB")
    meets = True
    for size in sizes:
        matrix_bytes = size * size * 4
        with tempfile.TemporaryDirectory(prefix="voxmatch-bench-memory-") as temporary:
            folder = Path(temporary)
            embeddings_a = voiceprint_embeddings(size, seed=1)
            embeddings_b = voiceprint_embeddings(size, seed=2)
            np.save(folder / "a.npy", embeddings_a)
            np.save(folder / "b.npy", embeddings_b)
            body = orjson.dumps(
                {
                    "voiceprints_a": voiceprints(embeddings_a),
                    "voiceprints_b": voiceprints(embeddings_b),
                }
            )
            settings = {
                "max_matrix_size": size * size,
                "max_list_length": max(size, 50_000),
                "max_request_bytes": len(body) + (1 << 20),
                "blas_threads": blas_threads,
            }
            arguments = [f"--set={name}={value}" for name, value in settings.items()]
            label = f"{size} x {size} ({matrix_bytes / MB:.0f} MB matrix, {len(body) / MB:.0f} MB"
            print(f"  {label} request)")
            floors: list[tuple[float, int]] = []
            points: list[Point] = []
            for _ in range(repeats):
                floors.append(comparison_floor(folder, blas_threads))
                with (
                    server_process(*arguments) as server,
                    Guard(server, kill_above * GB) as guard,
                ):
                    try:
                        points.append(
                            finished(
                                server, guard, compare_over_rest(server, body, folder / "rest.npy")
                            )
                        )
                    except Killed:
                        break
                check_same_scores(folder / "rest.npy", folder / "floor.npy")
            floor_seconds = min(seconds for seconds, _ in floors)
            floor_peak = max(peak for _, peak in floors)
            print(
                f"    floor (child process)   {floor_seconds:7.2f} s, peak RSS"
                f" {floor_peak / MB:6.0f} MB"
            )
            if len(points) < len(floors):
                print(f"    end to end              killed above {kill_above:g} GB")
                meets = False
                continue
            seconds = min(point.seconds for point in points)
            peak = max(point.peak for point in points)
            after = max(point.after for point in points)
            ratio = seconds / floor_seconds
            target_rss = 1.2 * matrix_bytes + 300 * MB
            print(
                f"    end to end over HTTP    {seconds:7.2f} s, server peak RSS"
                f" {peak / MB:6.0f} MB (after: {after / MB:.0f} MB)"
            )
            print(f"    ratio time / floor      {ratio:7.2f}   (target <= 1.5)")
            print(
                f"    server peak / matrix    {peak / matrix_bytes:7.2f}   (peak target"
                f" {target_rss / MB:.0f} MB = 1.2 x matrix + 300 MB:"
                f" {'met' if peak <= target_rss else 'NOT met'})"
            )
            meets = meets and ratio <= 1.5 and peak <= target_rss
    return meets


def voiceprints(embeddings: np.ndarray) -> list[str]:
    speech = np.full(len(embeddings), 30.0, dtype=np.float32)
    return VoiceprintBatch(embeddings, speech, DEFAULT_MODEL_NAME).to_base64_list()


def check_same_scores(served: Path, floor: Path) -> None:
    """The served matrix is the floor's (rows = voiceprints_b), to float32 rounding of
    differently blocked products."""
    from_server = np.load(served, mmap_mode="r")
    from_floor = np.load(floor, mmap_mode="r")
    if from_server.shape != from_floor.shape:
        raise RuntimeError(f"served {from_server.shape}, expected {from_floor.shape}")
    for rows in (slice(0, 64), slice(-64, None)):
        np.testing.assert_allclose(from_server[rows], from_floor[rows], rtol=1e-5, atol=1e-4)


# --- (a) extraction -----------------------------------------------------------------------


def speech_recording(minutes: float, path: Path) -> int:
    """A 16 kHz 16-bit WAV of real speech of that length at `path`; its size in bytes."""
    clips = [corpora.load(item.path) for item in corpora.ami_files()]
    clips += [corpora.load(item.path) for item in corpora.an4_files() + corpora.librivox_files()]
    wanted = int(minutes * 60 * SAMPLE_RATE)
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16", format="WAV") as output:
        written = 0
        while written < wanted:
            for clip in clips:
                part = clip[: wanted - written]
                output.write(part)
                written += len(part)
                if written >= wanted:
                    break
    return path.stat().st_size


def extract_over_rest(server: Server, recording: Path) -> Iterator[None]:
    boundary = "voxmatch-bench-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file";'
        f' filename="{recording.name}"\r\nContent-Type: audio/wav\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    connection = connect(server)
    connection.putrequest("POST", EXTRACTION)
    connection.putheader("content-type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("content-length", str(len(head) + recording.stat().st_size + len(tail)))
    connection.endheaders()
    connection.send(head)
    with recording.open("rb") as stream:
        while piece := stream.read(PIECE):
            connection.send(piece)
    connection.send(tail)
    response = connection.getresponse()
    answer = response.read()
    if response.status != 202:
        raise RuntimeError(f"POST answered {response.status}: {answer[:300]!r}")
    yield from poll(connection, response.getheader("location") or "", "application/json")
    connection.close()


def run_extractions(minutes_list: list[float], kill_above: float) -> bool:
    print("(a) REST extraction of real speech; a fresh server per length; guard kills the")
    print(f"    server above {kill_above:g} GB")
    meets = True
    models = str(corpora.models_cache_dir())
    for minutes in minutes_list:
        with tempfile.TemporaryDirectory(prefix="voxmatch-bench-memory-") as temporary:
            recording = Path(temporary) / f"speech-{minutes:g}min.wav"
            size = speech_recording(minutes, recording)
            arguments = [f"--set=max_upload_bytes={size + (1 << 20)}"]
            with (
                server_process(*arguments, env={"VOXMATCH_MODELS_DIR": models}) as server,
                Guard(server, kill_above * GB) as guard,
            ):
                try:
                    point = finished(server, guard, extract_over_rest(server, recording))
                except Killed:
                    print(
                        f"  {minutes:5g} min ({size / MB:5.0f} MB WAV): killed above"
                        f" {kill_above:g} GB"
                    )
                    meets = False
                    continue
            print(
                f"  {minutes:5g} min ({size / MB:5.0f} MB WAV): {point.seconds:7.1f} s, server"
                f" peak RSS {point.peak / MB:6.0f} MB, after {point.after / MB:6.0f} MB"
                f"{'' if point.peak < GB else '  (target: peak < 1 GB)'}"
            )
            meets = meets and point.peak < GB
    return meets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extraction", action="store_true", help="run part (a) only")
    parser.add_argument("--comparison", action="store_true", help="run part (b) only")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30, 120])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10_000, 20_000])
    parser.add_argument("--kill-above", type=float, default=6.0, help="GB (default 6)")
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="comparisons: best of N")
    parser.add_argument("--floor-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_child is not None:
        floor_child(args.floor_child, args.blas_threads)
        return 0
    both = not (args.extraction or args.comparison)
    meets = True
    if args.extraction or both:
        meets = run_extractions(args.minutes, args.kill_above) and meets
    if args.comparison or both:
        meets = (
            run_comparisons(args.sizes, args.kill_above, args.blas_threads, args.repeats) and meets
        )
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
