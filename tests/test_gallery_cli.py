"""`voxmatch gallery`, run as a user runs it, and the server reading what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from _helpers import ServerFactory, assert_one_error_line
from voxmatch import Voiceprint


def voxmatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxmatch", "gallery", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_voiceprint(path: Path, seed: int) -> Voiceprint:
    rng = np.random.default_rng(seed)
    voiceprint = Voiceprint.from_embedding(rng.standard_normal(192), speech_length=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(voiceprint.to_base64() + "\n")
    return voiceprint


def test_import_a_folder_and_json_lines_then_search(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    write_voiceprint(tmp_path / "speakers" / "ann.vp", 1)
    write_voiceprint(tmp_path / "speakers" / "ben" / "monday.vp", 2)
    write_voiceprint(tmp_path / "speakers" / "ben" / "tuesday.vp", 3)
    rng = np.random.default_rng(4)
    lines = [
        json.dumps(
            {
                "speaker_id": f"line-{index}",
                "voiceprints": [
                    Voiceprint.from_embedding(rng.standard_normal(192), speech_length=5).to_base64()
                ],
                "metadata": {"row": index},
            }
        )
        for index in range(3)
    ]
    (tmp_path / "more.jsonl").write_text("\n".join(lines) + "\n")
    created = voxmatch("create", "watch", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    imported = voxmatch("import", "watch", "speakers", "--progress", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 speakers" in imported.stdout
    assert "2/2" in imported.stderr, "the bar counts speakers, not their recordings"
    assert voxmatch("import", "watch", "more.jsonl", cwd=tmp_path).returncode == 0
    listed = voxmatch("list", "watch", cwd=tmp_path).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [
        ["ann", "1"],
        ["ben", "2"],
        ["line-0", "1"],
        ["line-1", "1"],
        ["line-2", "1"],
    ]
    found = voxmatch(
        "search", "watch", "speakers/ann.vp", "--top-k", "2", "--json", "found.json", cwd=tmp_path
    )
    assert found.returncode == 0, found.stderr
    (result,) = json.loads((tmp_path / "found.json").read_text())
    assert result["probe"] == "ann"
    assert result["matches"][0]["speaker_id"] == "ann"
    assert len(result["matches"]) == 2

    # A server on the same data folder serves what the command wrote.
    client = server_factory(data_dir=tmp_path / "voxmatch-data").client()
    assert client.get("/api/galleries/watch").json()["speakers_count"] == 5
    assert client.get("/api/galleries/watch/speakers/line-1").json()["metadata"] == {"row": 1}


def test_errors_are_one_line_with_an_exit_code(tmp_path: Path) -> None:
    write_voiceprint(tmp_path / "a.vp", 1)
    unknown = voxmatch("search", "nowhere", "a.vp", cwd=tmp_path)
    assert "does not exist" in assert_one_error_line(unknown, 1)
    assert voxmatch("create", "watch", cwd=tmp_path).returncode == 0
    assert "not enrolled" in assert_one_error_line(
        voxmatch("delete", "watch", "nobody", cwd=tmp_path), 1
    )
    (tmp_path / "bad.jsonl").write_text('{"speaker_id": "x"}\n')
    assert "bad.jsonl line 1" in assert_one_error_line(
        voxmatch("import", "watch", "bad.jsonl", cwd=tmp_path), 1
    )
    assert_one_error_line(
        voxmatch("enrol", "watch", "x", "a.vp", "--metadata", "[1]", cwd=tmp_path), 2
    )
    deleted = voxmatch("delete", "watch", cwd=tmp_path)
    assert deleted.returncode == 0
    assert voxmatch("list", cwd=tmp_path).stdout == ""
