"""gRPC VoiceprintExtraction.Extract with the real model on real speech."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import soundfile as sf
from _grpc_helpers import error_details, extract, file_requests, raw_requests, seconds, wav_bytes
from google.protobuf import duration_pb2
from phonexia.grpc.common import core_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)

from _helpers import RunningServer, model_env, speech_clip, start_server, wait_for_task
from tools import corpora
from voxmatch import Voiceprint
from voxmatch.vectors import vector_voiceprints

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("grpc-extract") / "data",
        {**model_env(), "VOXMATCH_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024)},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def meeting() -> np.ndarray:
    """30 s of a real meeting (several speakers), 16 kHz mono."""
    samples, rate = sf.read(corpora.ami_path("trn09"), dtype="float32")
    assert rate == 16000
    assert samples.ndim == 1
    return np.asarray(samples)


def duration(value: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(value * 1e9))
    return message


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def cosine(a: Voiceprint, b: Voiceprint) -> float:
    return float(
        a.embedding @ b.embedding / np.linalg.norm(a.embedding) / np.linalg.norm(b.embedding)
    )


def test_file_extraction_equals_rest_extraction(server: RunningServer) -> None:
    content = wav_bytes(speech_clip("FEE083", "trn09"))
    response = extract(
        server,
        file_requests(content, chunk=4096, config=sid.ExtractConfig(enable_vector_voiceprint=True)),
    )
    voiceprint = Voiceprint.from_bytes(response.result.voiceprint.content)
    assert voiceprint.model == "campplus-zh-en-16k-advanced"
    assert seconds(response.result.speech_length) == pytest.approx(
        voiceprint.speech_length, abs=1e-6
    )
    assert 3.0 < voiceprint.speech_length < 7.0
    assert seconds(response.processed_audio_length) > voiceprint.speech_length

    vector = np.array(response.result.vector_voiceprint.values, dtype=np.float32)
    np.testing.assert_allclose(vector, vector_voiceprints([voiceprint])[0], atol=1e-7)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)

    client = server.client()
    accepted = client.post(EXTRACTION, files={"file": ("clip.wav", content)})
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"], timeout=180).json()
    (channel,) = body["result"]["channels"]
    rest_voiceprint = Voiceprint.from_base64(channel["voiceprint"])
    assert cosine(voiceprint, rest_voiceprint) > 0.9999
    assert voiceprint.speech_length == pytest.approx(rest_voiceprint.speech_length, abs=1e-3)


def test_raw_pcm16_time_range_and_cap(server: RunningServer, meeting: np.ndarray) -> None:
    pcm = to_pcm16(meeting)
    whole = extract(server, file_requests(wav_bytes(meeting)))
    raw_whole = extract(server, raw_requests(pcm))
    # The same samples in a WAV file or as raw PCM16 give the same voiceprint.
    assert raw_whole.result.voiceprint.content == whole.result.voiceprint.content
    full_speech = seconds(whole.result.speech_length)
    assert full_speech > 15
    assert seconds(whole.processed_audio_length) == pytest.approx(30.0, abs=0.05)

    # A time range is the same as sending only that stretch.
    ranged = extract(
        server,
        raw_requests(pcm, time_range=core_pb2.TimeRange(start=duration(5.0), end=duration(17.5))),
    )
    cut = extract(server, raw_requests(pcm[5 * 16000 : int(17.5 * 16000)]))
    assert ranged.result.voiceprint.content == cut.result.voiceprint.content
    assert seconds(ranged.processed_audio_length) == pytest.approx(12.5, abs=0.05)

    # The cap limits the speech used, and the audio looked at.
    capped = extract(
        server,
        file_requests(wav_bytes(meeting), config=sid.ExtractConfig(speech_length=duration(4))),
    )
    capped_speech = seconds(capped.result.speech_length)
    assert 3.5 <= capped_speech <= 4.0 + 1e-6
    assert seconds(capped.processed_audio_length) < 29
    assert capped.result.voiceprint.content != whole.result.voiceprint.content

    # A cap above the speech present changes nothing.
    roomy = extract(
        server, raw_requests(pcm, config=sid.ExtractConfig(speech_length=duration(600)))
    )
    assert roomy.result.voiceprint.content == whole.result.voiceprint.content


def test_stereo_is_mixed_and_other_rates_are_resampled(server: RunningServer) -> None:
    clip = speech_clip("FEE083", "trn09")
    mono = Voiceprint.from_bytes(
        extract(server, file_requests(wav_bytes(clip))).result.voiceprint.content
    )
    stereo = np.stack([clip, clip], axis=1)
    mixed = extract(server, raw_requests(to_pcm16(stereo), channels=2))
    assert cosine(Voiceprint.from_bytes(mixed.result.voiceprint.content), mono) > 0.999
    resampled = np.interp(np.arange(0, len(clip), 16000 / 44100), np.arange(len(clip)), clip)
    at_44k = extract(server, file_requests(wav_bytes(resampled.astype(np.float32), 44100)))
    assert cosine(Voiceprint.from_bytes(at_44k.result.voiceprint.content), mono) > 0.98


def test_no_speech_gives_the_empty_voiceprint(server: RunningServer) -> None:
    silence = np.zeros(16000 * 3, dtype=np.float32)
    response = extract(
        server,
        file_requests(wav_bytes(silence), config=sid.ExtractConfig(enable_vector_voiceprint=True)),
    )
    voiceprint = Voiceprint.from_bytes(response.result.voiceprint.content)
    assert voiceprint.speech_length == 0
    assert not voiceprint.embedding.any()
    assert seconds(response.result.speech_length) == 0
    assert len(response.result.vector_voiceprint.values) == 0  # empty, as the proto says


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        pytest.param(
            lambda: file_requests(b"this is not audio at all" * 100), "audio:", id="not-audio"
        ),
        pytest.param(lambda: iter([]), "no audio", id="empty-stream"),
        pytest.param(
            lambda: file_requests(b"\0" * (5 * 1024 * 1024)), "max_upload_bytes", id="too-large"
        ),
        pytest.param(
            lambda: iter(
                [
                    sid.ExtractRequest(
                        audio=core_pb2.Audio(
                            content=b"\0" * 3200,
                            raw_audio_config=core_pb2.RawAudioConfig(
                                encoding=core_pb2.RawAudioConfig.AudioEncoding.PCM16,
                                sample_rate_hertz=0,
                                channels=1,
                            ),
                        )
                    )
                ]
            ),
            "sample rate",
            id="raw-without-rate",
        ),
        pytest.param(
            lambda: file_requests(
                wav_bytes(np.zeros(16000, np.float32)),
                time_range=core_pb2.TimeRange(start=duration(5.0)),
            ),
            "time range",
            id="range-past-the-end",
        ),
        pytest.param(
            lambda: file_requests(
                wav_bytes(np.zeros(16000, np.float32)),
                config=sid.ExtractConfig(speech_length=duration_pb2.Duration(seconds=-1)),
            ),
            "speech_length",
            id="negative-cap",
        ),
    ],
)
def test_bad_audio_is_invalid_argument(server: RunningServer, requests, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        extract(server, requests())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error_details(caught.value)
