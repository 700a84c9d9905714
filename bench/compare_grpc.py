"""End-to-end gRPC comparison against the in-process floor of the REST benchmark.

The floor is `bench.compare_rest.floor` on the same voiceprints: decode the request (JSON,
base64, voiceprint checks), the score matrix, and the JSON encoding of the result, all in this
process. The end-to-end time is a real client against a real `voxmatch serve` on loopback:
VoiceprintComparison.Compare with the requests Phonexia's client sends (a and b interleaved,
at most 1024 voiceprints a message, built before the clock starts, as the REST body is), until
the last response message has arrived and been parsed by protobuf. Turning the received values
into one NumPy matrix is reported apart, as the client's cost. Ratios are end-to-end / floor;
the target is <= 2.

    .venv/bin/python -m bench.compare_grpc [--repeats N]
"""

from __future__ import annotations

import argparse
import functools
import sys
from itertools import zip_longest

import grpc
import numpy as np
import orjson
import pybase64
from phonexia.grpc.common import core_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2_grpc as sid_grpc,
)

from bench._common import measure, random_voiceprints, running_server
from bench.compare_rest import floor
from voxmatch._malloc import retain_freed_memory

SHAPES = [(1000, 1000), (50_000, 20)]
BATCH = 1024


def requests(list_a: list[bytes], list_b: list[bytes]) -> list[sid.CompareRequest]:
    """What Phonexia's comparison client sends: a and b interleaved, BATCH voiceprints at most."""
    built, request, size = [], sid.CompareRequest(), 0
    for item_a, item_b in zip_longest(list_a, list_b):
        if size >= BATCH:
            built.append(request)
            request, size = sid.CompareRequest(), 0
        if item_a is not None:
            request.voiceprints_a.append(core_pb2.Voiceprint(content=item_a))
            size += 1
        if item_b is not None:
            request.voiceprints_b.append(core_pb2.Voiceprint(content=item_b))
            size += 1
    if size:
        built.append(request)
    return built


def end_to_end(
    stub: sid_grpc.VoiceprintComparisonStub, messages: list[sid.CompareRequest]
) -> list[sid.CompareResponse]:
    return list(stub.Compare(iter(messages), timeout=120))


def to_matrix(responses: list[sid.CompareResponse]) -> np.ndarray:
    first = responses[0].scores
    values = np.concatenate([np.array(r.scores.values, dtype=np.float32) for r in responses])
    return values.reshape(first.rows_count, first.columns_count)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    retain_freed_memory()

    ratios = {}
    with running_server() as endpoints, grpc.insecure_channel(endpoints["grpc"]) as channel:
        stub = sid_grpc.VoiceprintComparisonStub(channel)
        for count_a, count_b in SHAPES:
            text_a = random_voiceprints(count_a, seed=1)
            text_b = random_voiceprints(count_b, seed=2)
            body = orjson.dumps({"voiceprints_a": text_a, "voiceprints_b": text_b})
            messages = requests(
                [pybase64.b64decode(item) for item in text_a],
                [pybase64.b64decode(item) for item in text_b],
            )
            floor_time = measure(functools.partial(floor, body), args.repeats)
            e2e_time = measure(functools.partial(end_to_end, stub, messages), args.repeats)
            responses = end_to_end(stub, messages)
            matrix_time = measure(functools.partial(to_matrix, responses), args.repeats)
            rest = orjson.loads(floor(body))["result"]["scores"]
            rest_matrix = np.array(rest["values"], dtype=np.float32).reshape(count_b, count_a)
            if not np.array_equal(to_matrix(responses), rest_matrix.T):
                raise RuntimeError("gRPC scores differ from the REST floor's (transposed)")
            ratio = e2e_time.best / floor_time.best
            ratios[(count_a, count_b)] = ratio
            sizes = [response.ByteSize() for response in responses]
            print(
                f"{count_a} x {count_b} ({len(messages)} request messages,"
                f" {len(responses)} response messages, largest {max(sizes) / 2**20:.2f} MiB)"
            )
            print(f"  floor (in-process, REST)   {floor_time}")
            print(f"  end to end over gRPC       {e2e_time}")
            print(f"  client values -> matrix    {matrix_time}  (apart)")
            print(f"  ratio end-to-end / floor   {ratio:.2f}  (target <= 2)")
    return 0 if all(ratio <= 2 for ratio in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
