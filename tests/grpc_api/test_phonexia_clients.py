"""Conformance: Phonexia's own published command-line clients against a real voxmatch server.

Each client is installed from PyPI at a pinned version into a virtual environment of its own
(their NumPy pin differs from voxmatch's), created once and cached under the test cache folder
(VOXMATCH_TEST_CACHE or ~/.cache/voxmatch), then run as a subprocess exactly as a user runs it.
What the clients print is checked against voxmatch's REST API for the same voiceprints.
The tests are skipped only when PyPI cannot be reached to install a client.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from _grpc_helpers import grpc_address, self_signed_certificate, wav_bytes

from _helpers import (
    COMPARISON,
    SCORE_TOLERANCE,
    RunningServer,
    model_env,
    random_batch,
    speech_clip,
    start_server,
    wait_for_task,
)
from tools import corpora
from voxmatch import Voiceprint, VoiceprintBatch

# Each client runs in a process of its own (and is installed by pip on the first run).
# Slow, and installing the clients (up to 900 s per pip run) counts against the timeout too.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

CLIENTS = {
    "phonexia-voiceprint-extraction-client": ("2.1.0", "voiceprint_extraction_client"),
    "phonexia-voiceprint-comparison-client": ("2.1.0", "voiceprint_comparison_client"),
    "phonexia-speaker-identification-client": ("1.0.0", "speaker_identification_client"),
}
EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
CONVERSION = "/api/technology/speaker-identification-voiceprint-conversion"
MERGING = "/api/technology/speaker-identification-voiceprint-merging"
_OFFLINE_SIGNS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectTimeout",
    "ProxyError",
    "No matching distribution found",
)


def client_command(package: str) -> Path:
    """The client's command in its own cached virtual environment, installed on first use."""
    version, script = CLIENTS[package]
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    venv = corpora.cache_dir() / "phonexia-clients" / f"{package}-{version}-{python}"
    # Written last: a venv without it is a half-built one (an interrupted run) and is rebuilt.
    # (A venv cannot be built elsewhere and moved: its scripts name their interpreter by path.)
    complete = venv / "voxmatch-installed"
    command = venv / "bin" / script
    if complete.exists() and command.exists():
        return command
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            f"{package}=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if install.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        output = install.stdout + install.stderr
        if any(sign in output for sign in _OFFLINE_SIGNS):
            pytest.skip(f"PyPI is unreachable, cannot install {package}=={version}:\n{output}")
        pytest.fail(f"pip install {package}=={version} failed:\n{output}")
    complete.write_text(f"{package}=={version}\n")
    return command


