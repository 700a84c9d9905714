"""The calibration profile file: written whole, read strictly, found by name in a folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from _helpers import random_voiceprints
from voxmatch import compare
from voxmatch.calibration_profiles import (
    MAX_PROFILE_BYTES,
    CalibrationProfile,
    ProfileError,
    ProfileLibrary,
    Provenance,
    UnknownProfileError,
    calibration_from_json,
    calibration_to_json,
    load_profile,
    save_profile,
)
from voxmatch.models import DEFAULT_MODEL_NAME
from voxmatch.models.registry import Calibration, PairCalibration

CALIBRATION = Calibration(
    wideband=PairCalibration(12.5, -6.25, scale_per_log_speech=-0.75, offset_per_log_speech=-1.5),
    cross=PairCalibration(10.0, -4.0),
    narrowband=PairCalibration(9.0, -8.5, offset_per_log_speech=0.25),
    speech_cap=20.0,
    speech_floor=1.0,
)
PROFILE = CalibrationProfile(
    name="call-centre_2026.v1",
    model=DEFAULT_MODEL_NAME,
    calibration=CALIBRATION,
    provenance=Provenance(
        created_at="2026-12-01T11:00:00+00:00",
        speakers=12,
        recordings=60,
        target_trials=120,
        nontarget_trials=1650,
        fitted_pairs=["wideband", "narrowband"],
        evaluation={"eer": 0.02, "cllr": 0.1},
        cross_validated=None,
    ),
)


def test_a_profile_reads_back_as_it_was_written(tmp_path: Path) -> None:
    path = save_profile(PROFILE, tmp_path)
    assert path == tmp_path / "call-centre_2026.v1.json"
    assert load_profile(path) == PROFILE
    document = orjson.loads(path.read_bytes())
    assert (document["format"], document["version"]) == ("voxmatch-calibration-profile", 1)
    # Every pair of conditions is spelt out, and reads back to the same calibration.
    assert calibration_from_json(document["calibration"]).pairs() == CALIBRATION.pairs()
    assert list(tmp_path.iterdir()) == [path], "no scratch file left behind"


def test_a_profile_is_not_replaced_unless_asked(tmp_path: Path) -> None:
    save_profile(PROFILE, tmp_path)
    other = dataclasses.replace(PROFILE, calibration=Calibration.linear(3.0, -1.0))
    with pytest.raises(FileExistsError):
        save_profile(other, tmp_path)
    assert load_profile(tmp_path / f"{PROFILE.name}.json") == PROFILE
    save_profile(other, tmp_path, replace=True)
    assert load_profile(tmp_path / f"{PROFILE.name}.json") == other


def _written(tmp_path: Path, edit: dict[str, object], name: str = PROFILE.name) -> Path:
    document = orjson.loads(PROFILE.to_json())
    for dotted, value in edit.items():
        *parents, key = dotted.split(".")
        target = document
        for parent in parents:
            target = target[parent]
        if value is KeyError:
            del target[key]
        else:
            target[key] = value
    path = tmp_path / f"{name}.json"
    path.write_bytes(orjson.dumps(document))
    return path


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"format": "other"}, '"format" must be "voxmatch-calibration-profile"'),
        ({"version": 2}, "version 2 is not known"),
        ({"extra": 1}, "profile has unknown keys: extra"),
        ({"model": KeyError}, "profile lacks model"),
        ({"model": ""}, "model must be a model name"),
        ({"name": "another"}, "says its name is 'another'"),
        ({"calibration.cross": KeyError}, "calibration lacks cross"),
        ({"calibration.wideband.scale": "12"}, "calibration.wideband.scale must be a finite"),
        ({"calibration.wideband.offset": True}, "calibration.wideband.offset must be a finite"),
        ({"calibration.narrowband.tilt": 1.0}, "calibration.narrowband has unknown keys: tilt"),
        ({"calibration.cross.scale": -1.0}, "scale must be positive"),
        ({"calibration.speech_floor": 50.0}, "0 < speech_floor <= speech_cap"),
        ({"provenance.speakers": -1}, "provenance.speakers must be a whole number"),
        ({"provenance.fitted_pairs": ["mono"]}, "provenance.fitted_pairs must be a list of"),
        ({"provenance.evaluation": [1]}, "provenance.evaluation must be a JSON object"),
        ({"provenance.created_at": 5}, "provenance.created_at must be a string"),
    ],
)
def test_a_malformed_profile_is_refused_naming_the_problem(
    tmp_path: Path, edit: dict[str, object], problem: str
) -> None:
    with pytest.raises(ProfileError) as refused:
        load_profile(_written(tmp_path, edit))
    assert problem in str(refused.value)


def test_files_that_are_not_profiles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.json").write_text("hello")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(tmp_path / "text.json")
    (tmp_path / "huge.json").write_bytes(b" " * (MAX_PROFILE_BYTES + 1))
    with pytest.raises(ProfileError, match="not a profile"):
        load_profile(tmp_path / "huge.json")
    with pytest.raises(UnknownProfileError, match="no calibration profile 'absent'"):
        load_profile(tmp_path / "absent.json")


@pytest.mark.parametrize("name", ["", ".x", "-x", "a/b", "a b", "é", "x" * 65])
def test_names_are_file_names_that_stay_in_the_folder(name: str) -> None:
    with pytest.raises(ProfileError, match="is not a profile name"):
        dataclasses.replace(PROFILE, name=name)
    with pytest.raises(UnknownProfileError, match="is not a profile name"):
        ProfileLibrary(Path("profiles")).find(name)


def test_the_library_finds_profiles_saved_later_and_reads_changed_ones_again(
    tmp_path: Path,
) -> None:
    library = ProfileLibrary(tmp_path / "not-yet")
    with pytest.raises(UnknownProfileError, match="there are none"):
        library.find(PROFILE.name)
    save_profile(PROFILE, tmp_path / "not-yet")
    found = library.find(PROFILE.name)
    assert found == PROFILE
    assert library.find(PROFILE.name) is found, "an unchanged file is not parsed again"

    changed = dataclasses.replace(PROFILE, calibration=Calibration.linear(2.0, 0.5))
    save_profile(changed, tmp_path / "not-yet", replace=True)
    assert library.find(PROFILE.name) == changed

    (tmp_path / "not-yet" / "broken.json").write_text("{}")
    assert library.names() == ["broken", PROFILE.name]
    with pytest.raises(UnknownProfileError, match=f"known: broken, {PROFILE.name}"):
        library.find("other")
    with pytest.raises(ProfileError, match="calibration profile 'broken' cannot be used"):
        library.find("broken")


def test_the_python_api_scores_with_a_profile_of_its_model_only() -> None:
    a, b = random_voiceprints(3, seed=1, speech_length=4.0), random_voiceprints(2, seed=2)
    assert (compare(a, b, calibration=PROFILE) == compare(a, b, calibration=CALIBRATION)).all()
    assert not (compare(a, b, calibration=PROFILE) == compare(a, b)).any()
    other = dataclasses.replace(PROFILE, model="ecapa-x")
    with pytest.raises(ProfileError, match="fitted for model 'ecapa-x'"):
        compare(a, b, calibration=other)


def test_a_calibration_round_trips_through_task_params() -> None:
    """The form a comparison task stores its profile's calibration in (JSON)."""
    stored = orjson.loads(orjson.dumps(calibration_to_json(CALIBRATION)))
    restored = calibration_from_json(stored)
    assert restored.pairs() == CALIBRATION.pairs()
    assert (restored.speech_cap, restored.speech_floor) == (20.0, 1.0)
