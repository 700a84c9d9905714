"""The README's promises: its two commands exist, and its Python session runs as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from _helpers import RunningServer, model_env, speech_clip

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_two_commands() -> None:
    _, first_block = code_blocks()[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
    for command in commands:
        assert os.access(REPO / command, os.X_OK)
    ci = (REPO / ".ci" / "run").read_text()
    assert "./scripts/test" in ci, "CI runs the README's test command"


def test_python_session_runs_against_a_live_server(server: RunningServer, tmp_path: Path) -> None:
    marker = README.index("readme-python-session")
    session = re.search(r"```python\n(.*?)```", README[marker:], flags=re.DOTALL)
    assert session is not None
    script = tmp_path / "session.py"
    script.write_text(session.group(1))
    # The curl session's recordings: two AMI excerpts of one speaker, one of another.
    sf.write(tmp_path / "alice-monday.wav", speech_clip("FEE083", "trn06"), 16000)
    sf.write(tmp_path / "alice-friday.wav", speech_clip("FEE083", "trn09"), 16000)
    sf.write(tmp_path / "bob.wav", speech_clip("MÉO069", "trn03"), 16000)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, **model_env(), "VOXMATCH_URL": server.base_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "campplus-zh-en-16k-advanced 12.0 (192,)" in result.stdout
    assert re.search(r"^Alice: \d+\.\d s of speech$", result.stdout, flags=re.MULTILINE)
