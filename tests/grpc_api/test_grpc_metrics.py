"""gRPC calls in /metrics: counted by method and status code, with the work they did."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from _grpc_helpers import channel, compare, extract, file_requests, wav_bytes
from grpc_health.v1 import health_pb2, health_pb2_grpc
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2_grpc as sid_grpc,
)

from _helpers import RunningServer, model_env, random_voiceprints, speech_clip, start_server
from _scrape import Samples, scrape, value

SID = "phonexia.grpc.technologies.speaker_identification.v1"
CALLS = "voxmatch_grpc_calls_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("grpc-metrics") / "data", model_env())
    yield running
    running.stop()


def calls(samples: Samples, service: str, method: str, code: str) -> float:
    return value(samples, CALLS, service=service, method=method, code=code)


def test_a_comparison_is_counted_with_its_scores(server: RunningServer) -> None:
    client = server.client()
    before = scrape(client)
    scores, _ = compare(
        server,
        [v.to_bytes() for v in random_voiceprints(3, seed=1)],
        [v.to_bytes() for v in random_voiceprints(5, seed=2)],
    )
    assert scores.shape == (3, 5)
    after = scrape(client)

    service = f"{SID}.VoiceprintComparison"
    assert calls(after, service, "Compare", "OK") == calls(before, service, "Compare", "OK") + 1
    latency = "voxmatch_grpc_call_duration_seconds_count"
    labels = {"service": service, "method": "Compare"}
    assert value(after, latency, **labels) == value(before, latency, **labels) + 1
    scores_total = "voxmatch_comparison_scores_total"
    assert value(after, scores_total) == value(before, scores_total) + 15


def test_a_refused_call_is_counted_with_its_code(server: RunningServer) -> None:
    client = server.client()
    before = scrape(client)
    with channel(server) as open_channel, pytest.raises(grpc.RpcError) as refused:
        sid_grpc.VoiceprintMergingStub(open_channel).Merge(sid.MergeRequest(), timeout=60)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(client)

    service = f"{SID}.VoiceprintMerging"
    code = "INVALID_ARGUMENT"
    assert calls(after, service, "Merge", code) == calls(before, service, "Merge", code) + 1
    assert calls(after, service, "Merge", "OK") == calls(before, service, "Merge", "OK")


def test_an_extraction_counts_its_audio_and_speech_seconds(server: RunningServer) -> None:
    clip = speech_clip("FEE083", "trn09")
    samples = np.concatenate([np.zeros(16000, np.float32), clip])
    client = server.client()
    before = scrape(client)
    response = extract(server, file_requests(wav_bytes(samples)))
    after = scrape(client)

    service = f"{SID}.VoiceprintExtraction"
    assert calls(after, service, "Extract", "OK") == calls(before, service, "Extract", "OK") + 1
    audio = "voxmatch_extraction_audio_seconds_total"
    assert value(after, audio) - value(before, audio) == pytest.approx(
        len(samples) / 16000, abs=1e-3
    )
    speech = response.result.speech_length
    speech_seconds = speech.seconds + speech.nanos / 1e9
    assert 0 < speech_seconds < len(samples) / 16000
    counted = "voxmatch_extraction_speech_seconds_total"
    # Both sides are the same float, the response's one rounded to the nanosecond.
    assert value(after, counted) - value(before, counted) == pytest.approx(speech_seconds, abs=1e-6)


def test_health_checks_are_counted(server: RunningServer) -> None:
    client = server.client()
    before = scrape(client)
    with channel(server) as open_channel:
        answer = health_pb2_grpc.HealthStub(open_channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    after = scrape(client)

    service = "grpc.health.v1.Health"
    assert calls(after, service, "Check", "OK") == calls(before, service, "Check", "OK") + 1
