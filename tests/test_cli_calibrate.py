"""`voxmatch calibrate` on real labelled speech, run as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _helpers import assert_one_error_line
from _labelled_speech import run_voxmatch, speaker_folders
from tools import corpora
from voxmatch.calibration_profiles import calibration_to_json, load_profile
from voxmatch.models import DEFAULT_MODEL_NAME

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_last_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Warnings may come first; the failure is the last line, and there is no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("voxmatch: ") for line in lines), result.stderr
    return lines[-1]


@pytest.mark.slow
def test_a_folder_per_speaker_gives_a_profile_its_plots_and_the_figures(tmp_path: Path) -> None:
    speech = speaker_folders(tmp_path / "speech")
    (speech / "fash" / "notes.txt").write_text("not a recording\n")
    result = run_voxmatch("calibrate", "office", "speech", "--out", "profiles", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    profiles = tmp_path / "profiles"
    profile = load_profile(profiles / "office.json")
    assert profile.name == "office"
    assert profile.model == DEFAULT_MODEL_NAME
    provenance = profile.provenance
    assert (provenance.speakers, provenance.recordings) == (6, 13)
    # Every pair of the 13 recordings: 3 + 1 + 10 same-speaker pairs (fash, mwhw, LibriVox).
    assert (provenance.target_trials, provenance.nontarget_trials) == (14, 78 - 14)
    assert provenance.fitted_pairs == ["wideband"]
    for plot in ("office.det.png", "office.tippett.png"):
        assert (profiles / plot).read_bytes().startswith(PNG_MAGIC), plot
        assert f"wrote {Path('profiles') / plot}" in result.stdout

    # The unreadable file and the speakers without a same-speaker trial are reported.
    assert "notes.txt" in result.stderr
    assert "left out" in result.stderr
    for single in ("fbbh", "fcaw", "mmxg"):
        assert f"speaker {single!r} has one usable recording" in result.stderr
    # The table: both calibrations on the same trials, the figures the profile records.
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert {"shipped", "fitted"} <= rows.keys()
    fitted = provenance.evaluation
    for figure in (f"{fitted['cllr']:.3f}", f"{fitted['min_cllr']:.3f}", f"{fitted['eer']:.2%}"):
        assert figure in rows["fitted"], (figure, rows["fitted"])
    assert "DCF at target prior 0.01" in result.stdout
    # Six speakers in three folds leave too few same-speaker trials to fit without a fold.
    assert "cross-validated" not in rows
    assert provenance.cross_validated is None
    assert "no cross-validated figure" in result.stdout

    # An existing profile is kept unless --force says otherwise.
    again = run_voxmatch("calibrate", "office", "speech", "--out", "profiles", cwd=tmp_path)
    assert "--force" in assert_one_error_line(again, 2)
    assert load_profile(profiles / "office.json") == profile

    # Voiceprints as `voxmatch extract` writes them give the profile the recordings gave.
    for folder in sorted(path for path in speech.iterdir() if path.is_dir()):
        recordings = sorted(str(path) for path in folder.iterdir() if path.suffix != ".txt")
        extracted = run_voxmatch(
            "extract", *recordings, "--out", str(tmp_path / "vps" / folder.name), cwd=tmp_path
        )
        assert extracted.returncode == 0, extracted.stderr
    from_vps = run_voxmatch(
        "calibrate", "office", "vps", "--out", "profiles", "--force", cwd=tmp_path
    )
    assert from_vps.returncode == 0, from_vps.stderr
    replaced = load_profile(profiles / "office.json")
    assert replaced.provenance.recordings == 13
    np.testing.assert_allclose(
        np.array(list(_numbers(calibration_to_json(replaced.calibration)))),
        np.array(list(_numbers(calibration_to_json(profile.calibration)))),
        rtol=1e-6,
        atol=1e-6,
    )


def _numbers(document: dict[str, object]) -> list[float]:
    values: list[float] = []
    for value in document.values():
        values.extend(_numbers(value) if isinstance(value, dict) else [float(str(value))])
    return values


@pytest.mark.slow
def test_enough_speakers_give_a_cross_validated_figure(tmp_path: Path) -> None:
    """AMI meeting speech from a list file, beside AN4 and LibriVox from speaker folders."""
    speaker_folders(tmp_path / "speech")
    clips = tmp_path / "clips"
    clips.mkdir()
    lines = ["# recording<TAB>speaker"]
    for number, segment in enumerate(corpora.ami_segments(2.0)):
        name = f"clip{number}.wav"
        sf.write(clips / name, corpora.load_segment(segment), 16000)
        lines.append(f"{name}\t{segment.speaker}")
    (clips / "labels.tsv").write_text("\n".join(lines) + "\n")
    # No --out: the profile goes where the server looks, the profiles folder of the data folder.
    result = run_voxmatch(
        "calibrate", "meetings", "speech", "clips/labels.tsv", "--data-dir", "data", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    profile = load_profile(tmp_path / "data" / "calibration-profiles" / "meetings.json")
    speakers = {segment.speaker for segment in corpora.ami_segments(2.0)}
    assert profile.provenance.speakers >= len(speakers) + 4  # AN4 and LibriVox: 6 speakers
    cross_validated = profile.provenance.cross_validated
    assert cross_validated is not None
    assert cross_validated["targets"] > 0
    assert cross_validated["nontargets"] > 0
    row = next(line for line in result.stdout.splitlines() if "cross-validated │" in line)
    assert f"{cross_validated['cllr']:.3f}" in row
    assert "speaker-disjoint folds" in result.stdout


def test_one_speaker_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "speech" / "alice").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        (tmp_path / "speech" / "alice" / name).write_bytes(b"never read")
    result = run_voxmatch("calibrate", "solo", "speech", "--out", "out", cwd=tmp_path)
    assert "at least 2 speakers, found 1" in assert_one_error_line(result, 2)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a b", "x" * 65, ""])
def test_a_name_that_is_not_a_profile_name_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "speech").mkdir()
    result = run_voxmatch("calibrate", name, "speech", "--out", "out", cwd=tmp_path)
    assert "is not a profile name" in assert_one_error_line(result, 2)


def test_a_bad_line_in_a_list_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "labels.tsv").write_text("a.wav\talice\nb.wav alice\n")
    result = run_voxmatch("calibrate", "listed", "labels.tsv", "--out", "out", cwd=tmp_path)
    line = assert_one_error_line(result, 2)
    assert "labels.tsv line 2: expected path<TAB>speaker" in line


@pytest.mark.slow
def test_speakers_of_one_recording_each_give_no_same_speaker_trial(tmp_path: Path) -> None:
    files = corpora.an4_files()
    for speech in (files[0], files[3]):  # fash and fbbh: one recording each
        assert speech.speaker is not None
        folder = tmp_path / "speech" / speech.speaker
        folder.mkdir(parents=True)
        shutil.copyfile(speech.path, folder / speech.path.name)
    result = run_voxmatch("calibrate", "pairs", "speech", "--out", "out", cwd=tmp_path)
    assert "no same-speaker trials" in assert_last_error_line(result, 2)
    assert not (tmp_path / "out" / "pairs.json").exists()


@pytest.mark.slow
def test_too_few_trials_to_fit_are_a_clear_error(tmp_path: Path) -> None:
    speech = speaker_folders(tmp_path / "speech")
    shutil.rmtree(speech / "librivox-sense-and-sensibility-01")  # leaves 4 same-speaker trials
    result = run_voxmatch("calibrate", "few", "speech", "--out", "out", cwd=tmp_path)
    line = assert_last_error_line(result, 2)
    assert "at least 10 same-speaker" in line, line
    assert "got 4 same-speaker" in line, line
    assert not (tmp_path / "out" / "few.json").exists()


@pytest.mark.slow
def test_no_usable_recording_is_a_clear_error(tmp_path: Path) -> None:
    for speaker in ("alice", "bob"):
        (tmp_path / "speech" / speaker).mkdir(parents=True)
        (tmp_path / "speech" / speaker / "x.wav").write_bytes(b"RIFF not really")
    result = run_voxmatch("calibrate", "none", "speech", "--out", "out", cwd=tmp_path)
    assert "none of the recordings could be used" in assert_last_error_line(result, 2)