def run(command: Path, *arguments: str, env: dict[str, str] | None = None) -> bytes:
    finished = subprocess.run(
        [str(command), *arguments],
        capture_output=True,
        timeout=900,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")[-4000:]
    return finished.stdout


def json_documents(text: str) -> list[dict[str, Any]]:
    """The clients print one indented JSON document per response, one after the other."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # A matrix limit above the default, so that one comparison needs several response messages.
    running = start_server(
        tmp_path_factory.mktemp("phonexia-clients") / "data",
        {**model_env(), "VOXMATCH_MAX_MATRIX_SIZE": "2000000"},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def extraction_client() -> Path:
    return client_command("phonexia-voiceprint-extraction-client")


@pytest.fixture(scope="module")
def comparison_client() -> Path:
    return client_command("phonexia-voiceprint-comparison-client")


@pytest.fixture(scope="module")
def identification_client() -> Path:
    return client_command("phonexia-speaker-identification-client")


def rest_task(server: RunningServer, path: str, **request: object) -> dict[str, Any]:
    client = server.client(timeout=120)
    if "files" in request:
        accepted = client.post(path, files=request["files"])  # type: ignore[arg-type]
    else:
        accepted = client.post(path, json=request)
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"], timeout=300).json()
    assert body["task"]["state"] == "done", body
    return dict(body["result"])


def write_voiceprints(folder: Path, batch: VoiceprintBatch, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, content in enumerate(batch.to_bytes_list()):
        path = folder / f"{prefix}{index:05d}.vp"
        path.write_bytes(content)
        paths.append(path)
    return paths


def write_list(path: Path, items: list[Path]) -> Path:
    path.write_text("".join(f"{item}\n" for item in items))
    return path


def cosine(a: Voiceprint, b: Voiceprint) -> float:
    return float(
        a.embedding @ b.embedding / np.linalg.norm(a.embedding) / np.linalg.norm(b.embedding)
    )


@pytest.mark.parametrize("package", ["extraction", "identification"])
def test_extract_from_real_audio(
    package: str,
    server: RunningServer,
    tmp_path: Path,
    extraction_client: Path,
    identification_client: Path,
) -> None:
    address = grpc_address(server)
    # Custom metadata is passed through, as the clients allow.
    options = ["-H", address, "--plaintext", "--metadata", "x-test=1"]
    if package == "extraction":
        command, prefix = extraction_client, options
    else:
        command, prefix = identification_client, [*options, "extract"]
    wav = tmp_path / "clip.wav"
    wav.write_bytes(wav_bytes(speech_clip("FEE083", "trn09")))
    rest = rest_task(server, EXTRACTION, files={"file": ("clip.wav", wav.read_bytes())})
    rest_voiceprint = Voiceprint.from_base64(rest["channels"][0]["voiceprint"])

    binary = tmp_path / "clip.vp"
    run(command, *prefix, str(wav), "-f", "binary", "-o", str(binary))
    voiceprint = Voiceprint.from_bytes(binary.read_bytes())
    assert cosine(voiceprint, rest_voiceprint) > 0.9999
    assert voiceprint.speech_length == pytest.approx(rest_voiceprint.speech_length, abs=1e-3)

    printed = json.loads(run(command, *prefix, str(wav), "--enable-vector-voiceprint"))
    result = printed["result"]
    assert base64.b64decode(result["voiceprint"]["content"]) == binary.read_bytes()
    assert result["speech_length"].endswith("s")
    assert float(result["speech_length"][:-1]) == pytest.approx(voiceprint.speech_length)
    vector = np.array(result["vector_voiceprint"]["values"], dtype=np.float32)
    assert vector.shape == (192,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert float(printed["processed_audio_length"][:-1]) > voiceprint.speech_length

    # Raw PCM16 in one-second blocks gives the very same voiceprint as the WAV file.
    raw = tmp_path / "raw.vp"
    run(command, *prefix, str(wav), "--use-raw-audio", "-f", "binary", "-o", str(raw))
    assert raw.read_bytes() == binary.read_bytes()

    # A time range and a speech cap on a real 30 s meeting recording.
    meeting = str(corpora.ami_path("trn09"))
    capped = json.loads(run(command, *prefix, meeting, "--speech-length", "5", "-t", "2:25"))
    assert 4.5 <= float(capped["result"]["speech_length"][:-1]) <= 5.0
    assert float(capped["processed_audio_length"][:-1]) <= 23.0 + 1e-6


def test_compare_lists_m_by_n_equals_rest_transposed(
    server: RunningServer, tmp_path: Path, comparison_client: Path
) -> None:
    # 1500 + 800 voiceprints: three request messages of at most 1024; 1.2 M scores: two
    # response messages under 4 MiB.
    batch_a, batch_b = random_batch(1500, seed=1), random_batch(800, seed=2)
    list_a = write_list(tmp_path / "a.txt", write_voiceprints(tmp_path / "vp", batch_a, "a"))
    list_b = write_list(tmp_path / "b.txt", write_voiceprints(tmp_path / "vp", batch_b, "b"))
    address = grpc_address(server)
    printed = run(
        comparison_client,
        "-H",
        address,
        "--plaintext",
        "compare",
        "--lists",
        str(list_a),
        str(list_b),
    )
    documents = json_documents(printed.decode())
    assert len(documents) >= 2
    first = documents[0]["scores"]
    assert (int(first["rows_count"]), int(first["columns_count"])) == (1500, 800)
    values = np.array(
        [value for document in documents for value in document["scores"]["values"]],
        dtype=np.float32,
    )
    client_scores = values.reshape(1500, 800)

    rest = rest_task(
        server,
        COMPARISON,
        voiceprints_a=batch_a.to_base64_list(),
        voiceprints_b=batch_b.to_base64_list(),
    )["scores"]
    assert (rest["rows_count"], rest["columns_count"]) == (800, 1500)
    rest_scores = np.array(rest["values"], dtype=np.float32).reshape(800, 1500)
    np.testing.assert_array_equal(client_scores, rest_scores.T)

    # The text format rounds to one decimal. That score comes from a 1 x 1 product, another
    # shape than REST's, which may round differently and so land on the other side of a .x5.
    text = run(
        comparison_client,
        "-H",
        address,
        "--plaintext",
        "compare",
        "--files",
        str(tmp_path / "vp" / "a00000.vp"),
        str(tmp_path / "vp" / "b00000.vp"),
        "-f",
        "text",
    ).decode()
    label, printed_score = text.split()
    assert label == "Score:"
    assert printed_score == f"{float(printed_score):.1f}"
    assert abs(float(printed_score) - rest_scores[0, 0]) <= 0.05 + SCORE_TOLERANCE


def test_identification_client_compares_lists(
    server: RunningServer, tmp_path: Path, identification_client: Path
) -> None:
    batch_a, batch_b = random_batch(1100, seed=3), random_batch(30, seed=4)
    list_a = write_list(tmp_path / "a.txt", write_voiceprints(tmp_path / "vp", batch_a, "a"))
    list_b = write_list(tmp_path / "b.txt", write_voiceprints(tmp_path / "vp", batch_b, "b"))
    printed = run(
        identification_client,
        "-H",
        grpc_address(server),
        "--plaintext",
        "compare",
        "--lists",
        str(list_a),
        str(list_b),
    )
    (document,) = json_documents(printed.decode())
    scores = np.array(document["scores"]["values"], dtype=np.float32).reshape(1100, 30)
    rest = rest_task(
        server,
        COMPARISON,
        voiceprints_a=batch_a.to_base64_list(),
        voiceprints_b=batch_b.to_base64_list(),
    )["scores"]
    np.testing.assert_array_equal(
        scores, np.array(rest["values"], dtype=np.float32).reshape(30, 1100).T
    )


@pytest.mark.parametrize("package", ["comparison", "identification"])
def test_merge_and_convert(
    package: str,
    server: RunningServer,
    tmp_path: Path,
    comparison_client: Path,
    identification_client: Path,
) -> None:
    command = comparison_client if package == "comparison" else identification_client
    address = grpc_address(server)
    rng = np.random.default_rng(5)
    batch = random_batch(1100, seed=5)
    lengths = rng.uniform(1, 40, 1100).astype(np.float32)
    lengths[17] = 0
    embeddings = batch.embeddings.copy()
    embeddings[17] = 0  # a voiceprint of no speech
    batch = VoiceprintBatch(embeddings, lengths, batch.model)
    paths = write_voiceprints(tmp_path / "vp", batch, "v")

    merged = tmp_path / "merged.vp"
    run(command, "-H", address, "--plaintext", "merge", *map(str, paths[:5]), "-f", "binary",
        "-o", str(merged))  # fmt: skip
    rest_merged = rest_task(server, MERGING, voiceprints=batch.to_base64_list()[:5])
    assert merged.read_bytes() == base64.b64decode(rest_merged["voiceprint"])
    printed = json.loads(run(command, "-H", address, "--plaintext", "merge", *map(str, paths[:5])))
    assert float(printed["speech_length"][:-1]) == pytest.approx(rest_merged["speech_length"])

    # 1100 voiceprints: the client sends two requests and prints one document per response.
    documents = json_documents(
        run(command, "-H", address, "--plaintext", "convert", *map(str, paths)).decode()
    )
    assert [len(document["vector_voiceprints"]) for document in documents] == [1024, 76]
    vectors = [v["values"] for document in documents for v in document["vector_voiceprints"]]
    rest_vectors = rest_task(server, CONVERSION, voiceprints=batch.to_base64_list())
    assert vectors[17] == [] == rest_vectors["vector_voiceprints"][17]
    for index in (0, 16, 18, 1099):
        np.testing.assert_array_equal(
            np.array(vectors[index], dtype=np.float32),
            np.array(rest_vectors["vector_voiceprints"][index], dtype=np.float32),
        )


def test_tls_with_the_clients_default_secure_channel(
    tmp_path: Path, extraction_client: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    secure = start_server(
        tmp_path / "data",
        {**model_env(), "VOXMATCH_TLS_CERT": str(cert), "VOXMATCH_TLS_KEY": str(key)},
    )
    try:
        port = grpc_address(secure).rsplit(":", 1)[1]
        wav = tmp_path / "clip.wav"
        sf.write(wav, speech_clip("FEE083", "trn09"), 16000, subtype="PCM_16")
        # The clients trust the system's roots; gRPC reads another root file from this variable.
        printed = run(
            extraction_client,
            "-H",
            f"localhost:{port}",
            str(wav),
            env={"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(cert)},
        )
        voiceprint = Voiceprint.from_bytes(
            base64.b64decode(json.loads(printed)["result"]["voiceprint"]["content"])
        )
        assert voiceprint.speech_length > 3
    finally:
        secure.stop()
