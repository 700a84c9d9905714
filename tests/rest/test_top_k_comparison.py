"""`top_k` in a comparison body (a voxmatch addition to SPE4): for each voiceprint of b, the k
best of a, from a real server, checked against the full matrix the same server computes for
the same request."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from _helpers import (
    COMPARISON,
    SCORE_TOLERANCE,
    RunningServer,
    ServerFactory,
    assert_scores_close,
    comparison_request,
    finished_comparison,
    hold_the_worker,
    model_env,
    restart_after_kill,
    start_server,
    wait_for_task,
)
from voxmatch import Voiceprint, compare
from voxmatch.calibration_profiles import CalibrationProfile, Provenance, save_profile
from voxmatch.models import CAMPPLUS
from voxmatch.models.registry import Calibration, PairCalibration
from voxmatch.request_checks import MAX_TOP_K
from voxmatch.rest.results import PIECE_VALUES
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

NPY = "application/x-npy"
SPEECH_LENGTHS = (0.7, 2.0, 4.0, 12.0, 40.0)
"""Short and long speech, so that the speech terms of the shipped calibration count."""


def voiceprints(embeddings: npt.NDArray[np.float32], seed: int) -> list[Voiceprint]:
    """Voiceprints of `embeddings` with mixed conditions and speech lengths."""
    rng = np.random.default_rng(seed)
    return [
        Voiceprint.from_embedding(
            vector,
            speech_length=float(rng.choice(SPEECH_LENGTHS)),
            condition=int(rng.choice([WIDEBAND, NARROWBAND])),
        )
        for vector in embeddings
    ]


def related_lists(
    count_a: int, count_b: int, seed: int
) -> tuple[list[Voiceprint], list[Voiceprint]]:
    """a, and b of noisy copies of some of a (so that every row has clear best matches)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((count_a, 192)).astype(np.float32)
    sources = rng.integers(0, count_a, count_b)
    b = (a[sources] + 1.5 * rng.standard_normal((count_b, 192))).astype(np.float32)
    return voiceprints(a, seed + 1), voiceprints(b, seed + 2)


def full_matrix(client: httpx.Client, a: list[Voiceprint], b: list[Voiceprint]) -> np.ndarray:
    """The server's matrix for a and b, rows following b."""
    _, result = finished_comparison(client, comparison_request(a, b))
    scores = result["scores"]
    return np.array(scores["values"], np.float32).reshape(scores["rows_count"], -1)


