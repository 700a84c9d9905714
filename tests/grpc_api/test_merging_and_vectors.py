"""The core behind Merge and Convert: voxmatch.merging and voxmatch.vectors."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import random_batch
from tools import corpora
from voxmatch import Voiceprint, VoiceprintBatch, VoiceprintError, compare
from voxmatch.extraction import load_extractor
from voxmatch.merging import merge_voiceprints
from voxmatch.models import describe
from voxmatch.scoring import Traits, llr_from_cosines
from voxmatch.vectors import has_speech, vector_rows, vector_voiceprints


def unit(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector / np.linalg.norm(vector))


def test_merge_is_the_speech_weighted_mean_and_composes() -> None:
    batch = random_batch(6, seed=1)
    lengths = np.array([1, 2, 3, 4, 5, 6], np.float32)
    batch = VoiceprintBatch(batch.embeddings, lengths, batch.model)
    merged = merge_voiceprints(batch)
    expected = (lengths[:, None] * batch.embeddings).sum(axis=0) / lengths.sum()
    np.testing.assert_allclose(merged.embedding, expected, rtol=1e-6, atol=1e-6)
    assert merged.speech_length == 21
    # Merging step by step gives the merge of everything: a voiceprint can grow over time.
    step = merge_voiceprints([merge_voiceprints(list(batch)[:4]), *list(batch)[4:]])
    np.testing.assert_allclose(step.embedding, merged.embedding, rtol=1e-5, atol=1e-6)
    assert step.speech_length == merged.speech_length


def test_merge_edge_cases() -> None:
    empty = Voiceprint.from_embedding(np.zeros(192), speech_length=0)
    both_empty = merge_voiceprints([empty, empty])
    assert both_empty.speech_length == 0
    assert not both_empty.embedding.any()
    # Wrapped embeddings without speech lengths are weighed equally, not dropped.
    wrapped = [Voiceprint.from_embedding(row, speech_length=0) for row in np.eye(192)[:2]]
    np.testing.assert_allclose(merge_voiceprints(wrapped).embedding[:3], [0.5, 0.5, 0])
    with pytest.raises(ValueError, match="no voiceprints"):
        merge_voiceprints([])
    other = Voiceprint(np.ones(192, np.float32), 1.0, "another-model")
    with pytest.raises(VoiceprintError) as caught:
        merge_voiceprints([empty, other])
    assert caught.value.index == 1
    assert caught.value.reason == "mixed-models"


@pytest.mark.slow
def test_merge_of_real_speech_is_close_to_the_concatenated_extraction() -> None:
    extractor = load_extractor("campplus-zh-en-16k-advanced", cache_dir=corpora.models_cache_dir())
    speech: dict[str, list[np.ndarray]] = {}
    for segment in corpora.ami_segments(1.0):
        speech.setdefault(segment.speaker, []).append(corpora.load_segment(segment))
    talkers = [np.concatenate(parts) for parts in speech.values()]
    talkers = [audio for audio in talkers if len(audio) >= 12 * 16000][:4]
    assert len(talkers) == 4
    rng = np.random.default_rng(0)
    merged_scores, single_scores = [], []
    for audio in talkers:
        cuts = np.sort(rng.choice(np.arange(32000, len(audio) - 32000), size=2, replace=False))
        pieces = [extractor.extract(piece).voiceprint for piece in np.split(audio, cuts)]
        pieces = [piece for piece in pieces if piece.speech_length > 0]
        assert len(pieces) >= 2
        whole = unit(extractor.extract(audio).voiceprint.embedding)
        merged = merge_voiceprints(pieces)
        assert merged.speech_length == pytest.approx(
            sum(piece.speech_length for piece in pieces), rel=1e-5
        )
        merged_scores.append(unit(merged.embedding) @ whole)
        single_scores.append(max(unit(piece.embedding) @ whole for piece in pieces))
    assert np.mean(merged_scores) > 0.95
    assert np.mean(merged_scores) > np.mean(single_scores)


def test_vectors_are_unit_rows_whose_dot_products_give_the_scores() -> None:
    voiceprints = list(random_batch(50, seed=2))
    voiceprints[7] = Voiceprint.from_embedding(np.zeros(192), speech_length=0)
    vectors = vector_voiceprints(voiceprints)
    assert vectors.dtype == np.float32
    assert vectors.shape == (50, 192)
    speech = has_speech(vectors)
    assert speech.tolist() == [index != 7 for index in range(50)]
    np.testing.assert_allclose(np.linalg.norm(vectors[speech], axis=1), 1.0, atol=1e-6)
    batch = VoiceprintBatch.of(voiceprints)
    scores = compare(batch, batch)
    calibration = describe(batch.model).calibration
    traits = Traits.of(batch)
    rebuilt = llr_from_cosines(vectors @ vectors.T, calibration, traits, traits)
    np.testing.assert_allclose(rebuilt[speech][:, speech], scores[speech][:, speech], atol=2e-5)
    rows = vector_rows(vectors)
    assert len(rows) == 50
    assert rows[7].size == 0
    assert rows[8].size == 192
