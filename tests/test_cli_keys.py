"""`voxmatch keys add` and `voxmatch serve` with a key file, run as an operator runs them."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

from _helpers import ServerFactory


def voxmatch(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("VOXMATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "voxmatch", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_added_key_is_printed_once_and_works_against_a_server(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    added = voxmatch("keys", "add", "alice", "--file", "api-keys", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert added.stdout == key + "\n"  # the key alone on stdout, for scripts
    assert "alice" in added.stderr
    key_file = tmp_path / "api-keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text() == f"alice {hashlib.sha256(key.encode()).hexdigest()}\n"
    assert key not in key_file.read_text()

    server = server_factory({}, "--set", f"api_keys_file={key_file}")
    client = server.client()
    assert client.get("/api/system/status").status_code == 401
    assert client.get("/api/system/status", headers={"x-api-key": key}).status_code == 200


def test_the_file_defaults_to_the_configured_one(tmp_path: Path) -> None:
    key_file = tmp_path / "configured-keys"
    env = {"VOXMATCH_API_KEYS_FILE": str(key_file)}
    added = voxmatch("keys", "add", "ci", cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    assert key_file.read_text().startswith("ci ")


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    assert voxmatch("keys", "add", "alice", "--file", "keys", cwd=tmp_path).returncode == 0
    for args, message in [
        (("keys", "add", "alice", "--file", "keys"), "already has a key named 'alice'"),
        (("keys", "add", "two words", "--file", "keys"), "must be one word"),
        (("keys", "add", "bob"), "no key file: give --file F or set api_keys_file"),
    ]:
        failed = voxmatch(*args, cwd=tmp_path)
        assert failed.returncode == 2, failed.stderr
        assert failed.stdout == ""
        assert failed.stderr.count("\n") == 1, failed.stderr
        assert message in failed.stderr
    assert len((tmp_path / "keys").read_text().splitlines()) == 1


def test_serve_stops_at_once_on_a_bad_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# ops\nalice {'0' * 64}\nbob my-secret-key\n")
    messages = {}
    for problem, path in (("malformed", key_file), ("missing", tmp_path / "missing")):
        failed = voxmatch(
            "serve", "--port", "0", "--grpc-port", "0", "--data-dir", "data",
            "--set", f"api_keys_file={path}", cwd=tmp_path,
        )  # fmt: skip
        assert failed.returncode == 2, failed.stderr
        assert failed.stderr.count("\n") == 1, failed.stderr
        messages[problem] = failed.stderr
    assert "keys line 3: the second field must be the key's SHA-256" in messages["malformed"]
    assert "my-secret-key" not in messages["malformed"]
    assert "does not exist" in messages["missing"]
    assert not (tmp_path / "data").exists()  # stopped before touching anything


def test_serve_with_an_empty_key_file_refuses_every_key(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# no keys yet\n")
    server = server_factory({"VOXMATCH_API_KEYS_FILE": str(key_file)})
    client = server.client()
    assert client.get("/api/system/status", headers={"x-api-key": "x"}).status_code == 401
    assert client.get("/api/system/info").status_code == 200
    assert "holds no key" in server.log()
