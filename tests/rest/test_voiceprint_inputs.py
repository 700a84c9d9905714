"""Voiceprints as every REST route takes them: values out of range refused, whitespace around
the base64 accepted, and the empty voiceprint of no speech still valid."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pybase64
import pytest

from _helpers import COMPARISON, RunningServer, random_voiceprints, wait_for_task
from voxmatch import Voiceprint
from voxmatch.models import DEFAULT_MODEL_NAME
from voxmatch.voiceprint import NARROWBAND, encode_records

CONVERSION = "/api/technology/speaker-identification-voiceprint-conversion"
MERGING = "/api/technology/speaker-identification-voiceprint-merging"


def with_value(value: float) -> str:
    """A well-formed voiceprint (valid checksum) whose embedding holds `value`."""
    embedding = np.ones((1, 192), dtype=np.float32)
    embedding[0, 7] = value
    record = encode_records(embedding, np.array([5.0], dtype=np.float32), DEFAULT_MODEL_NAME)
    return pybase64.b64encode(record).decode("ascii")


def good(count: int, seed: int = 0) -> list[str]:
    return [vp.to_base64() for vp in random_voiceprints(count, seed=seed)]


def bodies(voiceprints: list[str]) -> list[tuple[str, dict[str, Any], list[str | int]]]:
    """(path, body, location of item 1) for every route that takes voiceprints."""
    return [
        (
            COMPARISON,
            {"voiceprints_a": good(2), "voiceprints_b": voiceprints},
            ["body", "voiceprints_b", 1],
        ),
        (
            COMPARISON,
            {"voiceprints_a": voiceprints, "voiceprints_b": good(2)},
            ["body", "voiceprints_a", 1],
        ),
        (CONVERSION, {"voiceprints": voiceprints}, ["body", "voiceprints", 1]),
        (MERGING, {"voiceprints": voiceprints}, ["body", "voiceprints", 1]),
    ]


@pytest.mark.parametrize("value", [1e20, 3e38, -2e4], ids=["1e20", "3e38", "-2e4"])
def test_embedding_values_out_of_range_are_422(server: RunningServer, value: float) -> None:
    client = server.client()
    for path, body, location in bodies([good(1, seed=3)[0], with_value(value), with_value(value)]):
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        (item,) = response.json()["detail"]
        assert item["location"] == location
        assert item["type"] == "voiceprint.range"
        assert "10000" in item["message"]


def test_values_at_the_bound_give_finite_scores(server: RunningServer) -> None:
    client = server.client()
    large = with_value(1e4)
    accepted = client.post(COMPARISON, json={"voiceprints_a": [large], "voiceprints_b": good(3)})
    assert accepted.status_code == 202, accepted.text
    done = wait_for_task(client, accepted.headers["location"]).json()
    values = done["result"]["scores"]["values"]
    assert len(values) == 3
    assert all(isinstance(value, float) and np.isfinite(value) for value in values)


def test_surrounding_whitespace_is_accepted_everywhere(server: RunningServer) -> None:
    client = server.client()
    plain = good(3, seed=9)
    padded = [plain[0] + "\n", " " + plain[1] + "\r\n", "\t" + plain[2]]
    for path, body, _ in bodies(padded):
        clean = {field: plain if value is padded else value for field, value in body.items()}
        results = []
        for sent in (body, clean):
            accepted = client.post(path, json=sent)
            assert accepted.status_code == 202, (path, accepted.text)
            done = wait_for_task(client, accepted.headers["location"]).json()
            assert done["task"]["state"] == "done"
            results.append(done["result"])
        # The same voiceprints through the same computation: the same result exactly.
        assert results[0] == results[1], path


def test_whitespace_inside_a_voiceprint_is_still_refused(server: RunningServer) -> None:
    plain = good(2)
    broken = plain[1][:500] + " " + plain[1][500:]
    response = server.client().post(
        COMPARISON, json={"voiceprints_a": plain, "voiceprints_b": [plain[0], broken]}
    )
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert (item["location"], item["type"]) == (["body", "voiceprints_b", 1], "voiceprint.base64")


def test_the_empty_voiceprint_stays_valid(server: RunningServer) -> None:
    client = server.client()
    empty = Voiceprint.from_embedding(np.zeros(192), speech_length=0).to_base64()
    accepted = client.post(COMPARISON, json={"voiceprints_a": [empty], "voiceprints_b": good(2)})
    assert accepted.status_code == 202, accepted.text
    done = wait_for_task(client, accepted.headers["location"]).json()
    assert done["result"]["scores"]["values"] == [0.0, 0.0]


def with_condition(**fields: float) -> str:
    """A well-formed version 2 voiceprint (valid checksum) with these condition fields."""
    embedding = np.ones((1, 192), dtype=np.float32)
    record = encode_records(
        embedding,
        np.array([5.0], dtype=np.float32),
        DEFAULT_MODEL_NAME,
        **fields,
    )
    return pybase64.b64encode(record).decode("ascii")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"conditions": 7}, "condition"),
        ({"bandwidths": float("nan")}, "bandwidth"),
        ({"bandwidths": -3.0}, "bandwidth"),
        ({"snrs": float("-inf")}, "snr"),
        ({"cohort_means": 0.5, "cohort_stds": 0.0}, "cohort"),
    ],
    ids=["condition", "bandwidth-nan", "bandwidth-negative", "snr", "cohort"],
)
def test_bad_condition_fields_are_422_with_the_index(
    server: RunningServer, fields: dict[str, float], reason: str
) -> None:
    client = server.client()
    bad = with_condition(**fields)
    for path, body, location in bodies([good(1, seed=4)[0], bad]):
        response = client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        (item,) = response.json()["detail"]
        assert item["location"] == location
        assert item["type"] == f"voiceprint.{reason}"


def test_reserved_bytes_must_be_zero_over_rest(server: RunningServer) -> None:
    record = bytearray(pybase64.b64decode(good(1, seed=5)[0]))
    record[45] = 1
    record[-4:] = zlib.crc32(bytes(record[:-4])).to_bytes(4, "little")
    bad = pybase64.b64encode(bytes(record)).decode("ascii")
    for path, body, location in bodies([good(1, seed=6)[0], bad]):
        response = server.client().post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        (item,) = response.json()["detail"]
        assert (item["location"], item["type"]) == (location, "voiceprint.reserved")


def version_1(voiceprint: Voiceprint) -> str:
    """The voiceprint as version 1 wrote it (the documented layout, built here by hand)."""
    body = struct.pack(
        "<4sHHf32s", b"VXVP", 1, 192, voiceprint.speech_length, DEFAULT_MODEL_NAME.encode()
    )
    body += voiceprint.embedding.astype("<f4").tobytes()
    return pybase64.b64encode(body + struct.pack("<I", zlib.crc32(body))).decode("ascii")


def test_version_1_and_2_voiceprints_mix_in_every_request(server: RunningServer) -> None:
    client = server.client()
    voiceprints = random_voiceprints(4, seed=12)
    new = [vp.to_base64() for vp in voiceprints]
    mixed = [version_1(voiceprints[0]), new[1], version_1(voiceprints[2]), new[3]]
    for path, body, _ in bodies(mixed):
        results = []
        for sent in (
            body,
            {field: new if value is mixed else value for field, value in body.items()},
        ):
            accepted = client.post(path, json=sent)
            assert accepted.status_code == 202, (path, accepted.text)
            done = wait_for_task(client, accepted.headers["location"]).json()
            assert done["task"]["state"] == "done"
            results.append(done["result"])
        # The same embeddings, speech lengths and (wideband, unmeasured) conditions: the same
        # result exactly, whichever version carried them.
        assert results[0] == results[1], path


def test_a_merge_is_narrowband_if_an_input_is(server: RunningServer) -> None:
    client = server.client()
    wide, narrow = random_voiceprints(2, seed=13)
    narrow = Voiceprint.from_embedding(
        narrow.embedding, speech_length=4.0, condition=NARROWBAND, bandwidth=3800.0, snr=20.0
    )
    wide = Voiceprint.from_embedding(wide.embedding, speech_length=12.0, bandwidth=7400.0, snr=40.0)
    accepted = client.post(MERGING, json={"voiceprints": [wide.to_base64(), narrow.to_base64()]})
    assert accepted.status_code == 202, accepted.text
    result = wait_for_task(client, accepted.headers["location"]).json()["result"]
    assert (result["condition"], result["bandwidth_hz"]) == ("narrowband", 3800)
    merged = Voiceprint.from_base64(result["voiceprint"])
    assert merged.condition == NARROWBAND
    assert merged.snr == pytest.approx((12.0 * 40.0 + 4.0 * 20.0) / 16.0, abs=1e-4)
