from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest

import voxmatch
from voxmatch import Voiceprint, VoiceprintBatch, VoiceprintError
from voxmatch.models import DEFAULT_MODEL_NAME, Calibration, ModelDescription, register
from voxmatch.voiceprint import (
    MAGIC,
    NARROWBAND,
    WIDEBAND,
    decode_base64_batch,
    decode_bytes_batch,
    embedding_offset,
    record_size,
)

EMBEDDING = embedding_offset()


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
    voiceprint = Voiceprint.from_embedding(
        np.random.default_rng(2).standard_normal(192),
        speech_length=3.0,
        condition=NARROWBAND,
        bandwidth=3375.0,
        snr=17.5,
        cohort_mean=0.25,
        cohort_std=0.0625,
    )
    data = voiceprint.to_bytes()
    assert len(data) == record_size(192) == 837
    assert len(data) % 3 == 0, "records are a multiple of 3 bytes so base64 has no padding"
    assert "=" not in voiceprint.to_base64()
    magic, version, dim, speech, model = struct.unpack_from("<4sHHf32s", data)
    assert (magic, version, dim, speech) == (MAGIC, 2, 192, 3.0)
    assert model.rstrip(b"\0").decode() == DEFAULT_MODEL_NAME
    condition, reserved, bandwidth, snr, mean, std = struct.unpack_from("<B3sffff", data, 44)
    assert (condition, reserved) == (1, b"\0\0\0")
    assert (bandwidth, snr, mean, std) == (3375.0, 17.5, 0.25, 0.0625)
    embedding = np.frombuffer(data, dtype="<f4", count=192, offset=64)
    np.testing.assert_array_equal(embedding, voiceprint.embedding)
    assert data[64 + 4 * 192 : -4] == b"\0", "one byte of padding for 192 values"
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def version_1_record(embedding: np.ndarray, speech_length: float) -> bytes:
    """A version 1 voiceprint as a user's old file holds it, built from the documented layout
    (not by voxmatch's encoder)."""
    body = struct.pack("<4sHHf32s", b"VXVP", 1, 192, speech_length, DEFAULT_MODEL_NAME.encode())
    body += struct.pack("<192f", *embedding)
    assert len(body) + 4 == 816, "192 values need no padding"
    return body + struct.pack("<I", zlib.crc32(body))


def test_version_1_voiceprints_still_decode_as_wideband_of_unmeasured_bandwidth() -> None:
    vector = np.random.default_rng(5).standard_normal(192).astype(np.float32)
    old = Voiceprint.from_bytes(version_1_record(vector, 12.5))
    np.testing.assert_array_equal(old.embedding, vector)
    assert (old.speech_length, old.model) == (12.5, DEFAULT_MODEL_NAME)
    assert (old.condition, old.bandwidth, old.snr) == (WIDEBAND, 0.0, 0.0)
    assert (old.cohort_mean, old.cohort_std) == (0.0, 0.0)
    assert Voiceprint.from_base64(b64(version_1_record(vector, 12.5))).speech_length == 12.5
    # Written again, it becomes version 2 with the same content.
    rewritten = old.to_bytes()
    assert struct.unpack_from("<H", rewritten, 4)[0] == 2
    np.testing.assert_array_equal(Voiceprint.from_bytes(rewritten).embedding, vector)


def test_version_2_round_trip_keeps_every_field() -> None:
    original = Voiceprint.from_embedding(
        np.random.default_rng(8).standard_normal(192),
        speech_length=4.25,
        condition=NARROWBAND,
        bandwidth=3500.0,
        snr=-3.5,
        cohort_mean=0.125,
        cohort_std=0.5,
    )
    for decoded in (
        Voiceprint.from_base64(original.to_base64()),
        Voiceprint.from_bytes(original.to_bytes()),
    ):
        np.testing.assert_array_equal(decoded.embedding, original.embedding)
        assert (decoded.condition, decoded.bandwidth, decoded.snr) == (NARROWBAND, 3500.0, -3.5)
        assert (decoded.cohort_mean, decoded.cohort_std) == (0.125, 0.5)


def mixed_versions() -> tuple[list[bytes], list[Voiceprint]]:
    """Eight voiceprints, versions 1 and 2 interleaved irregularly, and what they hold."""
    rng = np.random.default_rng(11)
    records: list[bytes] = []
    expected: list[Voiceprint] = []
    for index, old in enumerate([True, False, False, True, True, False, True, False]):
        vector = rng.standard_normal(192).astype(np.float32)
        if old:
            records.append(version_1_record(vector, index + 1.0))
            expected.append(Voiceprint.from_embedding(vector, speech_length=index + 1.0))
        else:
            voiceprint = Voiceprint.from_embedding(
                vector,
                speech_length=index + 1.0,
                condition=NARROWBAND if index % 2 else WIDEBAND,
                bandwidth=1000.0 * index,
                snr=float(index),
            )
            records.append(voiceprint.to_bytes())
            expected.append(voiceprint)
    return records, expected


def test_versions_1_and_2_mix_in_one_request_in_input_order() -> None:
    records, expected = mixed_versions()
    for batch in (
        decode_bytes_batch(records),
        decode_base64_batch([b64(record) for record in records]),
    ):
        np.testing.assert_array_equal(batch.embeddings, np.stack([vp.embedding for vp in expected]))
        assert batch.speech_lengths.tolist() == [vp.speech_length for vp in expected]
        assert batch.conditions.tolist() == [vp.condition for vp in expected]
        assert batch.bandwidths.tolist() == [vp.bandwidth for vp in expected]
        assert batch.snrs.tolist() == [vp.snr for vp in expected]
        assert not batch.cohort_stds.any()


