"""API keys over gRPC, through a real server: UNAUTHENTICATED without a valid x-api-key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from _grpc_helpers import channel, compare_requests, error_details
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phonexia.grpc.common import status_pb2, status_pb2_grpc
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2_grpc as sid_grpc,
)

from _helpers import RunningServer, random_batch, start_server
from voxmatch import compare
from voxmatch.api_keys import add_key

Metadata = tuple[tuple[str, str], ...]


@dataclass
class KeyedServer:
    server: RunningServer
    key: str


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    folder = tmp_path_factory.mktemp("grpc-keys")
    key_file = folder / "api-keys"
    key = add_key(key_file, "alice")
    running = start_server(folder / "data", {"VOXMATCH_API_KEYS_FILE": str(key_file)})
    yield KeyedServer(running, key)
    running.stop()


def get_status(server: RunningServer, metadata: Metadata) -> status_pb2.GetStatusResponse:
    with channel(server) as open_channel:
        stub = status_pb2_grpc.StatusStub(open_channel)
        response: status_pb2.GetStatusResponse = stub.GetStatus(
            status_pb2.GetStatusRequest(), metadata=metadata, timeout=30
        )
        return response


def compare_scores(server: RunningServer, metadata: Metadata) -> np.ndarray:
    batch_a, batch_b = random_batch(4, seed=1), random_batch(3, seed=2)
    requests = compare_requests(batch_a.to_bytes_list(), batch_b.to_bytes_list())
    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintComparisonStub(open_channel)
        responses: list[sid.CompareResponse] = list(
            stub.Compare(requests, metadata=metadata, timeout=60)
        )
    (response,) = responses
    return np.array(response.scores.values, dtype=np.float32).reshape(4, 3)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "an API key is required"),
        ((("x-api-key", "not-a-key"),), "not valid"),
        ((("authorization", "Bearer not-a-key"),), "not valid"),
    ],
)
def test_calls_without_a_valid_key_are_unauthenticated(
    keyed: KeyedServer, metadata: Metadata, reason: str
) -> None:
    for call in (get_status, compare_scores):  # a unary and a streaming method
        with pytest.raises(grpc.RpcError) as caught:
            call(keyed.server, metadata)
        error = caught.value
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason in error_details(error)


def test_calls_with_the_key_are_served(keyed: KeyedServer) -> None:
    for metadata in ((("x-api-key", keyed.key),), (("authorization", f"Bearer {keyed.key}"),)):
        assert get_status(keyed.server, metadata).name == "voxmatch"
        scores = compare_scores(keyed.server, metadata)
        expected = compare(random_batch(4, seed=1), random_batch(3, seed=2))
        # Server and test compute the same product, but with possibly different BLAS blocking.
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4)


def test_health_needs_no_key(keyed: KeyedServer) -> None:
    with channel(keyed.server) as open_channel:
        answer = health_pb2_grpc.HealthStub(open_channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
