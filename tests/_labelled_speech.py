"""A user's labelled speech, as `voxmatch calibrate` reads it: a folder per speaker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _helpers import model_env
from tools import corpora


def speaker_folders(root: Path) -> Path:
    """AN4 and LibriVox laid out as a user would: `root/<speaker>/<recording>`, 13 real
    recordings of 6 speakers (3 of them with one recording only), 14 same-speaker trials."""
    for speech in corpora.an4_files() + corpora.librivox_files():
        assert speech.speaker is not None, "both corpora name every speaker"
        folder = root / speech.speaker
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(speech.path, folder / speech.path.name)
    return root


def run_voxmatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`voxmatch ARGS` as a user runs it, with the model files of the tests' shared cache."""
    return subprocess.run(
        [sys.executable, "-m", "voxmatch", *args],
        cwd=cwd,
        env={**os.environ, **model_env()},
        capture_output=True,
        text=True,
        timeout=600,
    )