def test_version_1_voiceprints_compare_with_version_2_ones() -> None:
    records, expected = mixed_versions()
    old = decode_base64_batch([b64(records[0])])
    assert struct.unpack_from("<H", records[0], 4)[0] == 1
    rewritten = Voiceprint.from_bytes(old[0].to_bytes())
    others = [vp for vp in expected if vp.bandwidth > 0]
    scores = voxmatch.compare(old, others)
    # A version 1 voiceprint is wideband: it scores as the same embedding written as version 2.
    np.testing.assert_allclose(scores, voxmatch.compare([rewritten], others), rtol=0, atol=1e-6)
    assert scores.shape == (1, len(others))
    assert np.isfinite(scores).all()


def test_a_bad_item_of_a_mixed_request_is_named_by_its_index_in_the_request() -> None:
    records, _ = mixed_versions()
    damaged_v1 = bytearray(records[4])
    damaged_v1[100] ^= 0xFF
    damaged_v2 = bytearray(records[5])
    struct.pack_into("<f", damaged_v2, 48, float("nan"))
    cases = [
        ({4: bytes(damaged_v1)}, 4, "checksum"),
        ({5: resign(damaged_v2)}, 5, "bandwidth"),
        # An integrity problem anywhere is reported before a field problem.
        ({5: resign(damaged_v2), 6: bytes(damaged_v1)}, 6, "checksum"),
        # A version 1 header on a record of version 2's length, and the other way round.
        ({2: resign(bytearray(records[2][:4] + b"\1\0" + records[2][6:]))}, 2, "truncated"),
        ({3: resign(bytearray(records[3][:4] + b"\2\0" + records[3][6:]))}, 3, "truncated"),
    ]
    for replacements, index, reason in cases:
        items = [replacements.get(position, record) for position, record in enumerate(records)]
        with pytest.raises(VoiceprintError) as binary:
            decode_bytes_batch(items)
        assert (binary.value.index, binary.value.reason) == (index, reason), replacements
        with pytest.raises(VoiceprintError) as text:
            decode_base64_batch([b64(item) for item in items])
        assert (text.value.index, text.value.reason) == (index, reason), replacements


def with_condition_block(**changes: object) -> bytes:
    """A valid version 2 record with fields of its condition block overwritten, re-signed."""
    data = bytearray(make(4).to_bytes())
    offsets = {"condition": (44, "<B"), "reserved": (46, "<B"), "bandwidth": (48, "<f")}
    offsets |= {"snr": (52, "<f"), "cohort_mean": (56, "<f"), "cohort_std": (60, "<f")}
    for name, value in changes.items():
        offset, layout = offsets[name]
        struct.pack_into(layout, data, offset, value)
    return resign(data)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"condition": 2}, "condition"),
        ({"reserved": 1}, "reserved"),
        ({"bandwidth": float("nan")}, "bandwidth"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"snr": float("inf")}, "snr"),
        ({"cohort_mean": 0.3, "cohort_std": -0.1}, "cohort"),
        ({"cohort_mean": 0.3, "cohort_std": 0.0}, "cohort"),
        ({"cohort_mean": float("nan"), "cohort_std": 0.1}, "cohort"),
    ],
    ids=[
        "condition",
        "reserved",
        "bandwidth-nan",
        "bandwidth-negative",
        "snr-inf",
        "cohort-negative-std",
        "cohort-zero-std",
        "cohort-nan",
    ],
)
def test_bad_condition_fields_are_rejected(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(3, b64(with_condition_block(**changes))))
    assert (error.value.index, error.value.reason) == (3, reason)
    keywords = {name: value for name, value in changes.items() if name != "reserved"}
    if keywords:
        with pytest.raises(VoiceprintError) as single:
            Voiceprint.from_embedding(np.ones(192), speech_length=1.0, **keywords)  # type: ignore[arg-type]
        assert single.value.reason == reason


def test_condition_fields_at_their_limits_are_valid() -> None:
    data = with_condition_block(condition=1, bandwidth=0.0, snr=-80.0, cohort_mean=-0.2)
    decoded = Voiceprint.from_bytes(
        with_condition_block(condition=1, cohort_mean=-0.2, cohort_std=1e-3)
    )
    assert decoded.condition == NARROWBAND
    assert decoded.cohort_std == pytest.approx(1e-3)
    with pytest.raises(VoiceprintError) as error:
        Voiceprint.from_bytes(data)  # a mean without a deviation is not "not computed"
    assert error.value.reason == "cohort"
    with pytest.raises(VoiceprintError) as overflow:
        Voiceprint.from_embedding(np.ones(192), speech_length=1.0, bandwidth=1e39)
    assert overflow.value.reason == "bandwidth"


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
    struct.pack_into("<f", data, EMBEDDING + 4 * 10, float("inf"))
    with pytest.raises(VoiceprintError) as error:
        decode_base64_batch(corrupted_batch(2, b64(resign(data))))
    assert (error.value.index, error.value.reason) == (2, "non-finite")


@pytest.mark.parametrize("value", [1e20, -3e38, 10001.0], ids=["1e20", "-3e38", "just-over"])
def test_values_beyond_the_range_are_rejected(value: float) -> None:
    data = bytearray(make(3).to_bytes())
    struct.pack_into("<f", data, EMBEDDING + 4 * 10, value)
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
