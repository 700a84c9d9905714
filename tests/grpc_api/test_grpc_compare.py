"""gRPC VoiceprintComparison.Compare on a real server: batching, chunking, orientation, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from _grpc_helpers import channel, compare, compare_requests, error_details, grpc_address
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phonexia.grpc.common import core_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2_grpc as sid_grpc,
)

from _helpers import (
    COMPARISON,
    RunningServer,
    ServerFactory,
    assert_scores_close,
    random_batch,
    start_server,
    wait_for_task,
)
from voxmatch import compare as compare_in_process
from voxmatch.voiceprint import VoiceprintBatch, encode_records

MAX_MESSAGE = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # A matrix limit above the default, so that one response cannot hold the whole matrix.
    running = start_server(
        tmp_path_factory.mktemp("grpc-compare") / "data",
        {"VOXMATCH_MAX_MATRIX_SIZE": "4000000"},
    )
    yield running
    running.stop()


def other_model_records(count: int, seed: int) -> list[bytes]:
    """Well-formed voiceprints (valid checksums) that claim another model."""
    batch = random_batch(count, seed)
    blob = encode_records(batch.embeddings, batch.speech_lengths, "another-model")
    size = len(blob) // count
    return [blob[start : start + size] for start in range(0, len(blob), size)]


def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    assert isinstance(call, grpc.RpcError)
    return call.code(), error_details(call)


def serving(server: RunningServer) -> bool:
    with channel(server) as open_channel:
        stub = health_pb2_grpc.HealthStub(open_channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def test_large_non_square_matrix_is_chunked_and_oriented_as_the_proto(
    server: RunningServer,
) -> None:
    batch_a, batch_b = random_batch(1500, seed=11), random_batch(1100, seed=12)
    scores, responses = compare(server, batch_a.to_bytes_list(), batch_b.to_bytes_list())

    # Orientation: row i is voiceprints_a[i], as the proto says. This process computes with
    # other BLAS threads than the server: the same scores up to float32 rounding.
    assert scores.shape == (1500, 1100)
    assert_scores_close(scores, compare_in_process(batch_a, batch_b))
    # 1500 x 1100 floats are 6.6 MB: more than one message, each under the 4 MiB default.
    assert len(responses) >= 2
    assert all(response.ByteSize() < MAX_MESSAGE for response in responses)
    assert responses[0].scores.rows_count == 1500
    assert responses[0].scores.columns_count == 1100
    assert all(response.scores.rows_count == 0 for response in responses[1:])
    # Messages hold whole rows.
    assert all(len(response.scores.values) % 1100 == 0 for response in responses)

    # REST returns the transpose: rows follow voiceprints_b. The server computes both the same
    # way (rows on a, then transposed), so they agree bit for bit, as docs/grpc.md promises.
    client = server.client()
    accepted = client.post(
        COMPARISON,
        json={"voiceprints_a": batch_a.to_base64_list(), "voiceprints_b": batch_b.to_base64_list()},
    )
    assert accepted.status_code == 202, accepted.text
    result = wait_for_task(client, accepted.headers["location"]).json()["result"]["scores"]
    assert (result["rows_count"], result["columns_count"]) == (1100, 1500)
    rest = np.array(result["values"], dtype=np.float32).reshape(1100, 1500)
    np.testing.assert_array_equal(scores, rest.T)


def test_one_by_one_and_one_request_per_voiceprint(server: RunningServer) -> None:
    batch_a, batch_b = random_batch(3, seed=21), random_batch(2, seed=22)
    expected = compare_in_process(batch_a, batch_b)
    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintComparisonStub(open_channel)
        responses = list(
            stub.Compare(
                compare_requests(batch_a.to_bytes_list(), batch_b.to_bytes_list(), batch=1)
            )
        )
    assert len(responses) == 1
    matrix = responses[0].scores
    assert (matrix.rows_count, matrix.columns_count) == (3, 2)
    assert_scores_close(np.array(matrix.values, dtype=np.float32), expected.ravel())
    scores, _ = compare(server, batch_a.to_bytes_list()[:1], batch_b.to_bytes_list()[:1])
    assert scores.shape == (1, 1)
    assert_scores_close(scores[0, 0], expected[0, 0])


def expect_invalid(server: RunningServer, list_a: list[bytes], list_b: list[bytes]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        compare(server, list_a, list_b)
    code, details = status_of(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    return details


def test_bad_voiceprint_is_named_by_list_and_index(server: RunningServer) -> None:
    list_a = random_batch(1100, seed=31).to_bytes_list()
    list_b = random_batch(1200, seed=32).to_bytes_list()
    damaged = bytearray(list_b[1030])
    damaged[100] ^= 0xFF
    list_b[1030] = bytes(damaged)  # in the second request of the stream
    details = expect_invalid(server, list_a, list_b)
    assert details.startswith("voiceprints_b[1030]: "), details
    assert "checksum" in details

    truncated = list(list_a)
    truncated[7] = truncated[7][:50]
    details = expect_invalid(server, truncated, list_b[:3])
    assert details.startswith("voiceprints_a[7]: "), details


def test_mixed_models_are_refused(server: RunningServer) -> None:
    list_a = random_batch(4, seed=41).to_bytes_list()
    list_b = random_batch(6, seed=42).to_bytes_list()
    list_b[5] = other_model_records(1, seed=43)[0]
    details = expect_invalid(server, list_a, list_b)
    assert details.startswith("voiceprints_b[5]: "), details
    assert "model" in details

    details = expect_invalid(server, list_a, other_model_records(3, seed=44))
    assert details.startswith("voiceprints_b[0]: "), details
    assert "another-model" in details


def test_empty_list_and_oversized_matrix_are_refused(server: RunningServer) -> None:
    voiceprints = random_batch(2, seed=51).to_bytes_list()
    assert "voiceprints_b is empty" in expect_invalid(server, voiceprints, [])
    assert "voiceprints_a is empty" in expect_invalid(server, [], voiceprints)

    many = VoiceprintBatch(
        np.ones((2001, 192), np.float32), np.ones(2001, np.float32), random_batch(1, 0).model
    ).to_bytes_list()
    details = expect_invalid(server, many, many)
    assert "max_matrix_size" in details


def test_broken_streams_lose_nothing_and_leave_the_server_healthy(
    server: RunningServer,
) -> None:
    # A REST task accepted before the breakage must still finish, with the right scores.
    batch_a, batch_b = random_batch(300, seed=61), random_batch(200, seed=62)
    client = server.client()
    accepted = client.post(
        COMPARISON,
        json={"voiceprints_a": batch_a.to_base64_list(), "voiceprints_b": batch_b.to_base64_list()},
    )
    assert accepted.status_code == 202

    # 1. The client cancels mid-stream.
    sent_some = threading.Event()
    cancelled = threading.Event()

    def endless() -> Iterator[sid.CompareRequest]:
        for request in compare_requests(batch_a.to_bytes_list(), batch_b.to_bytes_list(), 100):
            yield request
            sent_some.set()
        cancelled.wait(60)  # never finishes the stream on its own

    with channel(server) as open_channel:
        call = sid_grpc.VoiceprintComparisonStub(open_channel).Compare(endless())
        assert sent_some.wait(30)
        call.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        cancelled.set()

    # 2. The client process dies mid-stream (the connection just breaks).
    script = textwrap.dedent(
        f"""
        import sys, time, grpc
        from phonexia.grpc.common import core_pb2
        from phonexia.grpc.technologies.speaker_identification.v1 import (
            speaker_identification_pb2 as sid, speaker_identification_pb2_grpc as sid_grpc)
        content = bytes.fromhex(sys.stdin.readline().strip())
        def requests():
            while True:
                yield sid.CompareRequest(voiceprints_a=[core_pb2.Voiceprint(content=content)])
                print("sent", flush=True)
                time.sleep(0.05)
        channel = grpc.insecure_channel({grpc_address(server)!r})
        for _ in sid_grpc.VoiceprintComparisonStub(channel).Compare(requests()):
            pass
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as victim:
        assert victim.stdin is not None
        assert victim.stdout is not None
        victim.stdin.write(batch_a.to_bytes_list()[0].hex() + "\n")
        victim.stdin.flush()
        for _ in range(3):
            assert victim.stdout.readline().strip() == "sent"
        victim.kill()

    assert serving(server)
    scores, _ = compare(server, batch_a.to_bytes_list(), batch_b.to_bytes_list())
    assert_scores_close(scores, compare_in_process(batch_a, batch_b))
    done = wait_for_task(client, accepted.headers["location"]).json()
    assert done["task"]["state"] == "done"
    rest = np.array(done["result"]["scores"]["values"], dtype=np.float32).reshape(200, 300)
    np.testing.assert_array_equal(rest.T, scores)
    assert "Traceback" not in server.log()


