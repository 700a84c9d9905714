"""The README's promises: its two commands exist, and its Python session runs as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from _helpers import RunningServer

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
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "VOXMATCH_URL": server.base_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "campplus-zh-en-16k-advanced 12.0 (192,)" in result.stdout
