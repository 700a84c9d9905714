"""The gallery store in-process (`voxmatch.open_galleries`): real SQLite, real files, a real
process killed in the middle of enrolling."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import voxmatch
from _helpers import SCORE_TOLERANCE, assert_scores_close
from voxmatch import GalleryError, Voiceprint, VoiceprintBatch, compare, open_galleries
from voxmatch.models import CAMPPLUS


def voiceprints(count: int, seed: int) -> VoiceprintBatch:
    rng = np.random.default_rng(seed)
    return VoiceprintBatch(
        rng.standard_normal((count, 192)).astype(np.float32),
        rng.uniform(1, 30, count).astype(np.float32),
        CAMPPLUS.name,
    )


def test_replacements_and_deletions_compact_the_file_and_keep_every_answer(
    tmp_path: Path,
) -> None:
    with open_galleries(tmp_path) as galleries:
        galleries.create("watch")
        gallery = galleries.gallery("watch")
        current = {f"s{index}": voiceprints(1, index) for index in range(10)}
        for speaker, batch in current.items():
            gallery.enrol_speaker(speaker, batch)
        for round_number in range(5):
            for index in range(8):
                current[f"s{index}"] = voiceprints(2, 100 * round_number + index)
                gallery.enrol_speaker(f"s{index}", current[f"s{index}"], {"round": round_number})
        gallery.delete_speaker("s9")
        del current["s9"]
        files = sorted(path.name for path in (tmp_path / "galleries").rglob("embeddings-*"))
        assert len(files) == 1, files
        assert files != ["embeddings-0.f32"], "garbage outnumbered the live rows: compacted"
        probes = voiceprints(4, 999)
        found = gallery.search(probes, top_k=9)
    names = list(current)
    merged = VoiceprintBatch.of([voxmatch.merge(batch) for batch in current.values()])
    expected = compare(merged, probes).T
    for row, matches in enumerate(found):
        order = np.argsort(-expected[row])
        assert [match.speaker_id for match in matches] == [names[i] for i in order]
        assert_scores_close([match.score for match in matches], expected[row][order])
    with open_galleries(tmp_path) as galleries:
        gallery = galleries.gallery("watch")
        assert gallery.search(probes, top_k=9) == found
        assert gallery.speaker("s3").metadata == {"round": 4}
        assert gallery.info().speakers_count == 9


def test_adding_recordings_equals_enrolling_them_all_at_once(tmp_path: Path) -> None:
    batch = voiceprints(5, 4)
    with open_galleries(tmp_path) as galleries:
        galleries.create("g")
        gallery = galleries.gallery("g")
        gallery.enrol_speaker("one-by-one", list(batch)[:2])
        gallery.add_voiceprints("one-by-one", list(batch)[2:4])
        info = gallery.add_voiceprints("one-by-one", list(batch)[4:])
        gallery.enrol_speaker("at-once", batch)
        assert info.voiceprints_count == 5
        assert info.speech_length == pytest.approx(float(batch.speech_lengths.sum()), rel=1e-6)
        (matches,) = gallery.search([batch[0]], top_k=2)
    assert matches[0].score == pytest.approx(matches[1].score, abs=1e-4)


def test_bad_requests_are_gallery_errors(tmp_path: Path) -> None:
    with open_galleries(tmp_path) as galleries:
        with pytest.raises(GalleryError, match="gallery name"):
            galleries.create("../up")
        galleries.create("g")
        gallery = galleries.gallery("g")
        with pytest.raises(GalleryError, match="not enrolled") as unknown:
            gallery.add_voiceprints("nobody", voiceprints(1, 1))
        assert unknown.value.reason == "unknown-speaker"
        with pytest.raises(GalleryError, match="speaker id"):
            gallery.enrol_speaker("a/b", voiceprints(1, 1))
        with pytest.raises(GalleryError, match="metadata"):
            gallery.enrol_speaker("big", voiceprints(1, 1), {"notes": "x" * 5000})
        with pytest.raises(GalleryError, match="top_k"):
            gallery.search(voiceprints(1, 1), top_k=0)
        with pytest.raises(GalleryError, match="does not exist"):
            galleries.gallery("missing")
        assert gallery.search(voiceprints(2, 1)) == [[], []], "an empty gallery matches nobody"


ENROL_UNTIL_KILLED = """
import sys
import numpy as np
from voxmatch import open_galleries
from voxmatch.galleries import Enrolment
from voxmatch.voiceprint import VoiceprintBatch

