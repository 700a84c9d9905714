"""Screenshots of the web page for docs/web.md, at 1280 x 800 and at a phone's width.

Starts a server of this checkout on a free port of 127.0.0.1 in a temporary data folder, uses the
page as a person would (real AMI speech from `tools.corpora`, one of the recordings through a
real GSM telephone chain) and writes docs/images/web-<section>-<size>.png, reduced to a palette
of 256 colours to keep them small.

    .venv/bin/python -m tools.screenshots [--out docs/images]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tools import corpora, telephone
from tools.browser import chromium, new_context

TIMEOUT_MS = 300_000


def clip(speaker: str, recording: str) -> NDArray[np.float32]:
    """The longest single-speaker run of `speaker` in AMI recording `recording` (16 kHz)."""
    runs = [
        segment
        for segment in corpora.ami_segments(3.0)
        if segment.speaker == speaker and segment.path.stem == recording
    ]
    return corpora.load_segment(max(runs, key=lambda segment: segment.end - segment.start))


def write_recordings(folder: Path) -> list[Path]:
    alice_1, alice_2 = clip("FEE083", "trn06"), clip("FEE083", "trn09")
    bob = clip("MÉO069", "trn03")
    paths = {
        "alice-interview.wav": alice_1,
        "alice-meeting.wav": alice_2,
        "bob-meeting.wav": bob,
    }
    for name, samples in paths.items():
        sf.write(folder / name, samples, 16000)
    call = folder / "call-0417.wav"
    call.write_bytes(telephone.telephone_wav(alice_2, "gsm610", 8000))
    return [*(folder / name for name in paths), call]


@contextmanager
def server(data_dir: Path) -> Iterator[str]:
    data_dir.mkdir(parents=True)
    command = [sys.executable, "-m", "voxmatch", "serve", "--port", "0", "--grpc-port", "0"]
    command += ["--data-dir", str(data_dir)]
    env = {**os.environ, "VOXMATCH_MODEL_CACHE_DIR": str(corpora.models_cache_dir())}
    with (data_dir.parent / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        endpoints = data_dir / "endpoints.json"
        deadline = time.monotonic() + 300
        while not endpoints.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir.parent / "server.log").read_text())
            time.sleep(0.05)
        yield str(json.loads(endpoints.read_text())["rest"])
    finally:
        process.terminate()
        process.wait(30)


def save(page: Page, path: Path) -> None:
    png = page.screenshot(full_page=True, animations="disabled")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}\t{path.stat().st_size} bytes")


def compare(page: Page, recordings: list[Path]) -> None:
    page.get_by_test_id("audio-input").set_input_files([str(path) for path in recordings])
    cells = len(recordings) ** 2
    expect(page.get_by_test_id("score-cell")).to_have_count(cells, timeout=TIMEOUT_MS)
    page.locator('[data-testid="score-cell"][data-row="0"][data-col="3"]').hover()
    page.locator("#compare-title").scroll_into_view_if_needed()


def gallery(page: Page, base_url: str, recordings: list[Path], enrol: bool) -> None:
    page.goto(f"{base_url}/#gallery")
    if enrol:
        page.get_by_label("New gallery").fill("fraud-watchlist")
        page.get_by_role("button", name="Create").click()
        for path, speaker in ((recordings[0], "alice.m"), (recordings[2], "bob.k")):
            search_with(page, path)
            page.get_by_label("Enrol this recording under the speaker id").fill(speaker)
            page.get_by_role("button", name="Enrol as a new speaker").click()
            expect(page.locator("#enrol-status")).to_contain_text(f"as {speaker}")
    else:
        expect(page.get_by_test_id("gallery-select")).to_have_value("fraud-watchlist")
    search_with(page, recordings[3])
    expect(page.get_by_test_id("search-result")).to_have_count(2, timeout=TIMEOUT_MS)
    page.locator("#enrol-status").evaluate("node => { node.textContent = '' }")


def search_with(page: Page, path: Path) -> None:
    page.get_by_test_id("gallery-audio-input").set_input_files(str(path))
    done = page.locator('[data-testid="probe-row"][data-state="done"]')
    expect(done.filter(has_text=path.name)).to_have_count(1, timeout=TIMEOUT_MS)


def shoot(browser: Browser, base_url: str, recordings: list[Path], out: Path) -> None:
    for size, phone in (("1280", False), ("phone", True)):
        context = new_context(browser, phone=phone)
        page = context.new_page()
        page.goto(f"{base_url}/")
        compare(page, recordings)
        save(page, out / f"web-compare-{size}.png")
        gallery(page, base_url, recordings, enrol=not phone)
        save(page, out / f"web-gallery-{size}.png")
        # A file that is not audio, for the task view to show how an error reads.
        page.get_by_role("link", name="Compare").click()
        notes = recordings[0].parent / "notes.wav"
        notes.write_text("minutes of the meeting, not a recording\n")
        page.get_by_test_id("audio-input").set_input_files(str(notes))
        expect(page.locator('[data-testid="file-row"][data-state="rejected"]')).to_have_count(
            1, timeout=TIMEOUT_MS
        )
        page.get_by_role("link", name="Tasks").click()
        expect(page.locator("#server-status .card")).to_have_count(5)
        save(page, out / f"web-tasks-{size}.png")
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voxmatch-screenshots-") as scratch:
        folder = Path(scratch)
        recordings = write_recordings(folder)
        with server(folder / "data") as base_url, chromium() as browser:
            shoot(browser, base_url, recordings, arguments.out)


if __name__ == "__main__":
    main()
