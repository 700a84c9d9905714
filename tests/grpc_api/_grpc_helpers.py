"""gRPC test helpers: channels to a running server, request streams as Phonexia sends them."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from itertools import zip_longest
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from phonexia.grpc.common import core_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2_grpc as sid_grpc,
)

from _helpers import RunningServer

PHONEXIA_BATCH = 1024
"""Phonexia's clients put at most this many voiceprints (a and b together) in one request."""


def grpc_address(server: RunningServer) -> str:
    return str(json.loads((server.data_dir / "endpoints.json").read_text())["grpc"])


def channel(server: RunningServer) -> grpc.Channel:
    return grpc.insecure_channel(grpc_address(server))


def compare_requests(
    list_a: Sequence[bytes], list_b: Sequence[bytes], batch: int = PHONEXIA_BATCH
) -> Iterator[sid.CompareRequest]:
    """Requests as Phonexia's comparison client makes them: a and b interleaved, `batch` at most."""
    request = sid.CompareRequest()
    size = 0
    for item_a, item_b in zip_longest(list_a, list_b):
        if size >= batch:
            yield request
            request, size = sid.CompareRequest(), 0
        if item_a is not None:
            request.voiceprints_a.append(core_pb2.Voiceprint(content=item_a))
            size += 1
        if item_b is not None:
            request.voiceprints_b.append(core_pb2.Voiceprint(content=item_b))
            size += 1
    if size:
        yield request


def compare(
    server: RunningServer, list_a: Sequence[bytes], list_b: Sequence[bytes]
) -> tuple[np.ndarray, list[sid.CompareResponse]]:
    """The score matrix (rows: list_a) and the response messages as they came."""
    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintComparisonStub(open_channel)
        responses = list(stub.Compare(compare_requests(list_a, list_b), timeout=120))
    rows = responses[0].scores.rows_count
    columns = responses[0].scores.columns_count
    values = np.concatenate([np.array(r.scores.values, dtype=np.float32) for r in responses])
    return values.reshape(rows, columns), responses


def wav_bytes(samples: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def file_requests(
    content: bytes,
    *,
    chunk: int = 100 * 1024,
    config: sid.ExtractConfig | None = None,
    time_range: core_pb2.TimeRange | None = None,
) -> Iterator[sid.ExtractRequest]:
    """An encoded file in 100 kB chunks, the time range in the first message only."""
    for start in range(0, len(content), chunk):
        yield sid.ExtractRequest(
            audio=core_pb2.Audio(
                content=content[start : start + chunk],
                time_range=time_range if start == 0 else None,
            ),
            config=config,
        )


def raw_requests(
    pcm16: np.ndarray,
    *,
    sample_rate: int = 16000,
    channels: int = 1,
    block: int = 16000,
    config: sid.ExtractConfig | None = None,
    time_range: core_pb2.TimeRange | None = None,
) -> Iterator[sid.ExtractRequest]:
    """Headerless PCM16 blocks, RawAudioConfig and time range in the first message only."""
    raw_config = core_pb2.RawAudioConfig(
        encoding=core_pb2.RawAudioConfig.AudioEncoding.PCM16,
        sample_rate_hertz=sample_rate,
        channels=channels,
    )
    frames = pcm16.reshape(-1, channels)
    for start in range(0, len(frames), block):
        first = start == 0
        yield sid.ExtractRequest(
            audio=core_pb2.Audio(
                content=frames[start : start + block].astype("<i2").tobytes(),
                raw_audio_config=raw_config if first else None,
                time_range=time_range if first else None,
            ),
            config=config,
        )


def extract(server: RunningServer, requests: Iterator[sid.ExtractRequest]) -> sid.ExtractResponse:
    with channel(server) as open_channel:
        stub = sid_grpc.VoiceprintExtractionStub(open_channel)
        response: sid.ExtractResponse = stub.Extract(requests, timeout=300)
        return response


def error_details(error: grpc.RpcError) -> str:
    """The details of a failed call: every error status the server sends carries them."""
    details = error.details()
    assert details is not None, error.code()
    return details


def seconds(duration: object) -> float:
    return float(duration.seconds + duration.nanos / 1e9)  # type: ignore[attr-defined]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
