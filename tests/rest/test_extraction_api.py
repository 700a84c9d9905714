"""SPE4 voiceprint extraction through a real server, the real model and real speech."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from _helpers import (
    COMPARISON,
    RunningServer,
    ServerFactory,
    model_env,
    speech_clip,
    start_server,
    wait_for_task,
)
from tools import telephone
from voxmatch import Voiceprint, compare
from voxmatch.voiceprint import NARROWBAND

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("extraction") / "data",
        {**model_env(), "VOXMATCH_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024)},
    )
    yield running
    running.stop()


def wav_bytes(samples: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def extract(
    client: httpx.Client, content: bytes, filename: str = "audio.wav", **params: str
) -> dict[str, Any]:
    accepted = client.post(EXTRACTION, files={"file": (filename, content)}, params=params)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"].startswith(f"{EXTRACTION}/")
    body = wait_for_task(client, accepted.headers["location"], timeout=180).json()
    assert isinstance(body, dict), body
    return body


def voiceprints_of(body: dict[str, Any]) -> list[Voiceprint]:
    assert body["task"]["state"] == "done", body
    return [Voiceprint.from_base64(channel["voiceprint"]) for channel in body["result"]["channels"]]


def test_result_has_the_spe4_shape(server: RunningServer) -> None:
    body = extract(server.client(), wav_bytes(speech_clip("FEE083", "trn09")))
    assert body["error"] is None
    (channel,) = body["result"]["channels"]
    spe4 = {"channel_number", "voiceprint", "speech_length", "model"}
    additions = {"condition", "bandwidth_hz", "speech_segments"}
    assert set(channel) == spe4 | additions, "SPE4's, and voxmatch's additions"
    assert channel["channel_number"] == 0
    assert channel["model"] == "campplus-zh-en-16k-advanced"
    assert 3.0 < channel["speech_length"] <= 6.9
    voiceprint = Voiceprint.from_base64(channel["voiceprint"])
    assert voiceprint.speech_length == pytest.approx(channel["speech_length"], abs=1e-3)
    assert channel["condition"] == "wideband"
    assert channel["bandwidth_hz"] == round(voiceprint.bandwidth)
    assert channel["bandwidth_hz"] > 6000
    segments = channel["speech_segments"]
    assert segments, "the detected speech is located"
    assert all(0 <= start < end for start, end in segments)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(segments)), "in order"
    # The segments are the speech the voiceprint was made of: rounding to ms on each end.
    total = sum(end - start for start, end in segments)
    assert total == pytest.approx(voiceprint.speech_length, abs=0.001 * len(segments) + 1e-3)


def test_telephone_audio_is_reported_narrowband_whatever_the_rate_of_the_file(
    server: RunningServer,
) -> None:
    client = server.client()
    samples = speech_clip("FEE078", "trn05")
    for stored_rate in (8000, 16000, 44100):
        wav = telephone.telephone_wav(samples, "gsm610", stored_rate)
        (channel,) = extract(client, wav, "call.wav")["result"]["channels"]
        assert channel["condition"] == "narrowband", stored_rate
        assert 3000 < channel["bandwidth_hz"] <= 4000, stored_rate
        voiceprint = Voiceprint.from_base64(channel["voiceprint"])
        assert voiceprint.condition == NARROWBAND


def test_same_file_twice_gives_the_same_voiceprint(server: RunningServer) -> None:
    client = server.client()
    content = wav_bytes(speech_clip("MEE009", "dev00"))
    first = extract(client, content)["result"]["channels"][0]["voiceprint"]
    second = extract(client, content)["result"]["channels"][0]["voiceprint"]
    assert first == second


@pytest.mark.slow
def test_same_speaker_scores_above_different_speakers(server: RunningServer) -> None:
    client = server.client()
    clips = {
        "FEE083 a": speech_clip("FEE083", "trn06"),
        "FEE083 b": speech_clip("FEE083", "trn09"),
        "MÉO069": speech_clip("MÉO069", "trn03"),
        "FEE078": speech_clip("FEE078", "trn05"),
        "MEE009": speech_clip("MEE009", "dev00"),
    }
    voiceprints = {
        name: voiceprints_of(extract(client, wav_bytes(x)))[0] for name, x in clips.items()
    }
    names = list(voiceprints)
    scores = compare([voiceprints[n] for n in names], [voiceprints[n] for n in names])
    same = scores[names.index("FEE083 a"), names.index("FEE083 b")]
    different = [
        scores[names.index(a), names.index(b)]
        for a in names
        for b in names
        if a < b and not (a.startswith("FEE083") and b.startswith("FEE083"))
    ]
    assert same > max(different)
    assert same > 2, "a clear same-speaker pair gets a clearly positive LLR"
    assert max(different) < 0, "clear different-speaker pairs get negative LLRs"


def test_stereo_file_gives_one_voiceprint_per_channel(server: RunningServer) -> None:
    client = server.client()
    left = speech_clip("MÉO069", "trn03")[: 16000 * 8]
    right = speech_clip("FEE078", "trn05")[: 16000 * 8]
    stereo = wav_bytes(np.stack([left, right], axis=1))
    body = extract(client, stereo, "call.wav")
    channels = body["result"]["channels"]
    assert [channel["channel_number"] for channel in channels] == [0, 1]
    left_vp, right_vp = voiceprints_of(body)
    assert compare([left_vp], [right_vp])[0, 0] < 0, "two speakers score as different"
    # Each channel matches its own speaker extracted alone.
    alone = voiceprints_of(extract(client, wav_bytes(left)))[0]
    assert compare([alone], [left_vp])[0, 0] > compare([alone], [right_vp])[0, 0]

    only_right = extract(client, stereo, "call.wav", channels="1")["result"]["channels"]
    assert [channel["channel_number"] for channel in only_right] == [1]
    assert only_right[0]["voiceprint"] == channels[1]["voiceprint"]
    mixed = extract(client, stereo, "call.wav", channel_mode="mix")["result"]["channels"]
    assert len(mixed) == 1
    assert mixed[0]["channel_number"] == 0


def test_options_in_the_config_form_field(server: RunningServer) -> None:
    client = server.client()
    stereo = wav_bytes(np.stack([speech_clip("MEE009", "dev00")] * 2, axis=1))
    accepted = client.post(
        EXTRACTION,
        files={"file": ("a.wav", stereo)},
        data={"config": '{"channel_mode": "mix", "include_vector_voiceprint": true, "x": 1}'},
    )
    body = wait_for_task(client, accepted.headers["location"], timeout=180).json()
    (channel,) = body["result"]["channels"]
    vector = np.array(channel["vector_voiceprint"])
    assert vector.shape == (192,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_other_formats_and_rates_give_close_voiceprints(server: RunningServer) -> None:
    client = server.client()
    samples = speech_clip("FEE078", "trn05")
    reference = voiceprints_of(extract(client, wav_bytes(samples)))[0]
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="FLAC")
    flac = voiceprints_of(extract(client, buffer.getvalue(), "a.flac"))[0]
    np.testing.assert_allclose(flac.embedding, reference.embedding, atol=1e-2, rtol=1e-2)
    import soxr

    at_8k = soxr.resample(samples, 16000, 8000)
    call = voiceprints_of(extract(client, wav_bytes(at_8k, 8000, "ULAW"), "call.wav"))[0]
    assert compare([reference], [call])[0, 0] > 2


def test_silence_gives_an_empty_voiceprint_that_scores_zero(server: RunningServer) -> None:
    client = server.client()
    body = extract(
        client, wav_bytes(np.zeros(16000 * 5, dtype=np.float32)), include_vector_voiceprint="true"
    )
    (channel,) = body["result"]["channels"]
    assert channel["speech_length"] == 0
    assert channel["vector_voiceprint"] == [], "no speech: an empty vector, as gRPC gives"
    empty = Voiceprint.from_base64(channel["voiceprint"])
    assert not empty.embedding.any()
    speech = voiceprints_of(extract(client, wav_bytes(speech_clip("MEE009", "dev00"))))[0]
    accepted = client.post(
        COMPARISON,
        json={"voiceprints_a": [empty.to_base64()], "voiceprints_b": [speech.to_base64()]},
    )
    result = wait_for_task(client, accepted.headers["location"]).json()["result"]
    assert result["scores"]["values"] == [0.0]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not audio at all, just text\n" * 10, "not a readable audio file"),
        (b"", "empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio file"),
    ],
    ids=["text", "empty", "truncated-wav"],
)
def test_unusable_files_give_a_rejected_task(
    server: RunningServer, content: bytes, reason: str
) -> None:
    body = extract(server.client(), content, "upload.wav")
    assert body["task"]["state"] == "rejected"
    assert body["result"] is None
    assert body["error"]["type"] == "task.validation-error"
    assert reason in body["error"]["message"].lower()
    assert body["error"]["detail"][0]["location"] == ["file"]


def test_channel_out_of_range_gives_a_rejected_task(server: RunningServer) -> None:
    body = extract(server.client(), wav_bytes(speech_clip("MEE009", "dev00")), channels="3")
    assert body["task"]["state"] == "rejected"
    assert "3" in body["error"]["message"]


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"channel_mode": "stereo"}, ["query", "channel_mode"]),
        ({"channels": "0;1"}, ["query", "channels"]),
        ({"channels": "0,0"}, ["query", "channels"]),
    ],
)
def test_bad_options_are_422(
    server: RunningServer, params: dict[str, Any], location: list[str | int]
) -> None:
    response = server.client().post(
        EXTRACTION, files={"file": ("a.wav", wav_bytes(np.zeros(1600)))}, params=params
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "request.validation-error"
    assert response.json()["detail"][0]["location"] == location


def test_missing_file_field_is_422(server: RunningServer) -> None:
    response = server.client().post(EXTRACTION, files={"other": ("a.wav", b"x")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["location"] == ["body", "file"]
    not_multipart = server.client().post(EXTRACTION, json={"file": "x"})
    assert not_multipart.status_code in (400, 422)
    assert not_multipart.json()["type"] in ("request.invalid", "request.validation-error")


def test_upload_over_the_limit_is_413(server: RunningServer) -> None:
    too_big = wav_bytes(np.zeros(16000 * 300, dtype=np.float32))  # 9.6 MB of 16-bit PCM
    response = server.client().post(EXTRACTION, files={"file": ("long.wav", too_big)})
    assert response.status_code == 413
    assert response.json()["type"] == "request.size-limit-exceeded"
    assert server.client().get("/api/system/info").status_code == 200


def test_speech_cap_and_time_range(server: RunningServer) -> None:
    client = server.client()
    content = wav_bytes(speech_clip("MÉO069", "trn03"))  # 28.8 s of one speaker
    whole = extract(client, content)["result"]["channels"][0]["speech_length"]
    capped = extract(client, content, max_speech_length="5")["result"]["channels"][0]
    assert whole > 20
    assert 4.5 <= capped["speech_length"] <= 5.0
    ranged = extract(client, content, start="10", end="16")["result"]["channels"][0]
    assert 0 < ranged["speech_length"] <= 6.0
    response = client.post(
        EXTRACTION, files={"file": ("a.wav", content)}, params={"start": "5", "end": "4"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["location"] == ["query", "end"]
    beyond = extract(client, content, start="100")
    assert beyond["task"]["state"] == "rejected"


def test_a_users_own_onnx_model(tmp_path: Path, server_factory: ServerFactory) -> None:
    from tools import corpora
    from voxmatch.models import CAMPPLUS
    from voxmatch.models.speaker_model import load_speaker_model

    # An ONNX file in the sherpa-onnx / WeSpeaker convention: here, CAM++ converted once more.
    model_env()
    converted = load_speaker_model(CAMPPLUS, tmp_path / "convert", [corpora.models_cache_dir()])
    assert converted.model_path is not None
    own = tmp_path / "their-campplus.onnx"
    own.write_bytes(converted.model_path.read_bytes())
    server = server_factory(
        {**model_env(), "VOXMATCH_MODEL_FILE": str(own), "VOXMATCH_MODEL_NAME": "their-campplus"}
    )
    client = server.client()
    body = extract(client, wav_bytes(speech_clip("FEE083", "trn06")))
    (channel,) = body["result"]["channels"]
    assert channel["model"] == "their-campplus"
    # This process does not know the model; the server does, and compares its voiceprints.
    theirs = channel["voiceprint"]
    accepted = client.post(COMPARISON, json={"voiceprints_a": [theirs], "voiceprints_b": [theirs]})
    done = wait_for_task(client, accepted.headers["location"]).json()
    assert done["task"]["state"] == "done"
    # Uncalibrated default map for users' models: cos 1 gives 10 - 4 = 6.
    assert done["result"]["scores"]["values"][0] == pytest.approx(6.0, abs=1e-4)
    default_model = Voiceprint.from_embedding(np.ones(192), speech_length=3)
    mixed = client.post(
        COMPARISON,
        json={"voiceprints_a": [theirs], "voiceprints_b": [default_model.to_base64()]},
    )
    assert mixed.status_code == 422
    assert mixed.json()["detail"][0]["type"] == "voiceprint.mixed-models"
