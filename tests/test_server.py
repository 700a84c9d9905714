"""What `voxmatch serve` leaves on disk: nothing in the data folder readable by other users."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import soundfile as sf

from _helpers import (
    COMPARISON,
    ServerFactory,
    model_env,
    random_voiceprints,
    speech_clip,
    wait_for_task,
)

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"


def modes_under(folder: Path) -> dict[str, int]:
    modes = {".": stat.S_IMODE(folder.stat().st_mode)}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent) / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue  # a task's inputs, removed by its worker just after it finished
            modes[str(path.relative_to(folder))] = stat.S_IMODE(mode)
    return modes


def test_the_data_folder_is_private(server_factory: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)  # as an operator may have made it, before voxmatch ran
    server = server_factory(model_env(), data_dir=data_dir)
    client = server.client()
    wav = io.BytesIO()
    sf.write(wav, speech_clip("FEE083", "trn09"), 16000, format="WAV")
    extraction = client.post(EXTRACTION, files={"file": ("a.wav", wav.getvalue())})
    assert extraction.status_code == 202, extraction.text
    voiceprints = [voiceprint.to_base64() for voiceprint in random_voiceprints(3)]
    comparison = client.post(
        COMPARISON, json={"voiceprints_a": voiceprints[:2], "voiceprints_b": voiceprints[2:]}
    )
    assert comparison.status_code == 202, comparison.text
    for accepted in (extraction, comparison):
        task = wait_for_task(client, accepted.headers["location"], timeout=180).json()
        assert task["task"]["state"] == "done", task

    modes = modes_under(data_dir)
    task_ids = [
        accepted.headers["location"].rsplit("/", 1)[1] for accepted in (extraction, comparison)
    ]
    # The places the server writes, all present, so that the check below covers them.
    expected = {".", "tasks.sqlite3", "tasks.sqlite3-wal", "tasks.sqlite3-shm", "endpoints.json"}
    expected |= {f"tasks/{task_id}" for task_id in task_ids}
    expected.add(f"tasks/{task_ids[1]}/out.scores.npy")
    assert expected <= set(modes), sorted(modes)
    readable_by_others = {path: oct(mode) for path, mode in modes.items() if mode & 0o077}
    assert readable_by_others == {}
    assert modes["."] == 0o700
    assert modes["tasks.sqlite3"] == 0o600
