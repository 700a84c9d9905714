from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest

from voxmatch import Voiceprint, VoiceprintBatch, VoiceprintError
from voxmatch.models import DEFAULT_MODEL_NAME, Calibration, ModelDescription, register
from voxmatch.voiceprint import (
    HEADER_SIZE,
    MAGIC,
    decode_base64_batch,
    decode_bytes_batch,
    record_size,
)


def make(seed: int, speech_length: float = 7.5) -> Voiceprint:
    vector = np.random.default_rng(seed).standard_normal(192)
    return Voiceprint.from_embedding(vector, speech_length=speech_length)


def resign(data: bytearray) -> bytes:
    """Recompute the CRC after deliberately changing a field, so other checks are reached."""
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def test_round_trip_keeps_embedding_speech_length_and_model() -> None:
    original = make(1, speech_length=23.41)
    decoded = Voiceprint.from_base64(original.to_base64())
    assert decoded.model == DEFAULT_MODEL_NAME
    assert decoded.speech_length == pytest.approx(23.41, abs=1e-5)
    np.testing.assert_array_equal(decoded.embedding, original.embedding)
    assert decoded.embedding.dtype == np.float32


def test_record_layout_is_the_documented_one() -> None:
    voiceprint = make(2, speech_length=3.0)
    data = voiceprint.to_bytes()
    assert len(data) == record_size(192) == 816
    assert len(data) % 3 == 0, "records are a multiple of 3 bytes so base64 has no padding"
    assert "=" not in voiceprint.to_base64()
    magic, version, dim, speech, model = struct.unpack_from("<4sHHf32s", data)
    assert (magic, version, dim, speech) == (MAGIC, 1, 192, 3.0)
    assert model.rstrip(b"\0").decode() == DEFAULT_MODEL_NAME
    embedding = np.frombuffer(data, dtype="<f4", count=192, offset=HEADER_SIZE)
    np.testing.assert_array_equal(embedding, voiceprint.embedding)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_from_embedding_checks_size_and_values() -> None:
    with pytest.raises(VoiceprintError, match="192-dimensional") as size_error:
        Voiceprint.from_embedding(np.ones(10), speech_length=1.0)
    assert size_error.value.reason == "dimension"
    bad = np.ones(192)
    bad[5] = np.nan
    with pytest.raises(VoiceprintError) as nan_error:
        Voiceprint.from_embedding(bad, speech_length=1.0)
    assert nan_error.value.reason == "non-finite"
    with pytest.raises(VoiceprintError) as speech_error:
        Voiceprint.from_embedding(np.ones(192), speech_length=-1)
    assert speech_error.value.reason == "speech-length"
    with pytest.raises(KeyError, match="unknown model"):
        Voiceprint.from_embedding(np.ones(192), speech_length=1.0, model="no-such-model")


def test_batch_decoding_gives_one_matrix_in_input_order() -> None:
    voiceprints = [make(seed) for seed in range(50)]
    batch = decode_base64_batch([vp.to_base64() for vp in voiceprints])
    assert batch.embeddings.shape == (50, 192)
    assert batch.embeddings.dtype == np.float32
    assert batch.embeddings.flags.c_contiguous
    for row, voiceprint in enumerate(voiceprints):
        np.testing.assert_array_equal(batch.embeddings[row], voiceprint.embedding)
    from_bytes = decode_bytes_batch([vp.to_bytes() for vp in voiceprints])
    np.testing.assert_array_equal(from_bytes.embeddings, batch.embeddings)


def test_batch_encoding_matches_single_encoding() -> None:
    voiceprints = [make(seed, speech_length=seed + 0.5) for seed in range(5)]
    batch = VoiceprintBatch.of(voiceprints)
    assert batch.to_base64_list() == [vp.to_base64() for vp in voiceprints]
    assert batch.to_bytes_list() == [vp.to_bytes() for vp in voiceprints]
    assert batch[3].speech_length == pytest.approx(3.5)


def corrupted_batch(bad_index: int, bad_item: str) -> list[str]:
    items = [make(seed).to_base64() for seed in range(6)]
    items[bad_index] = bad_item
    return items


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("bad_item_factory", "reason"),
    [
        (lambda good: good[:-8] + "!!!!!!!!", "base64"),
        (lambda good: good[:100], "truncated"),
        (lambda good: b64(b"UBJS" + base64.b64decode(good)[4:]), "magic"),
        (
            lambda good: b64(
                resign(
                    bytearray(struct.pack("<4sH", MAGIC, 9)) + bytearray(base64.b64decode(good)[6:])
                )
            ),
            "version",
        ),
        (lambda good: b64(base64.b64decode(good)[:-1] + b"\x00"), "checksum"),
        (lambda good: good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB"), "checksum"),
    ],
    ids=["bad-base64", "truncated", "magic", "version", "checksum-byte", "checksum-text"],
)
def test_a_bad_item_is_reported_with_its_index_and_reason(
    bad_item_factory: object, reason: str
) -> None:
    good = make(99).to_base64()
    assert callable(bad_item_factory)
    items = corrupted_batch(4, bad_item_factory(good))
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(items)
    assert error.value.index == 4
    assert error.value.reason == reason


