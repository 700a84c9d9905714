"""voxmatch.cohort: top-N statistics against a cohort, checked against a plain computation."""

from __future__ import annotations

import numpy as np
import pytest

from voxmatch.cohort import Cohort, cohort_statistics


def test_statistics_are_the_mean_and_spread_of_the_top_cosines() -> None:
    rng = np.random.default_rng(4)
    embeddings = rng.standard_normal((5, 16)) * 3
    cohort = Cohort.of(rng.standard_normal((40, 16)), top_n=7)
    means, stds = cohort.statistics(embeddings)
    for row, vector in enumerate(embeddings):
        cosines = sorted(
            float(vector @ member / np.linalg.norm(vector)) for member in cohort.unit_embeddings
        )
        top = np.array(cosines[-7:])
        # float32 unit rows and float32 results: agreement to float32 rounding.
        assert means[row] == pytest.approx(top.mean(), abs=1e-6)
        assert stds[row] == pytest.approx(top.std(), abs=1e-6)
    assert np.linalg.norm(cohort.unit_embeddings, axis=1) == pytest.approx(1.0, abs=1e-6)


def test_the_empty_voiceprint_gets_no_statistics() -> None:
    cohort = Cohort.of(np.random.default_rng(5).standard_normal((10, 8)), top_n=3)
    means, stds = cohort.statistics(np.zeros((2, 8)))
    assert means.tolist() == [0.0, 0.0]
    assert stds.tolist() == [0.0, 0.0]
    # Equal top cosines have no spread to normalise by: not computed either.
    same = np.tile(np.eye(8)[:1], (3, 1))
    same_means, same_stds = cohort_statistics(np.eye(8)[:1], same, 2)
    assert (same_means.tolist(), same_stds.tolist()) == ([0.0], [0.0])


def test_top_n_and_sizes_are_checked() -> None:
    members = np.random.default_rng(6).standard_normal((4, 8))
    with pytest.raises(ValueError, match="top_n"):
        Cohort.of(members, top_n=1)
    with pytest.raises(ValueError, match="top_n"):
        Cohort.of(members, top_n=5)
    with pytest.raises(ValueError, match="top_n"):
        Cohort.of(np.vstack((members, np.zeros((3, 8)))), top_n=5)  # empty rows are left out
    with pytest.raises(ValueError, match="values"):
        cohort_statistics(np.ones((1, 9)), members, 2)
