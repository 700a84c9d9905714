"""A folder of real speech for the bulk extraction tests, and its voiceprints by the one-file
path (the Python API in this process), to compare the bulk runs with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools import corpora
from voxmatch import Voiceprint
from voxmatch import extract as extract_one

EMBEDDING_TOLERANCE = 1e-5
"""How far apart (absolute, on embeddings of norm about 1, and relative) two extractions of
one file may be: the same onnxruntime graph on the same thread count, in another process or
on another node, which may pick other kernels for the CPU it runs on and round a few ulps
differently. Real errors (another file, another channel, a lost block of audio) are off by
tenths."""


def speech_folder(root: Path, count: int) -> dict[str, Path]:
    """`count` AMI runs of one speaker (>= 3 s) as 16 kHz WAV files, half of them in `a/` and
    half in `b/` under the same names (so that stems collide across sub-folders), and a
    stereo file of two of them at the top. Returns {path relative to root: path}."""
    segments = corpora.ami_segments(3.0)[:count]
    written: dict[str, Path] = {}
    for index, segment in enumerate(segments):
        relative = f"{'ab'[index % 2]}/clip{index // 2}.wav"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, corpora.load_segment(segment), 16000)
        written[relative] = path
    left, right = (corpora.load_segment(segment) for segment in segments[:2])
    length = min(len(left), len(right))
    sf.write(root / "call.flac", np.stack([left[:length], right[:length]], axis=1), 16000)
    written["call.flac"] = root / "call.flac"
    return written


def expected_voiceprints(files: dict[str, Path]) -> dict[str, Voiceprint]:
    """{voiceprint file relative to --out: voiceprint} by the one-file path."""
    expected: dict[str, Voiceprint] = {}
    for relative, path in files.items():
        stem = relative.rsplit(".", 1)[0]
        voiceprints = extract_one(path)
        for number, voiceprint in enumerate(voiceprints):
            suffix = "" if len(voiceprints) == 1 else f".ch{number}"
            expected[f"{stem}{suffix}.vp"] = voiceprint
    return expected


def written_voiceprints(out: Path) -> dict[str, Voiceprint]:
    return {
        path.relative_to(out).as_posix(): Voiceprint.from_base64(path.read_text().strip())
        for path in sorted(out.rglob("*.vp"))
    }


def assert_same_voiceprints(actual: dict[str, Voiceprint], expected: dict[str, Voiceprint]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, voiceprint in actual.items():
        reference = expected[name]
        assert voiceprint.model == reference.model, name
        assert voiceprint.speech_length == pytest.approx(reference.speech_length, abs=1e-3), name
        np.testing.assert_allclose(
            voiceprint.embedding,
            reference.embedding,
            rtol=EMBEDDING_TOLERANCE,
            atol=EMBEDDING_TOLERANCE,
            err_msg=name,
        )


def voxmatch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "voxmatch", *args]


def is_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its new parent, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