def test_first_item_bad_is_index_zero() -> None:
    items = corrupted_batch(0, "not base64 at all ###")
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(items)
    assert (error.value.index, error.value.reason) == (0, "base64")


def test_non_finite_values_are_rejected() -> None:
    data = bytearray(make(3).to_bytes())
    struct.pack_into("<f", data, HEADER_SIZE + 4 * 10, float("inf"))
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(2, b64(resign(data))))
    assert (error.value.index, error.value.reason) == (2, "non-finite")


@pytest.mark.parametrize("value", [1e20, -3e38, 10001.0], ids=["1e20", "-3e38", "just-over"])
def test_values_beyond_the_range_are_rejected(value: float) -> None:
    data = bytearray(make(3).to_bytes())
    struct.pack_into("<f", data, HEADER_SIZE + 4 * 10, value)
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(2, b64(resign(data))))
    assert (error.value.index, error.value.reason) == (2, "range")
    vector = np.ones(192)
    vector[10] = value
    with pytest.raises(VoiceprintError) as single:
        Voiceprint.from_embedding(vector, speech_length=1)
    assert single.value.reason == "range"


def test_values_at_the_bound_and_zero_embeddings_are_valid() -> None:
    vector = np.full(192, -1e4)
    text = Voiceprint.from_embedding(vector, speech_length=1).to_base64()
    at_bound = Voiceprint.from_base64(text)
    assert at_bound.embedding.min() == -1e4
    empty = Voiceprint.from_embedding(np.zeros(192), speech_length=0)
    assert not Voiceprint.from_base64(empty.to_base64()).embedding.any()


def test_surrounding_whitespace_is_ignored() -> None:
    texts = [make(seed).to_base64() for seed in range(4)]
    padded = [texts[0] + "\n", " " + texts[1], texts[2], "\t" + texts[3] + "\r\n"]
    np.testing.assert_array_equal(
        decode_base64_batch(padded).embeddings, decode_base64_batch(texts).embeddings
    )
    assert Voiceprint.from_base64(" " + texts[0] + "\n").model == DEFAULT_MODEL_NAME


def test_whitespace_inside_is_bad_base64() -> None:
    good = make(1).to_base64()
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch([good, good[:100] + "\n" + good[100:]])
    assert (error.value.index, error.value.reason) == (1, "base64")


def test_negative_speech_length_is_rejected() -> None:
    data = bytearray(make(3).to_bytes())
    struct.pack_into("<f", data, 8, -2.0)
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(1, b64(resign(data))))
    assert (error.value.index, error.value.reason) == (1, "speech-length")


def test_unknown_model_is_rejected() -> None:
    data = bytearray(make(3).to_bytes())
    data[12:44] = b"someone-elses-model".ljust(32, b"\0")
    items = [b64(resign(bytearray(data)))] * 3
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(items)
    assert error.value.reason == "unknown-model"
    assert "someone-elses-model" in str(error.value)


def test_models_mixed_within_a_list_are_rejected() -> None:
    register(
        ModelDescription(
            name="test-other-192", embedding_dim=192, calibration=Calibration.linear(10.0, -5.0)
        )
    )
    other = Voiceprint.from_embedding(np.ones(192), speech_length=1.0, model="test-other-192")
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(3, other.to_base64()))
    assert (error.value.index, error.value.reason) == (3, "mixed-models")
    # The other list of a comparison must match the first list's model too.
    with pytest.raises(VoiceprintError) as across:
        decode_base64_batch([other.to_base64()], model=DEFAULT_MODEL_NAME)
    assert across.value.reason == "mixed-models"


def test_models_with_different_sizes_mixed_are_rejected() -> None:
    register(
        ModelDescription(
            name="test-small-64", embedding_dim=64, calibration=Calibration.linear(10, -5)
        )
    )
    small = Voiceprint.from_embedding(np.ones(64), speech_length=1.0, model="test-small-64")
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(5, small.to_base64()))
    assert (error.value.index, error.value.reason) == (5, "mixed-models")


def test_non_string_item_is_a_type_error() -> None:
    items: list[object] = [make(1).to_base64(), 42]
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(items)  # type: ignore[arg-type]
    assert error.value.index == 1


def test_zero_speech_voiceprint_round_trips() -> None:
    empty = Voiceprint.from_embedding(np.zeros(192), speech_length=0.0)
    decoded = Voiceprint.from_base64(empty.to_base64())
    assert decoded.speech_length == 0.0
    assert not decoded.embedding.any()


def test_speech_length_must_fit_the_record() -> None:
    with pytest.raises(VoiceprintError) as error:
        Voiceprint.from_embedding(np.ones(192), speech_length=1e39)  # float32 overflows
    assert error.value.reason == "speech-length"
