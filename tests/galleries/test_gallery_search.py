"""Searching galleries through a real server: real speech, the model, exact agreement with a
brute-force search, posteriors, and enrolments and deletions that survive kill -9."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import numpy as np
import pytest

from _helpers import SCORE_TOLERANCE, ServerFactory, model_env
from voxmatch import Voiceprint, VoiceprintBatch
from voxmatch.models import CAMPPLUS
from voxmatch.scoring import Traits, llr_from_cosines

GALLERIES = "/api/galleries"


@functools.cache
def real_speakers() -> dict[str, list[Voiceprint]]:
    """Voiceprints of every single-speaker stretch of at least 2 s of the real corpora, by
    speaker (AMI meetings, AN4 and LibriVox read speech)."""
    import os

    import voxmatch
    from tools import corpora

    os.environ.update(model_env())
    speakers: dict[str, list[Voiceprint]] = {}
    for segment in corpora.ami_segments(2.0):
        (voiceprint,) = voxmatch.extract(segment.path, start=segment.start, end=segment.end)
        speakers.setdefault(f"ami-{segment.speaker}", []).append(voiceprint)
    for speech_file in (*corpora.an4_files(), *corpora.librivox_files()):
        (voiceprint,) = voxmatch.extract(speech_file.path)
        speakers.setdefault(f"{speech_file.corpus}-{speech_file.speaker}", []).append(voiceprint)
    return speakers


def enrol(client: httpx.Client, gallery: str, speaker: str, voiceprints: list[Voiceprint]) -> None:
    response = client.put(
        f"{GALLERIES}/{gallery}/speakers/{speaker}",
        json={"voiceprints": [voiceprint.to_base64() for voiceprint in voiceprints]},
    )
    assert response.status_code in (200, 201), response.text


def search(
    client: httpx.Client, gallery: str, probes: list[Voiceprint], **options: float
) -> list[list[dict[str, Any]]]:
    response = client.post(
        f"{GALLERIES}/{gallery}/search",
        json={"voiceprints": [probe.to_base64() for probe in probes], **options},
    )
    assert response.status_code == 200, response.text
    return [result["matches"] for result in response.json()["results"]]


@pytest.mark.slow
def test_real_speakers_are_found_first(server_factory: ServerFactory) -> None:
    speakers = real_speakers()
    client = server_factory(model_env()).client()
    client.put(f"{GALLERIES}/meetings")
    probes: list[tuple[str, Voiceprint]] = []
    for speaker, voiceprints in speakers.items():
        # Enrolled with the recording of most speech; searched with every other.
        ordered = sorted(voiceprints, key=lambda voiceprint: -voiceprint.speech_length)
        enrol(client, "meetings", speaker, ordered[:1])
        probes.extend((speaker, probe) for probe in ordered[1:])
    assert len(speakers) >= 15
    assert len(probes) >= 15
    results = search(client, "meetings", [probe for _, probe in probes], top_k=3)
    found = [matches[0]["speaker_id"] for matches in results]
    assert found == [speaker for speaker, _ in probes]


@pytest.mark.slow
def test_search_of_100000_bulk_enrolled_equals_a_brute_force_search(
    server_factory: ServerFactory,
) -> None:
    rng = np.random.default_rng(9)
    count, dim = 100_000, CAMPPLUS.embedding_dim
    embeddings = rng.standard_normal((count, dim)).astype(np.float32)
    speech = rng.uniform(1, 60, count).astype(np.float32)
    gallery = VoiceprintBatch(embeddings, speech, CAMPPLUS.name)
    texts = gallery.to_base64_list()
    client = server_factory().client(timeout=300)
    assert client.put(f"{GALLERIES}/bulk").status_code == 201
    for start in range(0, count, 10_000):
        response = client.post(
            f"{GALLERIES}/bulk/speakers",
            json={
                "speakers": [
                    {"speaker_id": f"s{row}", "voiceprints": [texts[row]]}
                    for row in range(start, start + 10_000)
                ]
            },
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"enrolled": 10_000, "replaced": 0}
    assert client.get(f"{GALLERIES}/bulk").json()["speakers_count"] == count
    # Probes near some enrolled speakers, and unrelated ones.
    near = embeddings[[5, 50_000, 99_999]] + 0.5 * rng.standard_normal((3, dim)).astype(np.float32)
    probes = VoiceprintBatch(
        np.concatenate([near, rng.standard_normal((4, dim)).astype(np.float32)]),
        rng.uniform(1, 60, 7).astype(np.float32),
        CAMPPLUS.name,
    )
    k = 20
    results = search(client, "bulk", list(probes), top_k=k, prior_in_gallery=0.9)

    unit = embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    probe_unit = probes.embeddings.astype(np.float64)
    probe_unit /= np.linalg.norm(probe_unit, axis=1, keepdims=True)
    expected = llr_from_cosines(
        probe_unit @ unit.T, CAMPPLUS.calibration, Traits.of(probes), Traits.of(gallery)
    )
    for row, matches in enumerate(results):
        best = np.argsort(-expected[row])[:k]
        assert [match["speaker_id"] for match in matches] == [f"s{column}" for column in best]
        np.testing.assert_allclose(
            [match["score"] for match in matches], expected[row][best], rtol=0, atol=SCORE_TOLERANCE
        )
        log_lr = expected[row]
        log_sum = log_lr.max() + np.log(np.exp(log_lr - log_lr.max()).sum())
        posterior = np.exp(
            log_lr[best]
            + np.log(0.9 / count)
            - np.logaddexp(np.log(0.1), np.log(0.9 / count) + log_sum)
        )
        np.testing.assert_allclose([m["probability"] for m in matches], posterior, rtol=1e-3)
    assert [matches[0]["speaker_id"] for matches in results[:3]] == ["s5", "s50000", "s99999"]


def test_posteriors_sum_to_at_most_one_and_fall_as_the_gallery_grows(
    server_factory: ServerFactory,
) -> None:
    rng = np.random.default_rng(12)
    client = server_factory().client()
    client.put(f"{GALLERIES}/growing")
    target = Voiceprint.from_embedding(rng.standard_normal(192), speech_length=20)
    enrol(client, "growing", "target", [target])
    probe = Voiceprint.from_embedding(
        target.embedding + 0.8 * rng.standard_normal(192), speech_length=20
    )
    seen: list[tuple[float, float]] = []
    enrolled = 1
    for step in range(4):
        (matches,) = search(client, "growing", [probe], top_k=1000, prior_in_gallery=0.5)
        assert len(matches) == enrolled
        assert sum(float(match["probability"]) for match in matches) <= 1.0
        (own,) = [match for match in matches if match["speaker_id"] == "target"]
        seen.append((float(own["score"]), float(own["probability"])))
        more = [
            {
                "speaker_id": f"other-{step}-{index}",
                "voiceprints": [
                    Voiceprint.from_embedding(
                        rng.standard_normal(192), speech_length=20
                    ).to_base64()
                ],
            }
            for index in range(3 * enrolled)
        ]
        assert (
            client.post(f"{GALLERIES}/growing/speakers", json={"speakers": more}).status_code == 200
        )
        enrolled += len(more)
    scores = [score for score, _ in seen]
    assert max(scores) - min(scores) <= SCORE_TOLERANCE, "the same pair, the same LLR"
    probabilities = [probability for _, probability in seen]
    assert probabilities == sorted(probabilities, reverse=True)
    assert len(set(probabilities)) == len(probabilities), "each growth lowers it"


@pytest.mark.slow
def test_enrolments_and_deletions_survive_kill_9(server_factory: ServerFactory) -> None:
    rng = np.random.default_rng(3)
    server = server_factory()
    client = server.client()
    client.put(f"{GALLERIES}/durable")
    voiceprints = {
        f"speaker-{index}": Voiceprint.from_embedding(rng.standard_normal(192), speech_length=9)
        for index in range(40)
    }
    for speaker, voiceprint in voiceprints.items():
        enrol(client, "durable", speaker, [voiceprint])
    extra = Voiceprint.from_embedding(rng.standard_normal(192), speech_length=3)
    added = client.post(
        f"{GALLERIES}/durable/speakers/speaker-1/voiceprints",
        json={"voiceprints": [extra.to_base64()]},
    )
    assert added.status_code == 200
    deleted = [f"speaker-{index}" for index in range(20, 40)]
    for speaker in deleted:
        assert client.delete(f"{GALLERIES}/durable/speakers/{speaker}").status_code == 204
    before = search(client, "durable", list(voiceprints.values()), top_k=3)
    server.kill()

    restarted = server_factory(data_dir=server.data_dir).client()
    info = restarted.get(f"{GALLERIES}/durable").json()
    assert info["speakers_count"] == 20
    assert info["voiceprints_count"] == 21
    assert restarted.get(f"{GALLERIES}/durable/speakers/speaker-1").json()["voiceprints_count"] == 2
    after = search(restarted, "durable", list(voiceprints.values()), top_k=3)
    assert after == before
    named = {match["speaker_id"] for matches in after for match in matches}
    assert named.isdisjoint(deleted), "a deleted speaker never comes back"
    for speaker in deleted:
        assert restarted.get(f"{GALLERIES}/durable/speakers/{speaker}").status_code == 404
