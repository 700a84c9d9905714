"""End-to-end REST comparison against the in-process floor of the same work.

For each shape, the floor is the least a server must do, measured in this process: decode the
request body (JSON, base64, voiceprint checks), the score matrix (one BLAS thread, as the
server's task), and the JSON encoding of the result. The end-to-end time is a real client
against a real `voxmatch serve` on loopback: POST, poll until done, GET the JSON (the client
receives every byte; parsing it is reported apart, since it is the client's cost). Ratios are
end-to-end / floor, of the medians (and, apart, of the best times) of the repeats, floor and
end to end measured in turns so that both see the same load of a shared machine; the target
is <= 1.5.

Also reported: the time to decode 100,000 voiceprints (target <= 150 ms here), of format version
2 as voxmatch writes them, of version 1 as older releases wrote them, and half of each
(interleaved in one list, as a gallery of old and new voiceprints would send them).

    .venv/bin/python -m bench.compare_rest [--repeats N] [--baseline OTHER/src]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.client
import statistics
import struct
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from bench._common import Timing, measure, random_voiceprints, running_server
from voxmatch._malloc import retain_freed_memory
from voxmatch.models.registry import describe
from voxmatch.scoring import score_matrix
from voxmatch.voiceprint import decode_base64_batch, record_size

PATH = "/api/technology/speaker-identification-voiceprint-comparison"
SHAPES = [(1000, 1000), (50_000, 20)]


class Body(msgspec.Struct):
    voiceprints_a: Annotated[list[str], msgspec.Meta(min_length=1)]
    voiceprints_b: Annotated[list[str], msgspec.Meta(min_length=1)]


_decoder = msgspec.json.Decoder(Body)


def floor(body: bytes) -> bytes:
    request = _decoder.decode(body)
    batch_a = decode_base64_batch(request.voiceprints_a)
    batch_b = decode_base64_batch(request.voiceprints_b, model=batch_a.model)
    scores = score_matrix(
        batch_b.embeddings, batch_a.embeddings, describe(batch_a.model).calibration
    )
    return orjson.dumps(
        {
            "task": {"task_id": "00000000-0000-0000-0000-000000000000", "state": "done"},
            "result": {
                "scores": {
                    "rows_count": scores.shape[0],
                    "columns_count": scores.shape[1],
                    "values": scores.reshape(-1),
                }
            },
            "error": None,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


class Client:
    """A lean HTTP/1.1 client on one kept-alive connection (the standard library's), so that
    what is timed is the server, not a client library's own overhead."""

    def __init__(self, base_url: str) -> None:
        address = urllib.parse.urlsplit(base_url)
        assert address.hostname is not None, base_url
        self.connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closes a connection idle for longer than its keep-alive timeout (5 s),
            # which the floor's measurement of a large shape may take on a busy machine.
            self.connection.close()
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
        return response.status, response.getheader("location") or "", response.read()


def end_to_end(client: Client, body: bytes) -> bytes:
    status, location, answer = client.request("POST", PATH, body)
    if status != 202:
        raise RuntimeError(f"POST answered {status}: {answer[:300]!r}")
    while True:
        status, _, answer = client.request("GET", location)
        head = answer[:200]
        if status == 200 and b'"state":"done"' in head:
            return answer
        if status != 200 or not (b'"state":"pending"' in head or b'"state":"running"' in head):
            raise RuntimeError(f"GET answered {status}: {answer[:300]!r}")
        time.sleep(0.001)


def measure_in_turns(actions: list[Callable[[], object]], repeats: int) -> list[Timing]:
    """Time each action `repeats` times, one after the other in turn (after one warm-up each),
    so that all of them see the same load of a shared machine."""
    for action in actions:
        action()
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(repeats):
        for action, kept in zip(actions, times, strict=True):
            started = time.perf_counter()
            action()
            kept.append(time.perf_counter() - started)
    return [Timing(min(kept), statistics.median(kept)) for kept in times]


def version_1(texts: list[str]) -> list[str]:
    """The same voiceprints as version 1 records (no condition block), as older releases wrote
    them: the documented layout, built here."""
    batch = decode_base64_batch(texts)
    count, dim = batch.embeddings.shape
    header = struct.pack("<4sHHf32s", b"VXVP", 1, dim, 0.0, batch.model.encode())
    size = record_size(dim, version=1)
    records = np.zeros((count, size), dtype=np.uint8)
    records[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    records[:, 8:12] = batch.speech_lengths.astype("<f4").view(np.uint8).reshape(count, 4)
    body_end = len(header) + 4 * dim
    records[:, len(header) : body_end] = batch.embeddings.astype("<f4").view(np.uint8)
    for row in records:
        row[-4:] = np.frombuffer(struct.pack("<I", zlib.crc32(row[:-4].tobytes())), np.uint8)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in records]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the src folder of another voxmatch (say, `git archive` of an older commit): its"
        " server is measured too, in turn with this one, for a before/after in the same load",
    )
    args = parser.parse_args()
    retain_freed_memory()
    # One BLAS thread, as the server's task has (`blas_threads`): OpenBLAS's helper threads keep
    # spinning for a while after each product, so with them every end-to-end run that follows
    # a floor in turn found one of the machine's two cores taken (its median 1.5 times that of
    # a server measured after it). One thread is also the faster floor here.
    threadpool_limits(1, user_api="blas")

    bodies = {}
    for count_a, count_b in SHAPES:
        list_a = random_voiceprints(count_a, seed=1)
        list_b = random_voiceprints(count_b, seed=2)
        bodies[(count_a, count_b)] = orjson.dumps(
            {"voiceprints_a": list_a, "voiceprints_b": list_b}
        )

    ratios = {}
    with contextlib.ExitStack() as servers:
        client = Client(servers.enter_context(running_server())["rest"])
        baseline = None
        if args.baseline is not None:
            source = {"PYTHONPATH": str(args.baseline.resolve())}
            baseline = Client(servers.enter_context(running_server(env=source))["rest"])
        for shape, body in bodies.items():
            actions: list[Callable[[], object]] = [
                functools.partial(floor, body),
                functools.partial(end_to_end, client, body),
            ]
            if baseline is not None:
                actions.append(functools.partial(end_to_end, baseline, body))
            floor_time, e2e_time, *baseline_time = measure_in_turns(actions, args.repeats)
            result = end_to_end(client, body)
            parse_time = measure(functools.partial(orjson.loads, result), args.repeats)
            ratio = e2e_time.median / floor_time.median
            ratios[shape] = ratio
            print(f"{shape[0]} x {shape[1]} ({len(body) / 1e6:.1f} MB request)")
            print(f"  floor (in-process)        {floor_time}")
            print(f"  end to end over HTTP      {e2e_time}")
            print(f"  client JSON parse (apart) {parse_time}")
            print(
                f"  ratio end-to-end / floor  {ratio:.2f} of the medians (target <= 1.5),"
                f" {e2e_time.best / floor_time.best:.2f} of the best"
            )
            for timing in baseline_time:
                print(f"  baseline end to end       {timing}")
                print(
                    f"  baseline ratio            {timing.median / floor_time.median:.2f} of the"
                    f" medians, {timing.best / floor_time.best:.2f} of the best"
                )

    hundred_thousand = random_voiceprints(100_000, seed=3)
    body = orjson.dumps({"voiceprints_a": hundred_thousand, "voiceprints_b": hundred_thousand[:1]})
    from_list: Timing = measure(lambda: decode_base64_batch(hundred_thousand), args.repeats)
    from_json: Timing = measure(
        lambda: decode_base64_batch(_decoder.decode(body).voiceprints_a), args.repeats
    )
    old = version_1(hundred_thousand)
    mixed = [old[index] if index % 2 else text for index, text in enumerate(hundred_thousand)]
    from_old: Timing = measure(lambda: decode_base64_batch(old), args.repeats)
    from_mixed: Timing = measure(lambda: decode_base64_batch(mixed), args.repeats)
    print("decode 100,000 voiceprints")
    print(f"  base64 list -> matrix     {from_list}  (target <= 150 ms)")
    print(f"  JSON body -> matrix       {from_json}")
    print(f"  version 1 list -> matrix  {from_old}")
    print(f"  half of each -> matrix    {from_mixed}")
    return 0 if all(ratio <= 1.5 for ratio in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
