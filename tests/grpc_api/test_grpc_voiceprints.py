"""gRPC merging, conversion, status and health, and the matching REST tasks, on a real server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _grpc_helpers import (
    PHONEXIA_BATCH,
    channel,
    compare,
    compare_requests,
    error_details,
    grpc_address,
    self_signed_certificate,
)
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
    FLOAT32_EPS,
    SCORE_TOLERANCE,
    RunningServer,
    assert_scores_close,
    random_batch,
    start_server,
    wait_for_task,
)
from voxmatch import Voiceprint, VoiceprintBatch, __version__
from voxmatch.merging import merge_voiceprints
from voxmatch.models import describe
from voxmatch.scoring import Traits, llr_from_cosines
from voxmatch.voiceprint import encode_records

CONVERSION = "/api/technology/speaker-identification-voiceprint-conversion"
MERGING = "/api/technology/speaker-identification-voiceprint-merging"
SERVICES = [
    "phonexia.grpc.technologies.speaker_identification.v1.VoiceprintComparison",
    "phonexia.grpc.technologies.speaker_identification.v1.VoiceprintExtraction",
    "phonexia.grpc.technologies.speaker_identification.v1.VoiceprintMerging",
    "phonexia.grpc.technologies.speaker_identification.v1.VoiceprintConversion",
    "phonexia.grpc.common.Status",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("grpc-voiceprints") / "data")
    yield running
    running.stop()


def empty_voiceprint() -> Voiceprint:
    return Voiceprint.from_embedding(np.zeros(192, np.float32), speech_length=0.0)


def with_speech_lengths(count: int, seed: int) -> VoiceprintBatch:
    batch = random_batch(count, seed)
    lengths = np.random.default_rng(seed).uniform(1, 60, count).astype(np.float32)
    return VoiceprintBatch(batch.embeddings, lengths, batch.model)


def merge(server: RunningServer, contents: list[bytes]) -> sid.MergeResponse:
    with channel(server) as open_channel:
        request = sid.MergeRequest(voiceprints=[core_pb2.Voiceprint(content=c) for c in contents])
        response: sid.MergeResponse = sid_grpc.VoiceprintMergingStub(open_channel).Merge(
            request, timeout=60
        )
        return response


def convert(server: RunningServer, contents: list[bytes]) -> list[sid.ConvertResponse]:
    def requests() -> Iterator[sid.ConvertRequest]:
        for start in range(0, len(contents), PHONEXIA_BATCH):
            batch = contents[start : start + PHONEXIA_BATCH]
            yield sid.ConvertRequest(voiceprints=[core_pb2.Voiceprint(content=c) for c in batch])

    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintConversionStub(open_channel)
        return list(stub.Convert(requests(), timeout=60))


def rest_result(server: RunningServer, path: str, voiceprints: list[str]) -> dict[str, Any]:
    client = server.client()
    accepted = client.post(path, json={"voiceprints": voiceprints})
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"].startswith(path + "/")
    body = wait_for_task(client, accepted.headers["location"]).json()
    assert body["task"]["state"] == "done", body
    return dict(body["result"])


def test_merge_over_grpc_and_rest(server: RunningServer) -> None:
    batch = with_speech_lengths(5, seed=1)
    response = merge(server, batch.to_bytes_list())
    merged = Voiceprint.from_bytes(response.voiceprint.content)
    expected = merge_voiceprints(batch)
    # The server's BLAS may sum the weighted mean in another order than this process's; the
    # float64 sums rounded to float32 agree to a float32 ulp of the largest component.
    assert merged.model == expected.model
    ulp = FLOAT32_EPS * float(np.abs(expected.embedding).max())
    np.testing.assert_allclose(merged.embedding, expected.embedding, rtol=0, atol=ulp)
    total = float(batch.speech_lengths.astype(np.float64).sum())
    assert merged.speech_length == pytest.approx(total, rel=1e-6)
    assert response.speech_length.ToNanoseconds() / 1e9 == pytest.approx(total, rel=1e-6)

    rest = rest_result(server, MERGING, batch.to_base64_list())
    # REST and gRPC merge with the same code in the same server: the same bytes.
    assert rest == {
        "voiceprint": base64.b64encode(response.voiceprint.content).decode(),
        "speech_length": pytest.approx(total, rel=1e-6),
        "model": batch.model,
        "condition": "wideband",
        "bandwidth_hz": 0,
    }


def test_merge_of_empty_voiceprints_is_empty(server: RunningServer) -> None:
    empty = empty_voiceprint().to_bytes()
    response = merge(server, [empty, empty])
    merged = Voiceprint.from_bytes(response.voiceprint.content)
    assert merged.speech_length == 0
    assert not merged.embedding.any()
    # An empty voiceprint weighs nothing beside a real one.
    real = with_speech_lengths(1, seed=2)
    alone = merge(server, [real.to_bytes_list()[0]])
    assert merge(server, [empty, real.to_bytes_list()[0]]).voiceprint == alone.voiceprint


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        pytest.param([], "voiceprints is empty", id="empty"),
        pytest.param(
            [*random_batch(3, 3).to_bytes_list(), b"VXVP\x01\x00"], "voiceprints[3]: ", id="bad"
        ),
        pytest.param(
            [
                random_batch(1, 4).to_bytes_list()[0],
                encode_records(np.ones((1, 192), np.float32), np.ones(1, np.float32), "other"),
            ],
            "voiceprints[1]: ",
            id="mixed-models",
        ),
    ],
)
def test_merge_errors(server: RunningServer, contents: list[bytes], expected: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        merge(server, contents)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error_details(caught.value)


def test_convert_over_grpc_and_rest(server: RunningServer) -> None:
    voiceprints = list(random_batch(2500, seed=5))
    voiceprints[1500] = empty_voiceprint()
    batch = VoiceprintBatch.of(voiceprints)
    responses = convert(server, batch.to_bytes_list())
    # One response per request, in order; 2500 voiceprints went in 3 requests.
    assert [len(r.vector_voiceprints) for r in responses] == [1024, 1024, 452]
    vectors = [list(v.values) for r in responses for v in r.vector_voiceprints]
    assert vectors[1500] == []  # no speech: empty vector
    kept = [index for index in range(2500) if index != 1500]
    matrix = np.array([vectors[index] for index in kept], dtype=np.float32)
    assert matrix.shape == (2499, 192)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)

    # The dot products give the comparison's LLRs through the calibration.
    calibration = describe(batch.model).calibration
    real = VoiceprintBatch.of([voiceprints[index] for index in kept[:300]])
    scores, _ = compare(server, real.to_bytes_list(), real.to_bytes_list())
    dots = matrix[:300] @ matrix[:300].T
    traits = Traits.of(real)
    assert_scores_close(llr_from_cosines(dots, calibration, traits, traits), scores)
    # Sorted by dot product, the scores never decrease (beyond float32 rounding of each).
    upper = np.triu_indices(300, 1)
    by_dot = scores[upper][np.argsort(dots[upper], kind="stable")]
    assert np.diff(by_dot).min() > -2 * SCORE_TOLERANCE

    rest = rest_result(server, CONVERSION, batch.to_base64_list())
    assert set(rest) == {"vector_voiceprints"}
    assert len(rest["vector_voiceprints"]) == 2500
    assert rest["vector_voiceprints"][1500] == []
    np.testing.assert_array_equal(
        np.array([rest["vector_voiceprints"][index] for index in kept], dtype=np.float32), matrix
    )


def test_convert_names_the_bad_voiceprint_across_requests(server: RunningServer) -> None:
    contents = random_batch(1100, seed=6).to_bytes_list()
    contents[1030] = contents[1030][:-1] + bytes([contents[1030][-1] ^ 1])
    with pytest.raises(grpc.RpcError) as caught:
        convert(server, contents)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value).startswith("voiceprints[1030]: ")


def test_rest_conversion_and_merging_validation(server: RunningServer) -> None:
    client = server.client()
    good = random_batch(2, seed=7).to_base64_list()
    for path in (CONVERSION, MERGING):
        empty = client.post(path, json={"voiceprints": []})
        assert empty.status_code == 422
        assert empty.json()["detail"][0]["location"] == ["body", "voiceprints"]
        bad = client.post(path, json={"voiceprints": [*good, "not base64!"]})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["location"] == ["body", "voiceprints", 2]
        malformed = client.post(path, content=b"{", headers={"content-type": "application/json"})
        assert malformed.status_code == 400


def test_status_and_health(server: RunningServer) -> None:
    with channel(server) as open_channel:
        status = status_pb2_grpc.StatusStub(open_channel).GetStatus(
            status_pb2.GetStatusRequest(), timeout=10
        )
        health = health_pb2_grpc.HealthStub(open_channel)
        for service in ["", *SERVICES]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert status.name == "voxmatch"
    assert status.version == __version__
    assert status.technology_name == "speaker_identification"
    assert status.model_info.name == "campplus-zh-en-16k-advanced"
    assert status.model_info.version
    limit = wrappers_pb2.Int64Value()
    assert status.configuration["max_list_length"].Unpack(limit)
    assert limit.value == 50_000


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    secure = start_server(
        tmp_path / "data", {"VOXMATCH_TLS_CERT": str(cert), "VOXMATCH_TLS_KEY": str(key)}
    )
    try:
        address = grpc_address(secure)
        port = address.rsplit(":", 1)[1]
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        contents = random_batch(2, seed=8).to_bytes_list()
        with grpc.secure_channel(f"localhost:{port}", credentials) as tls_channel:
            stub = sid_grpc.VoiceprintComparisonStub(tls_channel)
            (answer,) = list(stub.Compare(compare_requests(contents, contents), timeout=30))
        assert (answer.scores.rows_count, answer.scores.columns_count) == (2, 2)
        with grpc.insecure_channel(address) as plain_channel:
            stub = sid_grpc.VoiceprintComparisonStub(plain_channel)
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Compare(compare_requests(contents, contents), timeout=10))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        secure.stop()
