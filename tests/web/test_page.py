"""The web page at `/`, in a real browser (Debian's Chromium) against a real server.

Everything the page shows is checked against what the REST API answers for the same input; the
page is waited for with Playwright's auto-waiting assertions (they poll until true or their
timeout), never with sleeps.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, expect

from _helpers import (
    COMPARISON,
    EXTRACTION,
    SCORE_TOLERANCE,
    RunningServer,
    model_env,
    random_voiceprints,
    speech_clip,
    start_server,
    wait_for_task,
)
from tools import corpora
from tools.browser import chromium, new_context
from voxmatch.api_keys import add_key

TASK_TIMEOUT_MS = 180_000
"""How long the page may take to show what needs extractions (a busy machine: several
engineers' test runs on two cores); the assertions return as soon as it is there."""

# Playwright's default of 5 s for every other assertion (a reply of the server, a refresh of
# the status): enough on a quiet machine, not on a loaded CI runner. They return when true.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real recordings: two of one speaker (FEE083), one of another."""
    folder = tmp_path_factory.mktemp("recordings")
    clips = {
        "alice-1.wav": speech_clip("FEE083", "trn06"),
        "alice-2.wav": speech_clip("FEE083", "trn09"),
        "bob.wav": speech_clip("MÉO069", "trn03"),
    }
    for name, samples in clips.items():
        sf.write(folder / name, samples, 16000)
    return [folder / name for name in clips]


@dataclass
class WatchedPage:
    """A page with what it logged and every request it made."""

    page: Page
    console: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def foreign_requests(self, server: RunningServer) -> list[str]:
        home = urlparse(server.base_url).netloc
        return [
            request.url
            for request in self.requests
            if urlparse(request.url).scheme not in ("data", "blob")
            and urlparse(request.url).netloc != home
        ]


def open_page(browser: Browser, server: RunningServer, phone: bool = False) -> WatchedPage:
    context = new_context(browser, phone=phone)
    watched = WatchedPage(context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            watched.console.append(f"{message.type}: {message.text}")

    watched.page.on("console", on_console)
    watched.page.on("pageerror", lambda error: watched.console.append(f"pageerror: {error}"))

    def on_request(request: Request) -> None:
        watched.requests.append(request)

    watched.page.on("request", on_request)
    watched.page.goto(server.base_url + "/")
    return watched


def compare_through_the_page(watched: WatchedPage, recordings: list[Path]) -> None:
    page = watched.page
    page.get_by_test_id("audio-input").set_input_files([str(path) for path in recordings])
    rows = page.get_by_test_id("file-row")
    expect(rows).to_have_count(len(recordings))
    expect(page.locator('[data-testid="file-row"][data-state="done"]')).to_have_count(
        len(recordings), timeout=TASK_TIMEOUT_MS
    )
    expect(page.get_by_test_id("score-cell")).to_have_count(
        len(recordings) ** 2, timeout=TASK_TIMEOUT_MS
    )


def shown_matrix(page: Page, size: int) -> np.ndarray:
    matrix = np.full((size, size), np.nan)
    for cell in page.get_by_test_id("score-cell").all():
        row, col = (
            int(cell.get_attribute("data-row") or -1),
            int(cell.get_attribute("data-col") or -1),
        )
        matrix[row, col] = float(cell.get_attribute("data-llr") or "nan")
    assert not np.isnan(matrix).any(), matrix
    return matrix


def api_scores(server: RunningServer, voiceprints: list[str]) -> np.ndarray:
    client = server.client()
    accepted = client.post(
        COMPARISON, json={"voiceprints_a": voiceprints, "voiceprints_b": voiceprints}
    )
    assert accepted.status_code == 202, accepted.text
    scores = wait_for_task(client, accepted.headers["location"]).json()["result"]["scores"]
    shape = (scores["rows_count"], scores["columns_count"])
    return np.array(scores["values"], dtype=np.float64).reshape(shape)


def comparison_voiceprints(watched: WatchedPage) -> list[str]:
    sent = [
        request
        for request in watched.requests
        if request.method == "POST" and urlparse(request.url).path == COMPARISON
    ]
    assert len(sent) == 1, [request.url for request in sent]
    body = sent[0].post_data_json
    assert isinstance(body, dict)
    assert body["voiceprints_a"] == body["voiceprints_b"]
    voiceprints: list[str] = body["voiceprints_a"]
    return voiceprints


def test_three_recordings_give_the_matrix_of_the_rest_api(
    browser: Browser, server: RunningServer, recordings: list[Path]
) -> None:
    watched = open_page(browser, server)
    page = watched.page
    compare_through_the_page(watched, recordings)
    shown = shown_matrix(page, 3)
    voiceprints = comparison_voiceprints(watched)
    # The page keeps the API's float32 values at full precision in data-llr; the API scoring
    # the same voiceprints again is another task, so its float32 sums may differ in order.
    np.testing.assert_allclose(shown, api_scores(server, voiceprints), rtol=0, atol=SCORE_TOLERANCE)
    off_diagonal = np.where(np.eye(3, dtype=bool), -np.inf, shown)
    best = tuple(int(index) for index in np.unravel_index(np.argmax(off_diagonal), shown.shape))
    assert best in ((0, 1), (1, 0)), shown
    assert shown[0, 1] > 0 > max(shown[0, 2], shown[1, 2])

    cell = page.locator('[data-testid="score-cell"][data-row="0"][data-col="1"]')
    cell.hover()
    reading = page.locator("#reading")
    expect(reading).to_contain_text("times more likely if it is the same speaker")
    expect(reading).to_contain_text("support for the same speaker")
    page.locator('[data-testid="score-cell"][data-row="2"][data-col="0"]').focus()
    expect(reading).to_contain_text("more likely if they are different speakers")
    # Per file: speech length and condition, and the speech regions over the waveform.
    first = page.get_by_test_id("file-row").first
    expect(first).to_contain_text("s of speech")
    expect(first).to_contain_text("wideband")

    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button")]
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                && !e.textContent.trim())
            .map((e) => e.id || e.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == [], "every control has a name a screen reader can say"
    assert watched.foreign_requests(server) == []
    assert watched.console == []


def test_a_stereo_file_gives_a_row_and_a_matrix_index_per_channel(
    browser: Browser, server: RunningServer, recordings: list[Path], tmp_path: Path
) -> None:
    left, right = sf.read(recordings[0], dtype="float32")[0], sf.read(recordings[2])[0]
    length = min(len(left), len(right))
    stereo = tmp_path / "interview.wav"
    sf.write(stereo, np.stack([left[:length], right[:length]], axis=1), 16000)
    watched = open_page(browser, server)
    page = watched.page
    page.get_by_test_id("audio-input").set_input_files([str(stereo), str(recordings[1])])
    expect(page.get_by_test_id("score-cell")).to_have_count(9, timeout=TASK_TIMEOUT_MS)
    rows = page.get_by_test_id("file-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("interview.wav · channel 0")
    expect(rows.nth(1)).to_contain_text("interview.wav · channel 1")
    expect(rows.nth(2)).to_contain_text("alice-2.wav")
    shown = shown_matrix(page, 3)
    # Channel 0 is alice, channel 1 bob, then another recording of alice.
    assert shown[0, 2] > 0 > shown[1, 2]
    assert watched.console == []


def test_many_files_are_sent_four_at_a_time(
    browser: Browser, server: RunningServer, recordings: list[Path], tmp_path: Path
) -> None:
    """The page sends the next file only once an earlier extraction has finished, so that one
    person dropping many files does not fill the server's queue. Counted from the browser's own
    order of events: a file's POST is sent after the answer that finished the one before it."""
    files = []
    for copy in range(2):
        for path in recordings:
            files.append(tmp_path / f"{copy}-{path.name}")
            files[-1].write_bytes(path.read_bytes())
    watched = open_page(browser, server)
    page = watched.page
    # Sent POSTs and received answers, in the order the browser saw them.
    events: list[Request | Response] = []
    page.on("request", lambda request: events.append(request))
    page.on("response", lambda response: events.append(response))
    page.get_by_test_id("audio-input").set_input_files([str(path) for path in files])
    expect(page.get_by_test_id("score-cell")).to_have_count(36, timeout=TASK_TIMEOUT_MS)
    outstanding, most = 0, 0
    for event in events:
        route = urlparse(event.url).path
        if isinstance(event, Request) and event.method == "POST" and route == EXTRACTION:
            outstanding += 1
            most = max(most, outstanding)
        elif (
            isinstance(event, Response)
            and event.request.method == "GET"
            and route.startswith(f"{EXTRACTION}/")
            and event.json()["task"]["state"] in ("done", "rejected", "failed")
        ):
            outstanding -= 1
    assert outstanding == 0
    assert 1 <= most <= 4, most
    assert watched.console == []


def test_the_matrix_and_voiceprints_download_as_the_api_gives_them(
    browser: Browser, server: RunningServer, recordings: list[Path]
) -> None:
    watched = open_page(browser, server)
    page = watched.page
    compare_through_the_page(watched, recordings[:2])
    shown = shown_matrix(page, 2)
    with page.expect_download() as npy:
        page.get_by_role("button", name="Download matrix (.npy)").click()
    stored = np.load(io.BytesIO(Path(npy.value.path()).read_bytes()), allow_pickle=False)
    assert stored.dtype == np.float32
    assert stored.shape == (2, 2)
    # The same float32 scores: data-llr holds their shortest decimal form.
    np.testing.assert_array_equal(stored, shown.astype(np.float32))
    with page.expect_download() as csv:
        page.get_by_role("button", name="Download matrix (CSV)").click()
    lines = Path(csv.value.path()).read_text().splitlines()
    assert lines[0] == '"","alice-1.wav","alice-2.wav"'
    assert [float(value) for value in lines[1].split(",")[1:]] == list(shown[0])
    with page.expect_download() as vp:
        page.get_by_role("button", name="Download the voiceprint of alice-1.wav").click()
    assert vp.value.suggested_filename == "alice-1.vp"
    assert Path(vp.value.path()).read_text() == comparison_voiceprints(watched)[0] + "\n"
    page.get_by_role("button", name="Clear all").click()
    expect(page.get_by_test_id("file-row")).to_have_count(0)
    expect(page.get_by_test_id("score-matrix")).to_be_hidden()
    assert watched.console == []


def test_a_server_without_the_waveform_library_still_serves_a_working_page(
    browser: Browser, tmp_path: Path, recordings: list[Path]
) -> None:
    """A server that cannot fetch wavesurfer.js (not in its cache, the registry unreachable)
    serves the page, which says so and draws its own waveforms; voiceprints pasted in are
    scored as the API scores them."""
    model_env()  # the model files, fetched once into the tests' cache
    cache = tmp_path / "cache-without-the-page-library"
    cache.mkdir()
    for path in corpora.models_cache_dir().iterdir():
        if path.is_file() and not path.name.startswith(("wavesurfer.js-", ".")):
            (cache / path.name).symlink_to(path)
    offline = start_server(
        tmp_path / "data",
        {
            "VOXMATCH_MODEL_CACHE_DIR": str(cache),
            # Any download goes to a closed port of this machine: refused at once.
            "https_proxy": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    )
    try:
        with httpx.Client(base_url=offline.base_url) as client:
            missing = client.get("/web/vendor/wavesurfer.esm.js")
            assert missing.status_code == 503
            assert missing.json()["type"] == "asset.unavailable"
            assert str(cache) not in missing.text, "no folder of the server in the message"
        watched = open_page(browser, offline)
        page = watched.page
        expect(page.locator("#library-notice")).to_contain_text("wavesurfer.js")
        page.get_by_test_id("audio-input").set_input_files(str(recordings[0]))
        expect(page.locator('[data-testid="file-row"][data-state="done"]')).to_have_count(
            1, timeout=TASK_TIMEOUT_MS
        )
        expect(page.locator('[data-testid="file-row"] canvas.fallback-wave')).to_have_count(1)
        voiceprints = [voiceprint.to_base64() for voiceprint in random_voiceprints(2, seed=7)]
        page.get_by_text("Compare voiceprints without audio").click()
        page.get_by_label("Voiceprints to add").fill("\n".join(voiceprints) + "\n")
        page.get_by_role("button", name="Add pasted voiceprints").click()
        expect(page.get_by_test_id("score-cell")).to_have_count(9, timeout=TASK_TIMEOUT_MS)
        sent = comparison_voiceprints(watched)
        assert sent[1:] == voiceprints, "pasted voiceprints join after the recording"
        np.testing.assert_allclose(
            shown_matrix(page, 3), api_scores(offline, sent), rtol=0, atol=SCORE_TOLERANCE
        )
        assert watched.foreign_requests(offline) == []
        assert watched.console == []
        page.context.close()
    finally:
        offline.stop()


def test_a_file_that_is_not_audio_shows_the_spe4_message_and_the_task_view_has_it(
    browser: Browser, server: RunningServer, tmp_path: Path
) -> None:
    watched = open_page(browser, server)
    page = watched.page
    notes = tmp_path / "notes.wav"
    notes.write_text("not a recording\n")
    page.get_by_test_id("audio-input").set_input_files(str(notes))
    row = page.locator('[data-testid="file-row"][data-state="rejected"]')
    expect(row).to_have_count(1, timeout=TASK_TIMEOUT_MS)
    expect(row).to_contain_text("The media file cannot be used")
    page.get_by_role("link", name="Tasks").click()
    task = page.locator("#task-list li").filter(has_text="notes.wav")
    expect(task).to_contain_text("rejected")
    expect(task).to_contain_text("The media file cannot be used")
    expect(page.locator("#server-status")).to_contain_text("waiting")
    assert "Traceback" not in (page.text_content("body") or "")


def test_a_searched_recording_finds_its_enrolled_speaker_first(
    browser: Browser, server: RunningServer, recordings: list[Path]
) -> None:
    watched = open_page(browser, server)
    page = watched.page
    page.get_by_role("link", name="Search a gallery").click()
    page.get_by_label("New gallery").fill("watchlist")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_test_id("gallery-select")).to_have_value("watchlist")
    alice_1, alice_2, bob = recordings
    for path, speaker in ((alice_1, "alice"), (bob, "bob")):
        page.get_by_test_id("gallery-audio-input").set_input_files(str(path))
        done = page.locator('[data-testid="probe-row"][data-state="done"]')
        expect(done.filter(has_text=path.name)).to_have_count(1, timeout=TASK_TIMEOUT_MS)
        page.get_by_label("Enrol this recording under the speaker id").fill(speaker)
        page.get_by_role("button", name="Enrol as a new speaker").click()
        expect(page.locator("#enrol-status")).to_contain_text(f"as {speaker}")
    page.get_by_test_id("gallery-audio-input").set_input_files(str(alice_2))
    results = page.get_by_test_id("search-result")
    expect(results).to_have_count(2, timeout=TASK_TIMEOUT_MS)
    expect(results.first).to_have_attribute("data-speaker-id", "alice")
    shown = {
        row.get_attribute("data-speaker-id"): float(row.get_attribute("data-llr") or "nan")
        for row in results.all()
    }
    search = server.client().get("/api/galleries/watchlist").json()
    assert search["speakers_count"] == 2
    assert shown["alice"] > 0 > shown["bob"]
    # A new speaker must be new: an id in use is not replaced.
    page.get_by_label("Enrol this recording under the speaker id").fill("bob")
    page.get_by_role("button", name="Enrol as a new speaker").click()
    expect(page.locator("#enrol-status")).to_contain_text("already has a speaker bob")
    assert (
        server.client().get("/api/galleries/watchlist/speakers/bob").json()["voiceprints_count"]
        == 1
    )
    # Another recording of alice, added to her from the result row.
    page.get_by_role("button", name="Add this recording to speaker alice").click()
    expect(page.locator("#enrol-status")).to_contain_text("2 recordings")
    speaker = server.client().get("/api/galleries/watchlist/speakers/alice").json()
    assert speaker["voiceprints_count"] == 2
    assert watched.foreign_requests(server) == []
    assert watched.console == []


@pytest.mark.parametrize("section", ["compare", "gallery", "tasks"])
def test_a_phone_width_screen_has_no_horizontal_scroll(
    browser: Browser, server: RunningServer, recordings: list[Path], section: str
) -> None:
    watched = open_page(browser, server, phone=True)
    page = watched.page
    if section == "compare":
        compare_through_the_page(watched, recordings)
    else:
        page.goto(f"{server.base_url}/#{section}")
        # Measured once the section has what it loads from the server.
        if section == "gallery":
            expect(page.get_by_test_id("gallery-select")).not_to_contain_text("loading")
        else:
            expect(page.locator("#server-status .card")).to_have_count(5)
    overflow = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert overflow[0] <= overflow[1], overflow
    assert watched.console == []


def test_a_server_with_api_keys_gets_the_key_from_the_person(
    browser: Browser, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-keys"
    key = add_key(key_file, "analyst")
    keyed = start_server(tmp_path / "data", {"VOXMATCH_API_KEYS_FILE": str(key_file)})
    try:
        page = browser.new_page()
        seen_keys: list[str | None] = []
        page.on(
            "request",
            lambda request: (
                seen_keys.append(request.headers.get("x-api-key"))
                if urlparse(request.url).path == "/api/galleries"
                else None
            ),
        )
        page.goto(keyed.base_url + "/#gallery")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("API key")
        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Use this key").click()
        expect(page.get_by_test_id("gallery-select")).to_contain_text("no gallery yet: create one")
        assert seen_keys[0] is None
        assert seen_keys[-1] == key
        with httpx.Client(base_url=keyed.base_url) as client:
            assert client.get("/api/galleries").status_code == 401, "the key is needed"
        page.close()
    finally:
        keyed.stop()


def test_the_page_may_reach_this_server_only_and_its_files_are_open(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self'" in policy
        script = client.get("/web/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        library = client.get("/web/vendor/wavesurfer.esm.js")
        assert library.status_code == 200
        assert "javascript" in library.headers["content-type"]
        unknown = client.get("/web/vendor/jquery.js")
        assert unknown.status_code == 404
        assert unknown.json()["type"] == "resource.not-found"
        assert client.get("/web/nothing-here.js").status_code == 404
