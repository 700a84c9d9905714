"""`voxmatch extract` of folders and lists in worker processes: the voiceprints of the one-file
path, written as files finish, resumed after a kill, bad files reported and skipped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _bulk_speech import (
    assert_same_voiceprints,
    expected_voiceprints,
    is_alive,
    kill,
    speech_folder,
    voxmatch_command,
    written_voiceprints,
)
from _helpers import children_of, model_env, wait_until
from tools import corpora
from voxmatch.bulk_extraction import ExtractionOptions, is_finished, media_files

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        voxmatch_command(*args),
        cwd=cwd,
        env={**os.environ, **model_env()},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_folder_in_two_processes_gives_the_voiceprints_of_the_one_file_path(
    tmp_path: Path,
) -> None:
    files = speech_folder(tmp_path / "speech", 6)
    (tmp_path / "speech" / "b" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    (tmp_path / "speech" / "notes.txt").write_text("not a media file: left alone")
    result = run("extract", "speech", "--out", "vps", "--processes", "2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    (broken,) = [line for line in lines if "broken.wav" in line]
    assert broken.startswith("voxmatch: speech/b/broken.wav: not a readable audio file"), broken
    assert lines[-1] == f"voxmatch: 1 of {len(files) + 1} files could not be used"
    assert "notes.txt" not in result.stderr
    assert "Traceback" not in result.stderr
    written = written_voiceprints(tmp_path / "vps")
    assert {"a/clip0.vp", "b/clip0.vp"} <= set(written), "sub-folders keep stems apart"
    assert {"call.ch0.vp", "call.ch1.vp"} <= set(written)
    assert_same_voiceprints(written, expected_voiceprints(files))
    printed = sorted(line.split("\t")[0] for line in result.stdout.splitlines())
    assert printed == sorted(str(Path("vps", name)) for name in written)


def test_a_list_file_names_voiceprints_after_paths_relative_to_it(tmp_path: Path) -> None:
    files = speech_folder(tmp_path / "speech", 2)
    (tmp_path / "speech" / "todo.lst").write_text(
        "# recordings to extract\n\na/clip0.wav\n" + f"{tmp_path / 'speech' / 'b' / 'clip0.wav'}\n"
    )
    result = run("extract", "--list", "speech/todo.lst", "--out", "vps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = written_voiceprints(tmp_path / "vps")
    assert_same_voiceprints(
        written,
        expected_voiceprints({name: files[name] for name in ("a/clip0.wav", "b/clip0.wav")}),
    )


def test_an_interrupted_run_resumes_without_redoing_finished_files(tmp_path: Path) -> None:
    speech = tmp_path / "speech"
    files = speech_folder(speech, 6)
    # First in name order, so a process is on it while the short files finish: 420 s of
    # speech (every AMI excerpt), many times the work of all the others together.
    long_recording = np.concatenate([corpora.load(item.path) for item in corpora.ami_files()])
    sf.write(speech / "00-long.wav", long_recording, 16000)
    out = tmp_path / "vps"
    with (tmp_path / "first.err").open("wb") as errors:
        first = subprocess.Popen(
            voxmatch_command("extract", "speech", "--out", "vps", "--processes", "2"),
            cwd=tmp_path,
            env={**os.environ, **model_env()},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        wait_until(lambda: len(list(out.glob("*/*.vp"))) >= 2, "the first voiceprints")
        workers = children_of(first.pid)
    finally:
        kill(first)
    finished = {path: path.stat() for path in out.rglob("*.vp")}
    assert out / "00-long.vp" not in finished, "the run was killed before its end"
    assert workers, "the run had worker processes"
    wait_until(lambda: not any(is_alive(pid) for pid in workers), "orphaned workers to exit")

    # A damaged voiceprint (not one of ours: ours are renamed into place whole) is redone,
    # and the scratch file of an interrupted write is left alone.
    damaged = min(path for path in finished if ".ch" not in path.name)
    damaged.write_text(damaged.read_text()[:20])
    (out / ".clip9.vp.12345.tmp").write_text("half")
    second = run("extract", "speech", "--out", "vps", "--processes", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    # The kill may have come between the two channels of the stereo file: it is done once
    # both are there.
    stereo = {out / "call.ch0.vp", out / "call.ch1.vp"}
    kept = {path for path in finished if path != damaged}
    if not stereo <= kept:
        kept -= stereo
    kept_sources = len(kept) - (1 if stereo <= kept else 0)
    for path in kept:
        now = path.stat()
        assert (now.st_ino, now.st_mtime_ns) == (finished[path].st_ino, finished[path].st_mtime_ns)
    assert f"{kept_sources} of {len(files) + 1} files already extracted" in second.stderr
    redone = {Path(tmp_path, line.split("\t")[0]) for line in second.stdout.splitlines()}
    assert redone.isdisjoint(kept)
    assert damaged in redone
    assert out / "00-long.vp" in redone
    written = written_voiceprints(out)
    expected = expected_voiceprints(files)
    del written["00-long.vp"]
    assert_same_voiceprints(written, expected)


def test_finished_means_every_expected_voiceprint_is_whole(tmp_path: Path) -> None:
    files = speech_folder(tmp_path / "speech", 2)
    stereo = files["call.flac"]
    base = tmp_path / "vps" / "call"
    options = ExtractionOptions()
    assert options.expected_voiceprints(base, stereo) is None, "nothing written: not opened"
    assert not is_finished(options.expected_voiceprints(base, stereo))
    base.parent.mkdir()
    expected = expected_voiceprints({"call.flac": stereo})
    (base.parent / "call.ch0.vp").write_text(expected["call.ch0.vp"].to_base64() + "\n")
    assert options.expected_voiceprints(base, stereo) == [
        base.parent / "call.ch0.vp",
        base.parent / "call.ch1.vp",
    ]
    assert not is_finished(options.expected_voiceprints(base, stereo)), "one channel of two"
    (base.parent / "call.ch1.vp").write_text(expected["call.ch1.vp"].to_base64())
    assert is_finished(options.expected_voiceprints(base, stereo))
    assert not is_finished(ExtractionOptions(channel_mode="mix").expected_voiceprints(base, stereo))
    assert media_files(tmp_path / "speech") == [
        tmp_path / "speech" / name for name in ("call.flac", "a/clip0.wav", "b/clip0.wav")
    ], "a folder's files, then its sub-folders, in name order"
