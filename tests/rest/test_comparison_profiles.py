"""Comparison requests that name a calibration profile (a voxmatch addition to SPE4), against a
real server whose `calibration_profiles_dir` holds a profile `voxmatch calibrate` fitted on real
speech."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from _helpers import (
    COMPARISON,
    FLOAT32_EPS,
    RunningServer,
    ServerFactory,
    hold_the_worker,
    model_env,
    random_voiceprints,
    restart_after_kill,
    start_server,
    wait_for_task,
)
from _labelled_speech import run_voxmatch, speaker_folders
from voxmatch import Voiceprint, VoiceprintBatch, compare
from voxmatch.calibration_profiles import CalibrationProfile, load_profile, save_profile
from voxmatch.models import CAMPPLUS
from voxmatch.models.registry import Calibration, PairCalibration
from voxmatch.scoring import Traits, llr_from_cosines

PROFILES_ENV = "VOXMATCH_CALIBRATION_PROFILES_DIR"


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A profiles folder holding `office`, fitted by `voxmatch calibrate` on AN4 and LibriVox."""
    work = tmp_path_factory.mktemp("calibrate")
    speaker_folders(work / "speech")
    result = run_voxmatch("calibrate", "office", "speech", "--out", "profiles", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "profiles"


@pytest.fixture(scope="module")
def office(profiles_dir: Path) -> CalibrationProfile:
    return load_profile(profiles_dir / "office.json")


@pytest.fixture(scope="module")
def profile_server(
    profiles_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("profile-server") / "data", {PROFILES_ENV: str(profiles_dir)}
    )
    yield running
    running.stop()


def voiceprints(seed: int) -> list[Voiceprint]:
    """Voiceprints of short and long speech, so that the quality terms of a profile count."""
    return [
        vp
        for index, speech in enumerate((0.7, 2.0, 6.0, 15.0, 45.0))
        for vp in random_voiceprints(1, seed=seed + index, speech_length=speech)
    ]


def body(a: list[Voiceprint], b: list[Voiceprint], **extra: Any) -> dict[str, Any]:
    return {
        "voiceprints_a": [vp.to_base64() for vp in a],
        "voiceprints_b": [vp.to_base64() for vp in b],
        **extra,
    }


def rest_scores(client: httpx.Client, request: dict[str, Any]) -> npt.NDArray[np.float32]:
    accepted = client.post(COMPARISON, json=request)
    assert accepted.status_code == 202, accepted.text
    done = wait_for_task(client, accepted.headers["location"]).json()
    assert done["task"]["state"] == "done", done
    scores = done["result"]["scores"]
    matrix = np.array(scores["values"], np.float32)
    return matrix.reshape(scores["rows_count"], scores["columns_count"])


def expected_rest_scores(
    a: list[Voiceprint], b: list[Voiceprint], calibration: Calibration
) -> npt.NDArray[np.float64]:
    """The REST matrix (rows: b) in float64, from the cosines and the calibration alone."""
    batch_a, batch_b = VoiceprintBatch.of(a), VoiceprintBatch.of(b)
    units_a, units_b = (
        batch.embeddings / np.linalg.norm(batch.embeddings, axis=1, keepdims=True)
        for batch in (batch_a, batch_b)
    )
    cosines = units_a.astype(np.float64) @ units_b.astype(np.float64).T
    return llr_from_cosines(cosines, calibration, Traits.of(batch_a), Traits.of(batch_b)).T


def assert_scored_by(
    actual: npt.ArrayLike, expected: npt.ArrayLike, calibration: Calibration
) -> None:
    # As SCORE_TOLERANCE, for this calibration's scale: float32 cosines may be off by up to
    # 2 * D * eps of the exact ones, which the calibration multiplies.
    tolerance = 2 * CAMPPLUS.embedding_dim * FLOAT32_EPS * calibration.highest_scale
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), np.asarray(expected), rtol=0, atol=tolerance
    )


def assert_profile_error(response: httpx.Response, error_type: str, folder: Path) -> str:
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["type"] == "request.validation-error"
    (detail,) = error["detail"]
    assert detail["location"] == ["body", "calibration"]
    assert detail["type"] == error_type
    message = str(detail["message"])
    assert str(folder) not in message, "no server-side path in the message"
    return message


def test_a_named_profile_scores_as_the_profile_says(
    profile_server: RunningServer, office: CalibrationProfile
) -> None:
    client = profile_server.client()
    a, b = voiceprints(seed=1), voiceprints(seed=50)
    a.append(b[2])  # one same-voice pair, so that a positive score is among them
    named = rest_scores(client, body(a, b, calibration="office"))
    assert_scored_by(named, expected_rest_scores(a, b, office.calibration), office.calibration)
    # The Python API takes the profile too, and agrees.
    assert_scored_by(named, compare(a, b, calibration=office).T, office.calibration)

    shipped = CAMPPLUS.calibration
    for default in (body(a, b), body(a, b, calibration=None)):
        scores = rest_scores(client, default)
        assert_scored_by(scores, expected_rest_scores(a, b, shipped), shipped)
    # Whatever the shipped calibration of the day, the two are told apart by these pairs.
    tolerance = (
        2
        * CAMPPLUS.embedding_dim
        * FLOAT32_EPS
        * max(office.calibration.highest_scale, shipped.highest_scale)
    )
    assert np.abs(named - scores).max() > 100 * tolerance


def test_an_unknown_profile_is_422_naming_the_known_ones(
    profile_server: RunningServer, profiles_dir: Path
) -> None:
    a, b = voiceprints(seed=1), voiceprints(seed=2)
    response = profile_server.client().post(COMPARISON, json=body(a, b, calibration="home"))
    message = assert_profile_error(response, "calibration.unknown-profile", profiles_dir)
    assert "'home'" in message
    assert "known: " in message
    assert "office" in message


