"""The public Python API: its surface is what docs/python-api.md documents, and it does on real
speech what the server does."""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

import voxmatch
from _helpers import speech_clip
from voxmatch.merging import merge_voiceprints
from voxmatch.models import describe
from voxmatch.scoring import Traits, llr_from_cosines

REPO = Path(__file__).resolve().parents[1]
API_PAGE = (REPO / "docs" / "python-api.md").read_text()
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Embeddings of the same samples reached along different paths (a path, bytes, an array; one
# channel of a stereo file or a mono file) agree to float32 rounding of the network: about 1e-6
# relative; 1e-5 leaves room and still fails on any real difference.
EMBEDDING_TOLERANCE = 1e-5
RATE = 16000


def documented_names() -> list[str]:
    section = API_PAGE.split("## The public names", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^### `(\w+)`$", section, flags=re.MULTILINE)


def building_blocks() -> set[str]:
    section = API_PAGE.split("## Building blocks", 1)[1]
    return set(re.findall(r"^\| `voxmatch\.(\w+)` \|", section, flags=re.MULTILINE))


def test_the_namespace_is_exactly_the_documented_surface() -> None:
    assert sorted(voxmatch.__all__) == sorted(documented_names())
    assert len(set(voxmatch.__all__)) == len(voxmatch.__all__)
    for name in voxmatch.__all__:
        assert getattr(voxmatch, name) is not None
    # Nothing else public lives in the namespace: only submodules, which Python puts there.
    leaked = {
        name
        for name, value in vars(voxmatch).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert leaked <= set(voxmatch.__all__), leaked - set(voxmatch.__all__)
    assert set(voxmatch.__all__) <= set(dir(voxmatch))
    with pytest.raises(AttributeError):
        _ = voxmatch.describe  # type: ignore[attr-defined]


def test_the_building_blocks_are_modules_of_the_package() -> None:
    import importlib

    assert building_blocks()
    for module in building_blocks():
        assert importlib.import_module(f"voxmatch.{module}").__doc__


def code_blocks(document: Path) -> list[str]:
    return re.findall(r"```\w*\n(.*?)```", document.read_text(), flags=re.DOTALL)


def test_the_docs_import_only_public_names_and_building_blocks() -> None:
    public, blocks = set(voxmatch.__all__), building_blocks()
    seen_imports = 0
    for document in DOCUMENTS:
        for block in code_blocks(document):
            for names in re.findall(r"^\s*from voxmatch import (.+)$", block, flags=re.MULTILINE):
                seen_imports += 1
                for name in (part.strip() for part in names.split(",")):
                    assert name in public, f"{document.name}: from voxmatch import {name}"
            for module in re.findall(
                r"^\s*(?:from|import) voxmatch\.(\w+)", block, flags=re.MULTILINE
            ):
                seen_imports += 1
                assert module in blocks, f"{document.name}: imports voxmatch.{module}"
            if re.search(r"^\s*import voxmatch$", block, flags=re.MULTILINE):
                seen_imports += 1
                for name in re.findall(r"\bvoxmatch\.(\w+)", block):
                    assert name in public | blocks, f"{document.name}: uses voxmatch.{name}"
    assert seen_imports > 5, "the patterns above find the docs' imports"


# --- extraction on real speech --------------------------------------------------------------


@functools.cache
def alice() -> NDArray[np.float32]:
    return speech_clip("FEE083", "trn06")


@functools.cache
def bob() -> NDArray[np.float32]:
    return speech_clip("MÉO069", "trn03")


def stereo() -> NDArray[np.float32]:
    """Alice on channel 0, Bob on channel 1: frames x channels, as soundfile has it."""
    length = min(alice().shape[0], bob().shape[0])
    return np.stack([alice()[:length], bob()[:length]], axis=1)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recordings")
    # float32 files: decoding gives back exactly the samples written, whichever path reads them.
    sf.write(folder / "alice.wav", alice(), RATE, subtype="FLOAT")
    sf.write(folder / "call.wav", stereo(), RATE, subtype="FLOAT")
    return folder


def assert_same_voiceprint(found: voxmatch.Voiceprint, expected: voxmatch.Voiceprint) -> None:
    assert found.model == expected.model
    assert found.speech_length == pytest.approx(expected.speech_length, abs=1e-6)
    np.testing.assert_allclose(
        found.embedding,
        expected.embedding,
        rtol=EMBEDDING_TOLERANCE,
        atol=EMBEDDING_TOLERANCE * float(np.abs(expected.embedding).max()),
    )


@pytest.mark.slow
def test_extract_from_a_path_bytes_and_an_array_gives_one_voiceprint(recordings: Path) -> None:
    (from_path,) = voxmatch.extract(recordings / "alice.wav")
    assert from_path.model == "campplus-zh-en-16k-advanced"
    assert from_path.embedding.shape == (192,)
    assert 3 < from_path.speech_length <= alice().shape[0] / RATE
    (from_text_path,) = voxmatch.extract(str(recordings / "alice.wav"))
    (from_bytes,) = voxmatch.extract((recordings / "alice.wav").read_bytes())
    (from_array,) = voxmatch.extract(alice(), sample_rate=RATE)
    (from_column,) = voxmatch.extract(alice()[:, np.newaxis], sample_rate=RATE)
    for other in (from_text_path, from_bytes, from_array, from_column):
        assert_same_voiceprint(other, from_path)


@pytest.mark.slow
def test_extract_splits_or_mixes_the_channels_and_picks_them(recordings: Path) -> None:
    call = recordings / "call.wav"
    split = voxmatch.extract(call)
    assert len(split) == 2
    length = stereo().shape[0]
    # Each channel is the voiceprint of its speaker's samples alone.
    assert_same_voiceprint(split[0], voxmatch.extract(alice()[:length], sample_rate=RATE)[0])
    assert_same_voiceprint(split[1], voxmatch.extract(bob()[:length], sample_rate=RATE)[0])
    scores = voxmatch.compare(split, voxmatch.extract(recordings / "alice.wav"))
    assert scores[0, 0] > 0 > scores[1, 0], "channel 0 is Alice, channel 1 is not"

    (only_bob,) = voxmatch.extract(call, channels=[1])
    assert_same_voiceprint(only_bob, split[1])
    reordered = voxmatch.extract(stereo(), sample_rate=RATE, channels=[1, 0])
    assert_same_voiceprint(reordered[0], split[1])
    assert_same_voiceprint(reordered[1], split[0])

    (mixed,) = voxmatch.extract(call, channel_mode="mix")
    average = stereo().mean(axis=1, dtype=np.float32)
    assert_same_voiceprint(mixed, voxmatch.extract(average, sample_rate=RATE)[0])
    assert not np.allclose(mixed.embedding, split[0].embedding, rtol=0.01)


@pytest.mark.slow
def test_extract_honours_the_speech_cap_and_the_time_range(recordings: Path) -> None:
    path = recordings / "alice.wav"
    (whole,) = voxmatch.extract(path)
    (capped,) = voxmatch.extract(path, max_speech=2.0)
    assert 1.9 <= capped.speech_length <= 2.0 + 1e-6 < whole.speech_length
    assert not np.allclose(capped.embedding, whole.embedding, rtol=0.01)

    (cut,) = voxmatch.extract(path, start=1.0, end=5.5)
    # The range of the file is exactly those samples: 16 kHz needs no resampling.
    (expected,) = voxmatch.extract(alice()[RATE : int(5.5 * RATE)], sample_rate=RATE)
    assert_same_voiceprint(cut, expected)
    assert cut.speech_length < whole.speech_length
    (from_array,) = voxmatch.extract(alice(), sample_rate=RATE, start=1.0, end=5.5)
    assert_same_voiceprint(from_array, expected)


@pytest.mark.slow
def test_an_array_at_another_rate_is_resampled_like_a_file(tmp_path: Path) -> None:
    samples = alice()[::2].copy()  # 8 kHz
    sf.write(tmp_path / "narrow.wav", samples, 8000, subtype="FLOAT")
    (from_file,) = voxmatch.extract(tmp_path / "narrow.wav")
    (from_array,) = voxmatch.extract(samples, sample_rate=8000)
    assert_same_voiceprint(from_array, from_file)
    assert from_file.speech_length > 3


@pytest.mark.slow
def test_silence_gives_the_empty_voiceprint_and_an_empty_vector() -> None:
    (empty,) = voxmatch.extract(np.zeros(3 * RATE, dtype=np.float32), sample_rate=RATE)
    assert empty.speech_length == 0
    assert not empty.embedding.any()
    assert voxmatch.to_vector(empty).shape == (0,)
    assert voxmatch.compare([empty], [empty])[0, 0] == 0.0


@pytest.mark.slow
def test_extract_stops_when_asked(recordings: Path) -> None:
    asked: list[int] = []

    def stop_at_once() -> bool:
        asked.append(1)
        return True

    with pytest.raises(voxmatch.Stopped):
        voxmatch.extract(recordings / "call.wav", should_stop=stop_at_once)
    assert len(asked) == 1, "the first check stopped the work"


@pytest.mark.slow
def test_extract_refuses_what_it_cannot_use(recordings: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: voxmatch.extract(tmp_path / "missing.wav"), "cannot read"),
        (lambda: voxmatch.extract(tmp_path / "notes.txt"), "not a readable audio file"),
        (lambda: voxmatch.extract(b""), "empty"),
        (lambda: voxmatch.extract(recordings / "call.wav", channels=[2]), "channel 2"),
        (lambda: voxmatch.extract(recordings / "call.wav", channel_mode="both"), "channel_mode"),
        (lambda: voxmatch.extract(recordings / "alice.wav", start=60.0), "start"),
        (lambda: voxmatch.extract(recordings / "alice.wav", start=3.0, end=2.0), "after"),
        (lambda: voxmatch.extract(np.zeros(RATE, dtype=np.int16), sample_rate=RATE), "floats"),
        (lambda: voxmatch.extract(stereo().T.copy(), sample_rate=RATE), "transpose"),
        (lambda: voxmatch.extract(np.zeros((2, 2, 2)), sample_rate=RATE), "two (frames"),
        (lambda: voxmatch.extract(np.full(RATE, np.nan), sample_rate=RATE), "NaN"),
        (lambda: voxmatch.extract(alice(), sample_rate=0), "sample_rate"),
    ]
    for call, words in cases:
        with pytest.raises(voxmatch.AudioError) as caught:
            call()
        assert words in str(caught.value)
    with pytest.raises(TypeError, match="sample_rate"):
        voxmatch.extract(alice())
    with pytest.raises(TypeError, match="sample_rate"):
        voxmatch.extract(recordings / "alice.wav", sample_rate=RATE)
    with pytest.raises(ValueError, match="positive"):
        voxmatch.extract(recordings / "alice.wav", max_speech=0)


# --- merging, vectors, batches --------------------------------------------------------------


def random_voiceprints(count: int, seed: int) -> list[voxmatch.Voiceprint]:
    rng = np.random.default_rng(seed)
    return [
        voxmatch.Voiceprint.from_embedding(rng.standard_normal(192), speech_length=length)
        for length in rng.uniform(1, 30, count)
    ]


def test_merge_is_the_speech_weighted_mean() -> None:
    voiceprints = random_voiceprints(4, seed=1)
    merged = voxmatch.merge(voiceprints)
    lengths = np.array([vp.speech_length for vp in voiceprints], dtype=np.float32)
    expected = (lengths[:, None] * np.stack([vp.embedding for vp in voiceprints])).sum(0)
    np.testing.assert_allclose(merged.embedding, expected / lengths.sum(), rtol=1e-5, atol=1e-6)
    assert merged.speech_length == pytest.approx(float(lengths.sum()), rel=1e-6)
    # The very merge of the REST and gRPC APIs, and it takes a batch as well.
    assert merged.to_bytes() == merge_voiceprints(voiceprints).to_bytes()
    batch = voxmatch.VoiceprintBatch.of(voiceprints)
    assert voxmatch.merge(batch).to_bytes() == merged.to_bytes()
    with pytest.raises(ValueError, match="no voiceprints"):
        voxmatch.merge([])


def test_to_vector_gives_unit_vectors_whose_dot_product_is_the_llr() -> None:
    voiceprints = random_voiceprints(5, seed=2)
    vectors = np.stack([voxmatch.to_vector(vp) for vp in voiceprints])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    calibration = describe(voiceprints[0].model).calibration
    traits = Traits.of(voxmatch.VoiceprintBatch.of(voiceprints))
    # The comparison's score, up to float32 rounding along the two paths.
    np.testing.assert_allclose(
        llr_from_cosines(vectors @ vectors.T, calibration, traits, traits),
        voxmatch.compare(voiceprints, voiceprints),
        atol=1e-4,
    )


def test_a_batch_iterates_over_its_voiceprints() -> None:
    voiceprints = random_voiceprints(3, seed=3)
    batch = voxmatch.VoiceprintBatch.of(voiceprints)
    assert len(batch) == 3
    items = list(batch)
    assert [item.to_bytes() for item in items] == [vp.to_bytes() for vp in voiceprints]
    assert all(isinstance(item, voxmatch.Voiceprint) for item in items)
    # Each item is a copy: the batch's matrix is not reachable through it.
    assert not items[0].embedding.flags.writeable
    assert [vp.speech_length for vp in batch] == pytest.approx(
        [vp.speech_length for vp in voiceprints], rel=1e-6
    )


def test_compare_stops_when_asked() -> None:
    voiceprints = random_voiceprints(2, seed=4)
    with pytest.raises(voxmatch.Stopped):
        voxmatch.compare(voiceprints, voiceprints, should_stop=lambda: True)
