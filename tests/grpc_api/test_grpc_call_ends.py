"""gRPC calls that end early (cancel, deadline, bad bytes) and the CPU budget shared with REST.

Each test runs its own server with one compute slot, so that whichever call holds it is the
only heavy work running, and the slot's use can be read from GetStatus at any moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from _grpc_helpers import channel, compare_requests, error_details, file_requests, wav_bytes
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phonexia.grpc.common import core_pb2, status_pb2, status_pb2_grpc
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2_grpc as sid_grpc,
)

from _helpers import (
    RunningServer,
    ServerFactory,
    model_env,
    random_batch,
    speech_clip,
    wait_for_task,
)
from voxmatch import Voiceprint

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
SID = "/phonexia.grpc.technologies.speaker_identification.v1"
LONG_MINUTES = 10
"""Minutes of speech in the recording a call is cancelled in: its extraction takes far longer
than the requests a test makes meanwhile."""


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return speech_clip("FEE083", "trn09")


@pytest.fixture(scope="module")
def long_recording(clip: np.ndarray) -> bytes:
    repeats = int(LONG_MINUTES * 60 * 16000 / len(clip)) + 1
    return wav_bytes(np.tile(clip, repeats)[: LONG_MINUTES * 60 * 16000])


def one_slot_server(
    server_factory: ServerFactory, clip: np.ndarray, env: dict[str, str] | None = None
) -> RunningServer:
    """A server with a budget of one compute slot and its model already loaded."""
    server = server_factory({**model_env(), "VOXMATCH_COMPUTE_SLOTS": "1", **(env or {})})
    assert extract_voiceprint(server, wav_bytes(clip)).speech_length > 3
    return server


def extract_voiceprint(server: RunningServer, content: bytes) -> Voiceprint:
    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintExtractionStub(open_channel)
        response = stub.Extract(file_requests(content), timeout=600)
    return Voiceprint.from_bytes(response.result.voiceprint.content)


def compute_use(server: RunningServer) -> tuple[int, int]:
    """(slots busy, callers waiting for one) as GetStatus reports them."""
    with channel(server) as open_channel:
        status = status_pb2_grpc.StatusStub(open_channel).GetStatus(
            status_pb2.GetStatusRequest(), timeout=30
        )

    def value(key: str) -> int:
        wrapped = wrappers_pb2.Int64Value()
        assert status.configuration[key].Unpack(wrapped)
        return int(wrapped.value)

    assert value("compute_slots") == 1
    return value("compute_slots_busy"), value("compute_slots_waiting")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def log_line(server: RunningServer, text: str) -> str:
    """The first line of the server log containing `text` (waits for it to appear)."""
    wait_until(lambda: text in server.log(), f"the server logs {text!r}")
    return next(line for line in server.log().splitlines() if text in line)


def assert_quiet_log(server: RunningServer) -> None:
    """Clients ending calls is normal: nothing of it is an error or a traceback."""
    log = server.log()
    assert " ERROR " not in log, log
    assert "Traceback" not in log, log


def spooled_files(server: RunningServer) -> list[str]:
    return [path.name for path in (server.data_dir / "grpc-uploads").iterdir()]


def start_long_extraction(server: RunningServer, recording: bytes) -> tuple[grpc.Channel, object]:
    """A long Extract from a client of its own, once it holds the only compute slot."""
    own_channel = channel(server)
    call = sid_grpc.VoiceprintExtractionStub(own_channel).Extract.future(
        file_requests(recording), timeout=600
    )
    wait_until(lambda: compute_use(server) == (1, 0), "the long extraction holds the slot")
    return own_channel, call


def cancel(call: object) -> None:
    assert isinstance(call, grpc.Future)
    call.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()


def test_a_cancelled_extract_stops_and_the_next_call_is_served(
    server_factory: ServerFactory, clip: np.ndarray, long_recording: bytes
) -> None:
    server = one_slot_server(server_factory, clip)
    first_channel, first_call = start_long_extraction(server, long_recording)
    with first_channel:
        cancel(first_call)

    # Another client is served, with the one slot the cancelled call held.
    assert extract_voiceprint(server, wav_bytes(clip)).speech_length > 3
    # The cancelled call's work stopped rather than ran to the end of the recording.
    stopped = log_line(server, "Extract: cancelled by the client")
    assert "the extraction stopped" in stopped, stopped
    assert " INFO " in stopped
    assert compute_use(server) == (0, 0)
    assert spooled_files(server) == []
    assert_quiet_log(server)


def test_a_deadline_during_the_upload_ends_the_call_and_deletes_its_spool(
    server_factory: ServerFactory, clip: np.ndarray, long_recording: bytes
) -> None:
    server = one_slot_server(server_factory, clip)
    call_over = threading.Event()

    def stalled_upload() -> Iterator[sid.ExtractRequest]:
        requests = file_requests(long_recording)
        for _ in range(20):  # 2 MB of the recording, then nothing until the call is over
            yield next(requests)
        call_over.wait(120)

    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintExtractionStub(open_channel)
        # Long enough for a busy machine to start the call and spool the first part; the stalled
        # stream never ends, so the deadline still ends the call.
        call = stub.Extract.future(stalled_upload(), timeout=10)
        wait_until(lambda: len(spooled_files(server)) == 1, "the upload is spooled")
        with pytest.raises(grpc.RpcError) as caught:
            call.result()
        call_over.set()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # Where the server was when it heard (reading the stream, or extracting the part it got)
    # depends on the order in which gRPC delivers the end of the stream and the cancellation.
    assert " INFO " in log_line(server, "Extract: deadline exceeded")
    wait_until(lambda: spooled_files(server) == [], "the spooled audio is deleted")
    assert extract_voiceprint(server, wav_bytes(clip)).speech_length > 3
    assert_quiet_log(server)


def test_cheap_calls_do_not_wait_and_a_cancelled_call_leaves_the_line(
    server_factory: ServerFactory, clip: np.ndarray, long_recording: bytes
) -> None:
    # Room for a comparison above the size that takes a slot.
    server = one_slot_server(server_factory, clip, {"VOXMATCH_MAX_MATRIX_SIZE": "2000000"})
    long_channel, long_call = start_long_extraction(server, long_recording)
    small = random_batch(20, seed=5).to_bytes_list()
    with long_channel, channel(server) as open_channel:
        # While the slot is taken, light calls are answered without waiting for it.
        comparison = sid_grpc.VoiceprintComparisonStub(open_channel)
        (scores,) = list(comparison.Compare(compare_requests(small, small), timeout=60))
        assert scores.scores.rows_count == 20
        merged = sid_grpc.VoiceprintMergingStub(open_channel).Merge(
            sid.MergeRequest(voiceprints=[core_pb2.Voiceprint(content=item) for item in small]),
            timeout=60,
        )
        assert merged.speech_length.seconds == 20 * 12
        health = health_pb2_grpc.HealthStub(open_channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert compute_use(server) == (1, 0)  # all that while, the extraction held the slot

        # A large comparison waits in line for the slot, and leaves it when cancelled.
        large_a = random_batch(1001, seed=6).to_bytes_list()
        large_b = random_batch(1000, seed=7).to_bytes_list()
        waiting = comparison.Compare(compare_requests(large_a, large_b), timeout=600)
        wait_until(lambda: compute_use(server) == (1, 1), "the large comparison waits")
        waiting.cancel()
        wait_until(lambda: compute_use(server)[1] == 0, "the cancelled call left the line")
        left = log_line(server, "Compare: cancelled by the client")
        assert "it left the line for a compute slot" in left, left
        cancel(long_call)
    wait_until(lambda: compute_use(server) == (0, 0), "the slot is free")
    assert_quiet_log(server)


def serialized(message: object) -> bytes:
    return message.SerializeToString()  # type: ignore[attr-defined,no-any-return]


GARBAGE = b"\xff\xff\xff\xff"
"""Not a protobuf message: a field tag no varint can end."""


def test_bytes_that_do_not_parse_are_invalid_argument_without_a_traceback(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    voiceprint = core_pb2.Voiceprint(content=random_batch(1, seed=8).to_bytes_list()[0])
    with channel(server) as open_channel:
        # No serializers (None, None): the raw bytes go on the wire as they are.
        calls = {
            "Merge": lambda: open_channel.unary_unary(f"{SID}.VoiceprintMerging/Merge", None, None)(
                GARBAGE, timeout=30
            ),
            "GetStatus": lambda: open_channel.unary_unary(
                "/phonexia.grpc.common.Status/GetStatus", None, None
            )(GARBAGE, timeout=30),
            "Check": lambda: open_channel.unary_unary("/grpc.health.v1.Health/Check", None, None)(
                GARBAGE, timeout=30
            ),
            "Extract": lambda: open_channel.stream_unary(
                f"{SID}.VoiceprintExtraction/Extract", None, None
            )(iter([GARBAGE]), timeout=30),
            # A good message first: the bad one is found in the middle of the stream.
            "Compare": lambda: list(
                open_channel.stream_stream(f"{SID}.VoiceprintComparison/Compare", None, None)(
                    iter([serialized(sid.CompareRequest(voiceprints_a=[voiceprint])), GARBAGE]),
                    timeout=30,
                )
            ),
            "Convert": lambda: list(
                open_channel.stream_stream(f"{SID}.VoiceprintConversion/Convert", None, None)(
                    iter([GARBAGE]), timeout=30
                )
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "cannot be parsed" in error_details(error), method
            log_line(server, f"{method}: INVALID_ARGUMENT: the request message cannot be parsed")

        # The server goes on serving.
        answer = health_pb2_grpc.HealthStub(open_channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert_quiet_log(server)


def test_rest_and_grpc_share_one_cpu_budget(
    server_factory: ServerFactory, clip: np.ndarray, long_recording: bytes
) -> None:
    server = one_slot_server(server_factory, clip)
    long_channel, long_call = start_long_extraction(server, long_recording)
    client = server.client()
    with long_channel:
        accepted = client.post(EXTRACTION, files={"file": ("clip.wav", wav_bytes(clip))})
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        # The REST task waits in line for the slot the gRPC extraction holds, still pending.
        wait_until(lambda: compute_use(server) == (1, 1), "the REST task waits for the slot")
        assert client.get(location).json()["task"]["state"] == "pending"
        queue = client.get("/api/system/status").json()["queue"]
        assert (queue["waiting"], queue["running"]) == (1, 0)
        cancel(long_call)

    done = wait_for_task(client, location, timeout=300).json()
    assert done["task"]["state"] == "done", done
    (channel_result,) = done["result"]["channels"]
    assert Voiceprint.from_base64(channel_result["voiceprint"]).speech_length > 3
    # The worker gives its slot back just after the task is seen done.
    wait_until(lambda: compute_use(server) == (0, 0), "the REST task frees its slot")
    assert_quiet_log(server)