@pytest.mark.parametrize("name", ["../office", "office.json/..", "", " office", "a" * 65])
def test_a_name_that_cannot_be_a_profile_is_422(
    profile_server: RunningServer, profiles_dir: Path, name: str
) -> None:
    a, b = voiceprints(seed=1), voiceprints(seed=2)
    response = profile_server.client().post(COMPARISON, json=body(a, b, calibration=name))
    assert "not a profile name" in assert_profile_error(
        response, "calibration.unknown-profile", profiles_dir
    )


@pytest.mark.parametrize("value", [5, True, ["office"], {"name": "office"}])
def test_a_calibration_that_is_not_a_name_is_422(profile_server: RunningServer, value: Any) -> None:
    a, b = voiceprints(seed=1), voiceprints(seed=2)
    response = profile_server.client().post(COMPARISON, json=body(a, b, calibration=value))
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["location"] == ["body", "calibration"]
    assert detail["type"] == "type_error"


def test_a_profile_of_another_model_is_422(
    profile_server: RunningServer, profiles_dir: Path, office: CalibrationProfile
) -> None:
    save_profile(dataclasses.replace(office, name="other-model", model="ecapa-x"), profiles_dir)
    a, b = voiceprints(seed=1), voiceprints(seed=2)
    response = profile_server.client().post(COMPARISON, json=body(a, b, calibration="other-model"))
    message = assert_profile_error(response, "calibration.unusable-profile", profiles_dir)
    assert "fitted for model 'ecapa-x'" in message
    assert CAMPPLUS.name in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"format": "voxmatch-calibration-profile", "version": 1}', "profile lacks name"),
        (b'{"format": "voxmatch-calibration-profile", "version": 7}', "version 7 is not known"),
        (b'{"format": "something else"}', '"format" must be'),
    ],
)
def test_a_malformed_profile_is_422_saying_what_is_wrong(
    profile_server: RunningServer, profiles_dir: Path, content: bytes, problem: str
) -> None:
    (profiles_dir / "broken.json").write_bytes(content)
    a, b = voiceprints(seed=1), voiceprints(seed=2)
    response = profile_server.client().post(COMPARISON, json=body(a, b, calibration="broken"))
    message = assert_profile_error(response, "calibration.unusable-profile", profiles_dir)
    assert "calibration profile 'broken' cannot be used" in message
    assert problem in message


def test_an_edited_profile_with_a_bad_value_is_422(
    profile_server: RunningServer, profiles_dir: Path
) -> None:
    document = (profiles_dir / "office.json").read_text()
    (profiles_dir / "edited.json").write_text(
        document.replace('"name": "office"', '"name": "edited"').replace(
            '"scale": ', '"scale": -', 1
        )
    )
    a, b = voiceprints(seed=1), voiceprints(seed=2)
    response = profile_server.client().post(COMPARISON, json=body(a, b, calibration="edited"))
    message = assert_profile_error(response, "calibration.unusable-profile", profiles_dir)
    assert "scale must be positive" in message


def test_a_profile_saved_while_the_server_runs_is_found_and_its_changes_followed(
    profile_server: RunningServer, profiles_dir: Path, office: CalibrationProfile
) -> None:
    client = profile_server.client()
    a, b = voiceprints(seed=3), voiceprints(seed=4)
    before = client.post(COMPARISON, json=body(a, b, calibration="late"))
    assert_profile_error(before, "calibration.unknown-profile", profiles_dir)

    save_profile(dataclasses.replace(office, name="late"), profiles_dir)
    scores = rest_scores(client, body(a, b, calibration="late"))
    assert_scored_by(scores, expected_rest_scores(a, b, office.calibration), office.calibration)

    changed = Calibration(
        wideband=PairCalibration(scale=4.0, offset=1.5, offset_per_log_speech=0.5),
        speech_cap=20.0,
    )
    save_profile(
        dataclasses.replace(office, name="late", calibration=changed), profiles_dir, replace=True
    )
    scores = rest_scores(client, body(a, b, calibration="late"))
    assert_scored_by(scores, expected_rest_scores(a, b, changed), changed)


@pytest.mark.slow
def test_an_accepted_task_keeps_its_profile_through_a_restart_and_an_edit(
    server_factory: ServerFactory,
    profiles_dir: Path,
    office: CalibrationProfile,
    tmp_path: Path,
) -> None:
    own_profiles = tmp_path / "profiles"
    shutil.copytree(profiles_dir, own_profiles)
    env = {**model_env(), "VOXMATCH_WORKERS": "1", PROFILES_ENV: str(own_profiles)}
    server = server_factory(env)
    client = server.client()
    holding = hold_the_worker(client)
    a, b = voiceprints(seed=5), voiceprints(seed=6)
    accepted = client.post(COMPARISON, json=body(a, b, calibration="office"))
    assert accepted.status_code == 202, accepted.text
    edited = dataclasses.replace(office, calibration=Calibration.linear(scale=1.0, offset=9.0))
    save_profile(edited, own_profiles, replace=True)
    # The only worker was on the holding task all along: the comparison had not started.
    client = restart_after_kill(server, server_factory, env, holding)
    done = wait_for_task(client, accepted.headers["location"], timeout=120).json()
    assert done["task"]["state"] == "done", done
    scores = done["result"]["scores"]
    matrix = np.array(scores["values"], np.float32).reshape(len(b), len(a))
    assert_scored_by(matrix, expected_rest_scores(a, b, office.calibration), office.calibration)
    # A request made now gets the edited profile.
    assert_scored_by(
        rest_scores(client, body(a, b, calibration="office")),
        expected_rest_scores(a, b, edited.calibration),
        edited.calibration,
    )
