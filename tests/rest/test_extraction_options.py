"""Extraction options as query parameters, form fields or `config` keys: the same checks
everywhere, honoured wherever they come from, and refused when two places disagree."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from _helpers import RunningServer, model_env, speech_clip, start_server, wait_for_task

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("options") / "data", model_env())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stereo() -> bytes:
    left = speech_clip("MÉO069", "trn03")[: 16000 * 6]
    right = speech_clip("FEE078", "trn05")[: 16000 * 6]
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([left, right], axis=1), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def channels_of(
    server: RunningServer,
    content: bytes,
    params: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    client = server.client()
    accepted = client.post(
        EXTRACTION, files={"file": ("call.wav", content)}, params=params, data=data
    )
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"], timeout=180).json()
    assert body["task"]["state"] == "done", body
    channels: list[dict[str, Any]] = body["result"]["channels"]
    return channels


def refusal(
    server: RunningServer, params: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> dict[str, Any]:
    response = server.client().post(
        EXTRACTION, files={"file": ("a.wav", b"never read")}, params=params, data=data
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"] == "request.validation-error"
    (item,) = body["detail"]
    assert isinstance(item, dict), item
    return item


def test_form_fields_are_honoured_like_query_parameters(
    server: RunningServer, stereo: bytes
) -> None:
    by_query = channels_of(server, stereo, params={"channels": "1"})
    by_form = channels_of(server, stereo, data={"channels": "1"})
    assert [channel["channel_number"] for channel in by_form] == [1]
    # The same channel through the same computation: the same voiceprint.
    assert by_form[0]["voiceprint"] == by_query[0]["voiceprint"]

    mixed = channels_of(
        server, stereo, data={"channel_mode": "mix", "include_vector_voiceprint": "true"}
    )
    assert len(mixed) == 1
    assert mixed[0]["channel_number"] == 0
    assert len(mixed[0]["vector_voiceprint"]) == 192
    agreeing = channels_of(
        server, stereo, params={"channel_mode": "mix"}, data={"config": '{"channel_mode": "mix"}'}
    )
    assert agreeing[0]["voiceprint"] == mixed[0]["voiceprint"]


@pytest.mark.parametrize(
    ("params", "data", "location"),
    [
        ({"channels": "0"}, {"channels": "1"}, ["body", "channels"]),
        ({"channel_mode": "mix"}, {"config": '{"channel_mode": "split"}'}, None),
        ({}, {"start": "1", "config": '{"start": 2}'}, ["body", "config", "start"]),
    ],
    ids=["query-and-form", "query-and-config", "form-and-config"],
)
def test_an_option_given_twice_with_different_values_is_422(
    server: RunningServer,
    params: dict[str, Any],
    data: dict[str, Any],
    location: list[str | int] | None,
) -> None:
    item = refusal(server, params, data)
    assert item["type"] == "conflict"
    assert item["location"] == (location or ["body", "config", "channel_mode"])
    assert "given twice" in item["message"]


@pytest.mark.parametrize(
    ("config", "location", "error_type"),
    [
        ("{not json", ["body", "config"], "json_invalid"),
        ('{"start": 1e400}', ["body", "config"], "json_invalid"),
        ("[1, 2]", ["body", "config"], "type_error"),
        ('{"channels": "left"}', ["body", "config", "channels"], "channels_invalid"),
        ('{"channels": [0, -1]}', ["body", "config", "channels"], "channels_invalid"),
        ('{"channel_mode": 3}', ["body", "config", "channel_mode"], "enum"),
        ('{"include_vector_voiceprint": "perhaps"}', None, "bool_parsing"),
        ('{"end": 1e300}', ["body", "config", "end"], "less_than_equal"),
    ],
)
def test_a_bad_config_field_is_422(
    server: RunningServer, config: str, location: list[str | int] | None, error_type: str
) -> None:
    item = refusal(server, data={"config": config})
    assert item["location"] == (location or ["body", "config", "include_vector_voiceprint"])
    assert item["type"] == error_type


@pytest.mark.parametrize(
    ("name", "value", "error_type"),
    [
        ("start", "1e308", "less_than_equal"),
        ("start", "-1", "greater_than_equal"),
        ("end", "inf", "finite_number"),
        ("end", "1e400", "finite_number"),
        ("max_speech_length", "nan", "finite_number"),
        ("max_speech_length", "0", "greater_than"),
        ("channels", "99999999999999999999", "channels_invalid"),
        ("channels", "\u00b2", "channels_invalid"),
        ("channels", "1" * 5000, "channels_invalid"),
        ("include_vector_voiceprint", "perhaps", "bool_parsing"),
    ],
)
def test_numbers_out_of_range_are_422_as_query_or_form(
    server: RunningServer, name: str, value: str, error_type: str
) -> None:
    as_query = refusal(server, params={name: value})
    assert (as_query["location"], as_query["type"]) == (["query", name], error_type)
    as_form = refusal(server, data={name: value})
    assert (as_form["location"], as_form["type"]) == (["body", name], error_type)


def test_end_before_start_names_where_end_was_given(server: RunningServer) -> None:
    assert refusal(server, params={"start": "5", "end": "4"})["location"] == ["query", "end"]
    from_form = refusal(server, params={"start": "5"}, data={"end": "4"})
    assert (from_form["location"], from_form["type"]) == (["body", "end"], "range")


def test_nothing_is_queued_for_a_refused_request(server: RunningServer) -> None:
    client = server.client()
    before = client.get("/api/system/status").json()["tasks"]
    refusal(server, params={"start": "1e308"})
    refusal(server, data={"config": "{not json"})
    assert client.get("/api/system/status").json()["tasks"] == before
    assert "Traceback" not in server.log()
