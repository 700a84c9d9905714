"""Speaker galleries: a million enrolled voiceprints, searched over REST, against floors.

One run, one machine. A real `voxmatch serve` on loopback; `--speakers` random 192-dimensional
voiceprints (default 1,000,000) enrolled over REST in bulk requests of 10,000 speakers:

- bulk enrolment rate: speakers per second over the requests (building each body on the
  client is not counted; the target is 1,000,000 in under 60 s);
- resident memory of the server per enrolled voiceprint, against the 768 bytes of its stored
  embedding (target <= 1.2x): the growth of VmRSS from before the gallery to after enrolling
  and searching, and how much of it is the mapped embeddings file (RssFile);
- search of 1 probe and of 100 probes (top 10) end to end over REST (POST, JSON answer), against
  (a) NumPy on the same, unit-length, matrix in memory: one product and `np.argpartition` of
  the scores, the least an exact search does, and (b) FAISS IndexFlatIP on the same data
  (exact inner-product search, its own blocked kernel), as it comes (with its default
  `distance_compute_blas_threshold`: fewer probes than that are searched one by one) and with
  its matrix product forced (threshold 1). Same thread count everywhere:
  `--threads` (default 1, the server's `blas_threads` default). Targets: 1 probe within 2x the
  NumPy floor; 100 probes at least as fast as FAISS.

    .venv/bin/python -m bench.gallery [--speakers N] [--repeats R] [--threads T]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from bench._common import measure, memory_status, server_process
from voxmatch.models import CAMPPLUS
from voxmatch.voiceprint import VoiceprintBatch

BULK = 10_000
TOP_K = 10
STORED_BYTES = 4 * CAMPPLUS.embedding_dim


class Client:
    """The standard library's HTTP/1.1 client on one kept-alive connection."""

    def __init__(self, base_url: str) -> None:
        address = urllib.parse.urlsplit(base_url)
        assert address.hostname is not None, base_url
        self.connection = http.client.HTTPConnection(address.hostname, address.port, timeout=600)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"content-type": "application/json"} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path} answered {response.status}: {answer[:300]!r}")
        return answer


def rss_file(pid: int) -> int:
    """Resident pages of mapped files (RssFile of /proc/<pid>/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return 1024 * int(line.split()[1])
    raise RuntimeError("no RssFile in /proc/<pid>/status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")
    rng = np.random.default_rng(1)
    count, dim = args.speakers, CAMPPLUS.embedding_dim
    embeddings = rng.standard_normal((count, dim)).astype(np.float32)
    speech = rng.uniform(5, 60, count).astype(np.float32)
    probes = VoiceprintBatch(
        rng.standard_normal((100, dim)).astype(np.float32),
        rng.uniform(5, 60, 100).astype(np.float32),
        CAMPPLUS.name,
    )
    probe_texts = probes.to_base64_list()

    with server_process(env={"VOXMATCH_BLAS_THREADS": str(args.threads)}) as server:
        client = Client(server.endpoints["rest"])
        pid = server.process.pid
        client.request("PUT", "/api/galleries/bench")
        before = memory_status(pid)["VmRSS"]
        sending = 0.0
        for start in range(0, count, BULK):
            stop = min(start + BULK, count)
            texts = VoiceprintBatch(
                embeddings[start:stop], speech[start:stop], CAMPPLUS.name
            ).to_base64_list()
            body = orjson.dumps(
                {
                    "speakers": [
                        {"speaker_id": f"speaker-{start + index}", "voiceprints": [text]}
                        for index, text in enumerate(texts)
                    ]
                }
            )
            started = time.perf_counter()
            client.request("POST", "/api/galleries/bench/speakers", body)
            sending += time.perf_counter() - started
        print(
            f"bulk enrolment of {count:,} speakers: {sending:.1f} s over REST,"
            f" {count / sending:,.0f} per second (target: 1,000,000 in < 60 s)"
        )

        searches = {}
        for probes_count in (1, 100):
            body = orjson.dumps({"voiceprints": probe_texts[:probes_count], "top_k": TOP_K})
            searches[probes_count] = measure(
                functools.partial(client.request, "POST", "/api/galleries/bench/search", body),
                args.repeats,
            )
        after = memory_status(pid)
        mapped = rss_file(pid)
        growth = after["VmRSS"] - before
        print(
            f"server memory: VmRSS {before / 1e6:.0f} MB before the gallery,"
            f" {after['VmRSS'] / 1e6:.0f} MB after; {growth / count:.0f} bytes per voiceprint ="
            f" {growth / count / STORED_BYTES:.2f} x the {STORED_BYTES} stored bytes"
            f" (target <= 1.2); mapped embeddings file resident: {mapped / 1e6:.0f} MB;"
            f" peak VmHWM {after['VmHWM'] / 1e6:.0f} MB"
        )

    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    probe_unit = probes.embeddings / np.linalg.norm(probes.embeddings, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(unit)
    default_blas_threshold = faiss.cvar.distance_compute_blas_threshold
    failures = 0
    for probes_count, timing in searches.items():
        rows = probe_unit[:probes_count]

        def numpy_floor(rows: np.ndarray = rows) -> None:
            scores = rows @ unit.T
            best = np.argpartition(scores, -TOP_K, axis=1)[:, -TOP_K:]
            np.take_along_axis(scores, best, axis=1).argsort(axis=1)

        numpy_time = measure(numpy_floor, args.repeats)
        faiss.cvar.distance_compute_blas_threshold = default_blas_threshold
        faiss_time = measure(functools.partial(index.search, rows, TOP_K), args.repeats)
        # FAISS uses its matrix product only from this many probes on; below, a loop per probe.
        faiss.cvar.distance_compute_blas_threshold = 1
        faiss_blas_time = measure(functools.partial(index.search, rows, TOP_K), args.repeats)
        to_numpy = timing.best / numpy_time.best
        to_faiss = timing.best / faiss_time.best
        print(f"search of {probes_count} probe(s) against {count:,}, top {TOP_K}:")
        print(f"  REST end to end        {timing}")
        print(f"  NumPy floor in memory  {numpy_time}   ratio {to_numpy:.2f}")
        print(f"  FAISS IndexFlatIP      {faiss_time}   ratio {to_faiss:.2f}")
        print(
            f"  FAISS, matrix product  {faiss_blas_time}"
            f"   ratio {timing.best / faiss_blas_time.best:.2f}"
        )
        if probes_count == 1 and to_numpy > 2:
            failures += 1
        if probes_count == 100 and to_faiss > 1:
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