galleries = open_galleries(sys.argv[1])
galleries.create("crash")
gallery = galleries.gallery("crash")
for step in range(10_000):
    rng = np.random.default_rng(step)
    batch = VoiceprintBatch(
        rng.standard_normal((2000, 192)).astype(np.float32),
        np.full(2000, 5.0, np.float32),
        "campplus-zh-en-16k-advanced",
    )
    ids = [f"{step}-{index}" for index in range(1000)]
    gallery.enrol(Enrolment(ids, batch, np.repeat(np.arange(1000), 2), [None] * 1000))
    if step % 3 == 2:
        gallery.delete_speaker(f"{step - 1}-7")
    print(step, flush=True)
"""


@pytest.mark.slow
def test_a_process_killed_while_enrolling_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", ENROL_UNTIL_KILLED, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    acknowledged = -1
    for line in process.stdout:
        acknowledged = int(line)
        if acknowledged == 7:
            break
    process.kill()  # kill -9, somewhere in the enrolment after the 8th
    process.wait(30)
    process.stdout.close()
    assert acknowledged == 7
    with open_galleries(tmp_path) as galleries:
        gallery = galleries.gallery("crash")
        info = gallery.info()
        assert info.voiceprints_count == 2 * info.speakers_count
        per_step: dict[int, set[int]] = {}
        for speaker in gallery.speakers(0, info.speakers_count):
            prefix, _, index = speaker.speaker_id.partition("-")
            per_step.setdefault(int(prefix), set()).add(int(index))
        # The process may have gone on after the 8th acknowledgement; whatever it committed is
        # whole: each enrolment step entirely (less the speaker a later step deleted), or not.
        steps = sorted(per_step)
        assert steps == list(range(len(steps)))
        assert len(steps) >= 8
        for step, indices in per_step.items():
            assert indices in (set(range(1000)), set(range(1000)) - {7}), step
        assert 7 not in per_step[1]
        assert 7 not in per_step[4], "acknowledged deletions stay deleted"
        for step in (0, 7):
            batch = np.random.default_rng(step).standard_normal((2000, 192)).astype(np.float32)
            probe = Voiceprint.from_embedding(batch[6] + batch[7], speech_length=5)
            (matches,) = gallery.search([probe], top_k=1)
            assert matches[0].speaker_id == f"{step}-3"


def test_searches_during_replacements_and_compactions_stay_right(tmp_path: Path) -> None:
    stable = voiceprints(50, 7)  # the churning speakers are of seeds from 10,000 on
    with open_galleries(tmp_path) as galleries:
        galleries.create("busy")
        gallery = galleries.gallery("busy")
        for index in range(50):
            gallery.enrol_speaker(f"stable-{index}", [stable[index]])
        expected = compare(stable, stable).T
        failures: list[str] = []
        searches = 0
        done = threading.Event()

        def search_until_done() -> None:
            nonlocal searches
            while not done.is_set() or searches == 0:
                for matches, own in zip(gallery.search(stable, top_k=3), range(50), strict=True):
                    names = [match.speaker_id for match in matches]
                    if len(set(names)) != len(names):
                        failures.append(f"a speaker twice: {names}")
                    if names[0] != f"stable-{own}":
                        failures.append(f"probe {own} found {names}")
                    elif abs(matches[0].score - float(expected[own, own])) > SCORE_TOLERANCE:
                        failures.append(f"probe {own} scored {matches[0].score}")
                searches += 1

        searcher = threading.Thread(target=search_until_done)
        searcher.start()
        try:
            # Churning speakers, replaced and deleted over and over: each step leaves garbage,
            # and compactions follow one another while the searches run.
            generation_files: set[str] = set()
            for round_number in range(30):
                for index in range(20):
                    gallery.enrol_speaker(
                        f"churn-{index}", voiceprints(1, 10_000 + 100 * round_number + index)
                    )
                for index in range(0, 20, 3):
                    gallery.delete_speaker(f"churn-{index}")
                generation_files.update(
                    path.name for path in (tmp_path / "galleries").rglob("embeddings-*.f32")
                )
        finally:
            done.set()
            searcher.join(120)
        assert failures == []
        assert searches > 0
        assert len(generation_files) > 3, "the churn compacted the file several times"
