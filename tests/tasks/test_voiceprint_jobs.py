"""The merging task kind on a real store: the inputs' conditions, stored or not."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from voxmatch import Voiceprint
from voxmatch.models.registry import DEFAULT_MODEL_NAME
from voxmatch.tasks import TaskContext, TaskStore
from voxmatch.tasks.voiceprint_jobs import MERGING, merge
from voxmatch.voiceprint import NARROWBAND, WIDEBAND


def merged(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Voiceprint:
    store = TaskStore(tmp_path)
    record = store.create(MERGING, {"model": DEFAULT_MODEL_NAME}, task_id="task", arrays=arrays)
    outcome = merge(TaskContext(record, store, None, threading.Event()))
    store.close()
    voiceprint = Voiceprint.from_base64(outcome.result["voiceprint"])
    assert outcome.result["condition"] == voiceprint.condition
    assert outcome.result["bandwidth"] == voiceprint.bandwidth
    return voiceprint


def test_the_inputs_conditions_decide_the_merged_one(tmp_path: Path) -> None:
    embeddings = np.random.default_rng(1).standard_normal((3, 192)).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "embeddings": embeddings,
        "speech_lengths": np.array([5.0, 3.0, 2.0], dtype=np.float32),
        "conditions": np.array([WIDEBAND, NARROWBAND, WIDEBAND], dtype=np.uint8),
        "bandwidths": np.array([7000.0, 3800.0, 6900.0], dtype=np.float32),
        "snrs": np.array([30.0, 10.0, 20.0], dtype=np.float32),
    }
    voiceprint = merged(tmp_path, arrays)
    assert (voiceprint.condition, voiceprint.bandwidth) == (NARROWBAND, 3800.0)
    assert voiceprint.snr == np.float32((5 * 30.0 + 3 * 10.0 + 2 * 20.0) / 10)


def test_a_task_stored_without_conditions_merges_as_version_1_inputs(tmp_path: Path) -> None:
    """Accepted by a version that stored no conditions, then recovered by this one."""
    embeddings = np.random.default_rng(2).standard_normal((2, 192)).astype(np.float32)
    arrays = {"embeddings": embeddings, "speech_lengths": np.array([4.0, 6.0], np.float32)}
    voiceprint = merged(tmp_path, arrays)
    assert (voiceprint.condition, voiceprint.bandwidth, voiceprint.snr) == (WIDEBAND, 0.0, 0.0)
    expected = (4.0 * embeddings[0] + 6.0 * embeddings[1]) / 10.0
    np.testing.assert_allclose(voiceprint.embedding, expected, rtol=1e-6, atol=1e-6)
