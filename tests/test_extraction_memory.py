"""Extraction in bounded memory: a two-hour recording through the REST API of a real server.

The memory is read from the server process itself (/proc/<pid>/status): VmHWM is the peak of its
resident memory since it started, VmRSS what it holds now.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from _helpers import ServerFactory, model_env, speech_clip, wait_for_task
from bench.long_recording import held_out_speech, write_long_recording
from voxmatch import Voiceprint, compare

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
MIB = 1 << 20
PEAK_LIMIT = 1024 * MIB
IDLE_LIMIT = 800 * MIB


def status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def wav_bytes(samples: NDArray[np.float32]) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def extract(client: httpx.Client, content: bytes | io.BufferedReader, name: str) -> dict[str, Any]:
    accepted = client.post(EXTRACTION, files={"file": (name, content)})
    assert accepted.status_code == 202, accepted.text
    body = wait_for_task(client, accepted.headers["location"], timeout=3600).json()
    assert body["task"]["state"] == "done", body
    (channel,) = body["result"]["channels"]
    assert isinstance(channel, dict), channel
    return channel


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two hours of audio on a slow, shared machine
def test_a_two_hour_recording_is_extracted_in_bounded_memory(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # Two hours, with one speaker's 21.5 s of real speech in every minute: 47 minutes of it,
    # so long speech goes through the network as well as long audio through decoding and
    # detection. Before streaming, this took the server past 20 GB.
    path = tmp_path / "two hours.flac"
    speech_written = write_long_recording(path, minutes=120)
    server = server_factory(model_env())
    pid = server.process.pid
    client = server.client(timeout=600)
    same_speaker = extract(client, wav_bytes(held_out_speech()), "same.wav")
    other_speaker = extract(client, wav_bytes(speech_clip("MÉO069", "trn03")), "other.wav")

    with path.open("rb") as upload:
        channel = extract(client, upload, path.name)

    peak = status_bytes(pid, "VmHWM")
    after = status_bytes(pid, "VmRSS")
    assert peak < PEAK_LIMIT, f"the server peaked at {peak / MIB:.0f} MiB"
    assert after < IDLE_LIMIT, f"the server holds {after / MIB:.0f} MiB after the task"
    assert 0.5 * speech_written < channel["speech_length"] <= speech_written
    # Where the speech is: bounded too, however long the recording, and still inside it.
    segments = channel["speech_segments"]
    assert 0 < len(segments) <= 1000
    assert segments[0][0] >= 0
    assert segments[-1][1] <= 120 * 60
    long_voiceprint = Voiceprint.from_base64(channel["voiceprint"])
    references = [
        Voiceprint.from_base64(same_speaker["voiceprint"]),
        Voiceprint.from_base64(other_speaker["voiceprint"]),
    ]
    same, other = compare([long_voiceprint], references)[0]
    assert same > 2, f"the same speaker gets a clearly positive LLR, not {same:.2f}"
    assert other < 0, f"another speaker gets a negative LLR, not {other:.2f}"