def best_matches(result: dict[str, Any], rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = result["top_k"]
    assert set(top) == {"rows_count", "k", "indices", "scores"}
    assert (top["rows_count"], top["k"]) == (rows, k)
    indices = np.array(top["indices"])
    scores = np.array(top["scores"], np.float32)
    assert indices.shape == scores.shape == (rows * k,)
    return indices.reshape(rows, k), scores.reshape(rows, k)


def assert_ranking_of(indices: np.ndarray, scores: np.ndarray, matrix: np.ndarray) -> int:
    """`indices` and `scores` are, row by row, the best of `matrix` (rows x len(a)), best
    first; equal scores (within SCORE_TOLERANCE) may come in either order. Returns how many
    places were checked against the exact argsort (those with no near-equal neighbour)."""
    rows, k = indices.shape
    exact_places = 0
    for row in range(rows):
        full = matrix[row].astype(np.float64)
        assert len(set(indices[row].tolist())) == k, "a voiceprint of a ranked twice"
        assert ((indices[row] >= 0) & (indices[row] < len(full))).all()
        assert (np.diff(scores[row]) <= 0).all(), "best first"
        assert_scores_close(scores[row], full[indices[row]])
        order = np.argsort(-full, kind="stable")
        assert_scores_close(scores[row], full[order[:k]])
        for place in range(k):
            others = np.delete(full, order[place])
            if np.abs(others - full[order[place]]).min() > 2 * SCORE_TOLERANCE:
                assert indices[row, place] == order[place], (row, place)
                exact_places += 1
    return exact_places


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one calibration profile, `steep`, unlike the shipped calibration."""
    folder = tmp_path_factory.mktemp("profiles")
    calibration = Calibration(
        wideband=PairCalibration(scale=40.0, offset=-3.0, offset_per_log_speech=0.8),
        narrowband=PairCalibration(scale=20.0, offset=-6.0),
        speech_cap=20.0,
    )
    provenance = Provenance(
        created_at=datetime.now(UTC).isoformat(),
        speakers=0,
        recordings=0,
        target_trials=0,
        nontarget_trials=0,
        fitted_pairs=["wideband", "narrowband"],
        evaluation={},
    )
    save_profile(CalibrationProfile("steep", CAMPPLUS.name, calibration, provenance), folder)
    return folder


@pytest.fixture(scope="module")
def limited_server(
    tmp_path_factory: pytest.TempPathFactory, profiles_dir: Path
) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("top-k") / "data",
        {
            "VOXMATCH_MAX_MATRIX_SIZE": "1000",
            "VOXMATCH_MAX_TOP_K_SCORES": "18000",
            "VOXMATCH_MAX_LIST_LENGTH": "600",
            "VOXMATCH_CALIBRATION_PROFILES_DIR": str(profiles_dir),
        },
    )
    yield running
    running.stop()


def test_top_k_is_the_ranking_of_the_full_matrix(server: RunningServer) -> None:
    client = server.client()
    a, b = related_lists(300, 40, seed=5)
    # Two voiceprints of a twice: their scores tie, and either order is right.
    a[7], a[250] = a[3], a[120]
    b[0] = Voiceprint.from_embedding(
        a[3].embedding, speech_length=a[3].speech_length, condition=a[3].condition
    )
    k = 7
    location, result = finished_comparison(client, comparison_request(a, b, top_k=k))
    indices, scores = best_matches(result, len(b), k)
    matrix = full_matrix(client, a, b)
    exact_places = assert_ranking_of(indices, scores, matrix)
    assert exact_places >= len(b) * k // 2, "too few places clear of ties to test the order"
    assert set(indices[0, :2].tolist()) == {3, 7}

    # The .npy form is the same matches, as one structured array.
    as_npy = client.get(location, headers={"accept": NPY})
    assert as_npy.status_code == 200
    assert as_npy.headers["content-type"] == NPY
    best = np.load(io.BytesIO(as_npy.content), allow_pickle=False)
    assert best.shape == (len(b), k)
    assert best.dtype.names == ("index", "score")
    assert best["index"].dtype == np.int32
    assert best["score"].dtype == np.float32
    np.testing.assert_array_equal(best["index"], indices)
    np.testing.assert_array_equal(best["score"], scores)


def test_k_beyond_len_a_ranks_every_voiceprint_of_a(server: RunningServer) -> None:
    client = server.client()
    a, b = related_lists(5, 3, seed=11)
    _, result = finished_comparison(client, comparison_request(a, b, top_k=MAX_TOP_K))
    indices, scores = best_matches(result, len(b), len(a))
    for row in indices:
        assert sorted(row.tolist()) == list(range(len(a)))
    assert_ranking_of(indices, scores, full_matrix(client, a, b))


def test_a_large_top_k_result_is_the_same_as_json_and_as_npy(server: RunningServer) -> None:
    # 1100 x 1000 matches: each JSON list is rendered in several pieces.
    client = server.client()
    a, b = related_lists(1000, 1100, seed=13)
    assert len(b) * len(a) > PIECE_VALUES
    location, result = finished_comparison(client, comparison_request(a, b, top_k=MAX_TOP_K))
    indices, scores = best_matches(result, len(b), len(a))
    best = np.load(io.BytesIO(client.get(location, headers={"accept": NPY}).content))
    np.testing.assert_array_equal(best["index"], indices)
    np.testing.assert_array_equal(best["score"], scores)
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.tile(np.arange(len(a)), (len(b), 1)))
    assert (np.diff(scores, axis=1) <= 0).all()
    assert_scores_close(scores, np.take_along_axis(compare(a, b).T, indices, 1))


def test_a_profile_scores_top_k_as_it_scores_the_matrix(limited_server: RunningServer) -> None:
    client = limited_server.client()
    a, b = related_lists(30, 30, seed=17)
    _, shipped = finished_comparison(client, comparison_request(a, b, top_k=4))
    _, result = finished_comparison(client, comparison_request(a, b, top_k=4, calibration="steep"))
    indices, scores = best_matches(result, len(b), 4)
    _, profiled = finished_comparison(client, comparison_request(a, b, calibration="steep"))
    matrix = np.array(profiled["scores"]["values"], np.float32).reshape(len(b), len(a))
    assert_ranking_of(indices, scores, matrix)
    # The profile changed the scores: the test above could fail with the shipped calibration.
    shipped_scores = np.array(shipped["top_k"]["scores"], np.float32).reshape(len(b), 4)
    assert np.abs(shipped_scores - scores).max() > 1.0


def test_top_k_lifts_the_matrix_limit_to_max_top_k_scores(
    limited_server: RunningServer,
) -> None:
    client = limited_server.client()
    a, b = related_lists(600, 30, seed=23)  # 18,000 scores: max_top_k_scores, 18 x max_matrix
    refused = client.post(COMPARISON, json=comparison_request(a, b))
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["type"] == "matrix_too_large"

    _, result = finished_comparison(client, comparison_request(a, b, top_k=3))
    indices, scores = best_matches(result, len(b), 3)
    assert_ranking_of(indices, scores, compare(a, b).T)

    beyond = client.post(COMPARISON, json=comparison_request(a, [*b, b[0]], top_k=3))
    assert beyond.status_code == 422
    detail = beyond.json()["detail"]
    assert detail[0]["location"] == ["body"]
    assert detail[0]["type"] == "matrix_too_large"
    assert "max_top_k_scores" in detail[0]["message"]
    assert detail[0]["context"] == {"limit": 18000}

    # The list lengths are still bounded by max_list_length.
    too_long = client.post(COMPARISON, json=comparison_request([*a, a[0]], b[:1], top_k=3))
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["location"] == ["body", "voiceprints_a"]
    assert too_long.json()["detail"][0]["type"] == "too_long"


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (0, "range"),
        (-3, "range"),
        (MAX_TOP_K + 1, "range"),
        (10**30, "range"),
        (2.5, "type_error"),
        (2.0, "type_error"),
        ("3", "type_error"),
        (True, "type_error"),
        ([3], "type_error"),
    ],
)
def test_a_bad_top_k_is_a_422_at_the_field(
    server: RunningServer, value: object, error_type: str
) -> None:
    a, b = related_lists(3, 2, seed=29)
    response = server.client().post(COMPARISON, json=comparison_request(a, b, top_k=value))
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["type"] == "request.validation-error"
    assert len(error["detail"]) == 1
    detail = error["detail"][0]
    assert detail["location"] == ["body", "top_k"]
    assert detail["type"] == error_type
    if error_type == "range":
        assert detail["context"] == {"minimum": 1, "maximum": MAX_TOP_K}
        assert f"1 to {MAX_TOP_K}" in detail["message"]


def test_top_k_null_is_the_matrix(server: RunningServer) -> None:
    a, b = related_lists(4, 3, seed=31)
    _, result = finished_comparison(server.client(), comparison_request(a, b, top_k=None))
    assert result["scores"]["rows_count"] == 3
    assert result["scores"]["columns_count"] == 4


@pytest.mark.slow
def test_an_accepted_top_k_task_survives_kill_9(server_factory: ServerFactory) -> None:
    env = {**model_env(), "VOXMATCH_WORKERS": "1"}
    server = server_factory(env)
    client = server.client()
    holding = hold_the_worker(client)
    a, b = related_lists(200, 20, seed=37)
    accepted = client.post(COMPARISON, json=comparison_request(a, b, top_k=5))
    assert accepted.status_code == 202, accepted.text
    # The only worker was on the holding task all along: the comparison had not started.
    client = restart_after_kill(server, server_factory, env, holding)
    done = wait_for_task(client, accepted.headers["location"], timeout=120).json()
    assert done["task"]["state"] == "done", done
    indices, scores = best_matches(done["result"], len(b), 5)
    assert_ranking_of(indices, scores, compare(a, b).T)