def occupy_the_only_slot(
    stub: sid_grpc.VoiceprintComparisonStub, voiceprint: bytes, release: threading.Event
) -> tuple[Any, grpc.RpcError]:
    """A call that holds the server's only slot until `release`, and the refusal of another.

    The client cannot see when the server has taken a call, so other calls probe until one is
    refused. A probe served meanwhile held the slot itself, and may have had the held call
    refused: then the held call is made again.
    """
    deadline = time.monotonic() + 120

    def held_stream(started: threading.Event) -> Iterator[sid.CompareRequest]:
        yield sid.CompareRequest(voiceprints_a=[core_pb2.Voiceprint(content=voiceprint)])
        started.set()
        release.wait(120)
        yield sid.CompareRequest(voiceprints_b=[core_pb2.Voiceprint(content=voiceprint)])

    while time.monotonic() < deadline:
        started = threading.Event()
        held = stub.Compare(held_stream(started))
        assert started.wait(30)
        # A streaming call is also a Future (grpc-stubs types it as a CallIterator only).
        assert isinstance(held, grpc.Future)
        while not held.done() and time.monotonic() < deadline:
            try:
                list(stub.Compare(compare_requests([voiceprint], [voiceprint]), timeout=30))
            except grpc.RpcError as refusal:
                # Only the held call can hold the slot that refused this one.
                return held, refusal
    raise AssertionError("no call was refused while another one held the only slot")


def test_saturated_server_answers_resource_exhausted(server_factory: ServerFactory) -> None:
    busy_server = server_factory({"VOXMATCH_GRPC_MAX_CONCURRENT_RPCS": "1"})
    voiceprint = random_batch(1, seed=71).to_bytes_list()[0]
    release = threading.Event()

    with channel(busy_server) as open_channel:
        stub = sid_grpc.VoiceprintComparisonStub(open_channel)
        slow_call, refusal = occupy_the_only_slot(stub, voiceprint, release)
        code, _ = status_of(refusal)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        (answer,) = list(slow_call)
        assert answer.scores.rows_count == 1
        # Free again: the next call is served (gRPC frees its count of active calls just after
        # the last one's status is sent, so a call made at that instant may still be refused).
        again = None
        deadline = time.monotonic() + 30
        while again is None:
            try:
                (again,) = list(
                    stub.Compare(compare_requests([voiceprint], [voiceprint]), timeout=30)
                )
            except grpc.RpcError as error:
                refused = error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                if not refused or time.monotonic() > deadline:
                    raise
        assert list(again.scores.values) == list(answer.scores.values)
