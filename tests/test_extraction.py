"""voxmatch.extraction on real speech: streamed extraction, speech in pieces, stop and progress."""

from __future__ import annotations

import functools
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from _audio_fixtures import SAMPLE_RATE
from _helpers import speech_clip
from tools import corpora, telephone
from voxmatch.audio import TimeRange, decode
from voxmatch.cohort import Cohort, cohort_statistics
from voxmatch.extraction import Extractor, bounded_segments, load_extractor
from voxmatch.models import DEFAULT_MODEL_NAME
from voxmatch.stopping import Stopped
from voxmatch.voiceprint import NARROWBAND, WIDEBAND, Voiceprint

# Embeddings of the same samples along different paths (another feeding of the detector,
# blocks decoded apart, pieces embedded one by one) agree to float32 rounding of the network:
# about 1e-6 relative; 1e-5 leaves room and still fails on any real difference.
EMBEDDING_TOLERANCE = 1e-5


@functools.cache
def extractor() -> Extractor:
    return load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir())


def wav_bytes(samples: NDArray[np.float32]) -> bytes:
    """16-bit WAV of mono samples or of channels x samples."""
    buffer = io.BytesIO()
    sf.write(buffer, np.atleast_2d(samples).T, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def meeting(*uris: str) -> NDArray[np.float32]:
    """The AMI excerpts back to back (30 s each), read through a 16-bit WAV like a user's file."""
    joined = np.concatenate([corpora.load(corpora.ami_path(uri)) for uri in uris])
    first_channel: NDArray[np.float32] = decode(wav_bytes(joined)).samples[0]
    return first_channel


def unit(vector: NDArray[np.floating]) -> NDArray[np.float64]:
    as_float = np.asarray(vector, dtype=np.float64)
    return as_float / np.linalg.norm(as_float)


def test_speech_within_one_piece_is_embedded_whole_as_before() -> None:
    clip = speech_clip("FEE083", "trn09")
    content = wav_bytes(clip)
    (result,) = extractor().extract_source(content)
    samples = decode(content).samples[0]
    speech = extractor().vad.speech_samples(samples)
    assert 3.0 < speech.seconds < extractor().piece_seconds
    expected = extractor().model.embed_samples(speech.samples)
    voiceprint = result.extraction.voiceprint
    np.testing.assert_allclose(voiceprint.embedding, expected, rtol=EMBEDDING_TOLERANCE, atol=1e-6)
    assert voiceprint.speech_length == pytest.approx(speech.seconds)
    assert result.extraction.processed_seconds == pytest.approx(samples.shape[0] / SAMPLE_RATE)


def test_long_speech_goes_through_the_network_in_pieces() -> None:
    signal = meeting("dev00", "tst00")
    pieced = Extractor(extractor().model, extractor().vad, piece_seconds=8.0)
    extraction = pieced.extract(signal)
    # The rule of the module's docstring, applied to the whole speech at once.
    speech = pieced.vad.speech_samples(signal).samples
    piece = 8 * SAMPLE_RATE
    pieces = []
    while speech.shape[0] > 2 * piece:
        pieces.append(speech[:piece])
        speech = speech[piece:]
    half = speech.shape[0] // 2
    pieces += [speech[:half], speech[half : 2 * half]]
    assert len(pieces) >= 4
    assert all(piece // 2 <= len(part) <= piece for part in pieces)
    weighted = np.stack(
        [len(part) * unit(pieced.model.embed_samples(part)) for part in pieces]
    ).sum(0)
    expected = weighted / sum(len(part) for part in pieces)
    np.testing.assert_allclose(
        extraction.voiceprint.embedding, expected, rtol=EMBEDDING_TOLERANCE, atol=1e-6
    )
    speech_seconds = pieced.vad.speech_samples(signal).seconds
    assert extraction.speech_length == pytest.approx(speech_seconds)
    # Still the same voice as when the speech is embedded whole.
    whole = extractor().extract(signal)
    assert float(np.dot(unit(whole.voiceprint.embedding), unit(expected))) > 0.9


def test_streamed_extraction_equals_extraction_of_the_decoded_audio(tmp_path: Path) -> None:
    # Long enough for several decoded blocks and more than one piece on each channel.
    left = meeting("dev00", "tst00", "trn01")
    right = meeting("trn02", "trn03", "trn04")
    path = tmp_path / "two channels.flac"
    sf.write(path, np.stack((left, right)).T, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    audio = decode(path)
    by_mode = {}
    for mode in ("split", "mix"):
        streamed = extractor().extract_source(path, channel_mode=mode)
        whole = extractor().extract_audio(audio, channel_mode=mode)
        assert [r.channel_number for r in streamed] == [r.channel_number for r in whole]
        for ours, theirs in zip(streamed, whole, strict=True):
            assert ours.extraction.speech_length == pytest.approx(theirs.extraction.speech_length)
            np.testing.assert_allclose(
                ours.extraction.voiceprint.embedding,
                theirs.extraction.voiceprint.embedding,
                rtol=EMBEDDING_TOLERANCE,
                atol=1e-6,
            )
        by_mode[mode] = streamed
    assert [r.channel_number for r in by_mode["split"]] == [0, 1]
    assert [r.channel_number for r in by_mode["mix"]] == [0]
    (only_right,) = extractor().extract_source(path, channels=[1])
    assert only_right.channel_number == 1
    np.testing.assert_allclose(
        only_right.extraction.voiceprint.embedding,
        by_mode["split"][1].extraction.voiceprint.embedding,
        rtol=EMBEDDING_TOLERANCE,
        atol=1e-6,
    )


def test_progress_is_reported_after_each_block_up_to_the_whole_length(tmp_path: Path) -> None:
    signal = meeting("dev00", "tst00", "trn01")
    path = tmp_path / "meeting.wav"
    sf.write(path, signal, SAMPLE_RATE, subtype="PCM_16")
    reports: list[tuple[float, float | None]] = []
    extractor().extract_source(path, on_progress=lambda done, total: reports.append((done, total)))
    assert len(reports) >= 2
    done = [report[0] for report in reports]
    assert done == sorted(done)
    assert done[-1] == pytest.approx(signal.shape[0] / SAMPLE_RATE)
    for _, total in reports:
        assert total == pytest.approx(signal.shape[0] / SAMPLE_RATE)


def test_a_stop_request_is_seen_within_seconds_of_audio_and_stops_the_work() -> None:
    signal = meeting("dev00", "tst00", "trn01")
    content = wav_bytes(signal)
    asked = 0

    def count_and_go_on() -> bool:
        nonlocal asked
        asked += 1
        return False

    extractor().extract_source(content, should_stop=count_and_go_on)
    # Asked at least once per scoring block of the detector (8 s of audio).
    assert asked >= signal.shape[0] / SAMPLE_RATE / 8.2

    progress: list[float] = []
    with pytest.raises(Stopped):
        extractor().extract_source(
            content,
            should_stop=lambda: bool(progress),
            on_progress=lambda done, _: progress.append(done),
        )
    # The stop came with the first block's report: no other block was processed after it.
    assert len(progress) == 1
    assert progress[0] < signal.shape[0] / SAMPLE_RATE


def test_a_speech_cap_stops_decoding_early(tmp_path: Path) -> None:
    signal = meeting("dev00", "tst00", "trn01")
    path = tmp_path / "meeting.flac"
    sf.write(path, signal, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    reports: list[float] = []
    (capped,) = extractor().extract_source(
        path, max_speech_seconds=5.0, on_progress=lambda done, _: reports.append(done)
    )
    assert capped.extraction.speech_length == pytest.approx(5.0, abs=1 / SAMPLE_RATE)
    assert capped.extraction.processed_seconds < 30
    assert reports[-1] < signal.shape[0] / SAMPLE_RATE
    whole = extractor().extract(signal, max_speech_seconds=5.0)
    np.testing.assert_allclose(
        capped.extraction.voiceprint.embedding,
        whole.voiceprint.embedding,
        rtol=EMBEDDING_TOLERANCE,
        atol=1e-6,
    )


def test_streamed_and_decoded_extraction_measure_the_same_condition(tmp_path: Path) -> None:
    signal = meeting("dev00")
    path = tmp_path / "meeting.wav"
    path.write_bytes(wav_bytes(signal))
    (streamed,) = extractor().extract_source(path)
    (whole,) = extractor().extract_audio(decode(path))
    ours, theirs = streamed.extraction.voiceprint, whole.extraction.voiceprint
    assert ours.condition == theirs.condition == WIDEBAND
    assert ours.bandwidth == theirs.bandwidth > 6000
    # The same frames summed in other groupings: float64 rounding only.
    assert ours.snr == pytest.approx(theirs.snr, abs=1e-6)
    assert Voiceprint.from_base64(ours.to_base64()).bandwidth == ours.bandwidth


def test_audio_from_an_8_khz_source_is_narrowband(tmp_path: Path) -> None:
    narrow = telephone.telephone_wav(meeting("dev00")[: 10 * SAMPLE_RATE], "g711-alaw", 8000)
    audio = decode(narrow)
    assert audio.original_sample_rate == 8000
    (decoded,) = extractor().extract_audio(audio)
    assert decoded.extraction.voiceprint.condition == NARROWBAND
    assert decoded.extraction.voiceprint.bandwidth <= 4000
    # The samples alone, without the source rate, are judged by their content: narrowband too.
    by_content = extractor().extract(audio.samples[0])
    assert by_content.voiceprint.condition == NARROWBAND


def test_a_configured_cohort_fills_the_score_normalisation_statistics() -> None:
    plain = extractor()
    others = [
        plain.extract(speech_clip(speaker, recording)).voiceprint.embedding
        for speaker, recording in (("FEE083", "trn06"), ("FEE078", "trn05"), ("MEE075", "trn04"))
    ]
    cohort = Cohort.of(np.stack(others), top_n=2)
    with_cohort = Extractor(plain.model, plain.vad, cohort=cohort)
    signal = speech_clip("MEE009", "dev01")
    voiceprint = with_cohort.extract(signal).voiceprint
    means, stds = cohort_statistics(voiceprint.embedding, cohort.unit_embeddings, 2)
    assert voiceprint.cohort_std > 0
    # The same float64 computation on the same float32 embedding, stored as float32.
    assert voiceprint.cohort_mean == pytest.approx(float(means[0]), abs=1e-7)
    assert voiceprint.cohort_std == pytest.approx(float(stds[0]), abs=1e-7)
    without = plain.extract(signal).voiceprint
    assert (without.cohort_mean, without.cohort_std) == (0.0, 0.0)
    np.testing.assert_array_equal(voiceprint.embedding, without.embedding)
    with pytest.raises(ValueError, match="192"):
        Extractor(plain.model, plain.vad, cohort=Cohort.of(np.eye(8), top_n=2))


def test_speech_segments_are_where_the_speech_is_in_the_file(tmp_path: Path) -> None:
    """The segments reported are those of the detector, in seconds of the file: a part picked
    with `start` gives the same segments as the whole file over that part, shifted by it."""
    signal = meeting("dev00")
    path = tmp_path / "meeting.flac"
    sf.write(path, signal, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    (whole,) = extractor().extract_source(path)
    segments = whole.extraction.speech_segments
    assert len(segments) > 1
    total = sum(end - start for start, end in segments)
    assert total == pytest.approx(whole.extraction.speech_length, abs=0.001 * len(segments))
    expected = [
        (start / SAMPLE_RATE, end / SAMPLE_RATE)
        for start, end in extractor().vad.speech_segments(signal)
    ]
    np.testing.assert_allclose(segments, expected, atol=0.0005 + 1e-9)
    # From 10 s on, the detector starts afresh on the rest: its segments, in the file's time.
    (later,) = extractor().extract_source(path, time_range=TimeRange(10.0, None))
    rest = [
        (10.0 + start / SAMPLE_RATE, 10.0 + end / SAMPLE_RATE)
        for start, end in extractor().vad.speech_segments(signal[10 * SAMPLE_RATE :])
    ]
    np.testing.assert_allclose(later.extraction.speech_segments, rest, atol=0.0005 + 1e-9)
    assert all(start >= 10.0 for start, _ in later.extraction.speech_segments)


def test_a_long_list_of_segments_is_joined_two_by_two_until_it_is_short_enough() -> None:
    starts = np.arange(2500, dtype=np.float64) * 2.0
    segments = np.column_stack((starts, starts + 1.0))
    bounded = bounded_segments(segments, 1000)
    assert len(bounded) == 625  # 2500 -> 1250 -> 625
    assert bounded[0] == (0.0, 7.0)  # four segments and the three gaps between them
    assert bounded[-1] == (4992.0, 4999.0)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(bounded))
    odd = bounded_segments(segments[:5], 4)
    assert odd == ((0.0, 3.0), (4.0, 7.0), (8.0, 9.0)), "the last one is kept as it is"
    assert bounded_segments(segments[:3], 1000) == ((0.0, 1.0), (2.0, 3.0), (4.0, 5.0))
