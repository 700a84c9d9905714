"""voxmatch.vad: Silero VAD in onnxruntime on real speech, silence and noise."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from _audio_fixtures import SAMPLE_RATE, detector, speech, streaming_detector
from _helpers import VAD_PROBABILITY_TOLERANCE
from tools import corpora
from voxmatch.vad import (
    SILERO_VAD_SEQUENCE,
    WINDOW,
    SpeechSegmenter,
    VadParameters,
    VoiceActivityDetector,
    segments_from_probabilities,
)


def _reference_timestamps(
    speech_probs: list[float],
    audio_length_samples: int,
    threshold: float = 0.5,
    min_speech_duration_ms: float = 250,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    neg_threshold: float | None = None,
) -> list[tuple[int, int]]:
    """silero-vad 6.2.3's get_speech_timestamps_from_probs (utils_vad.py, MIT), for 16 kHz.

    Kept as the original per-window loop; only the max_speech_duration_s branch is left out,
    which with its default of infinity never runs (and `possible_ends`/`prev_end`, which only
    it reads, with it).
    """
    sampling_rate = 16000
    window_size_samples = 512
    min_speech_samples = sampling_rate * min_speech_duration_ms / 1000
    speech_pad_samples = sampling_rate * speech_pad_ms / 1000
    min_silence_samples = sampling_rate * min_silence_duration_ms / 1000
    triggered = False
    speeches: list[dict[str, Any]] = []
    current_speech: dict[str, Any] = {}
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    temp_end = 0
    for i, speech_prob in enumerate(speech_probs):
        cur_sample = window_size_samples * i
        if (speech_prob >= threshold) and temp_end:
            temp_end = 0
        if (speech_prob >= threshold) and not triggered:
            triggered = True
            current_speech["start"] = cur_sample
            continue
        if (speech_prob < neg_threshold) and triggered:
            if not temp_end:
                temp_end = cur_sample
            sil_dur_now = cur_sample - temp_end
            if sil_dur_now < min_silence_samples:
                continue
            current_speech["end"] = temp_end
            if (current_speech["end"] - current_speech["start"]) > min_speech_samples:
                speeches.append(current_speech)
            current_speech = {}
            temp_end = 0
            triggered = False
            continue
    if current_speech and (audio_length_samples - current_speech["start"]) > min_speech_samples:
        current_speech["end"] = audio_length_samples
        speeches.append(current_speech)
    for i, speech_dict in enumerate(speeches):
        if i == 0:
            speech_dict["start"] = int(max(0, speech_dict["start"] - speech_pad_samples))
        if i != len(speeches) - 1:
            silence_duration = speeches[i + 1]["start"] - speech_dict["end"]
            if silence_duration < 2 * speech_pad_samples:
                speech_dict["end"] += int(silence_duration // 2)
                speeches[i + 1]["start"] = int(
                    max(0, speeches[i + 1]["start"] - silence_duration // 2)
                )
            else:
                speech_dict["end"] = int(
                    min(audio_length_samples, speech_dict["end"] + speech_pad_samples)
                )
                speeches[i + 1]["start"] = int(
                    max(0, speeches[i + 1]["start"] - speech_pad_samples)
                )
        else:
            speech_dict["end"] = int(
                min(audio_length_samples, speech_dict["end"] + speech_pad_samples)
            )
    return [(int(s["start"]), int(s["end"])) for s in speeches]


def _meeting() -> NDArray[np.float32]:
    """60 s of real meeting speech: two AMI excerpts back to back."""
    return np.concatenate(
        [corpora.load(corpora.ami_path("dev00")), corpora.load(corpora.ami_path("tst00"))]
    )


# --- The model ---------------------------------------------------------------------------------


def test_sequence_and_streaming_forms_agree_on_real_speech() -> None:
    samples = _meeting()
    sequence = detector().speech_probabilities(samples)
    streaming = streaming_detector().speech_probabilities(samples)
    assert detector().sequence_model
    assert not streaming_detector().sequence_model
    assert sequence.shape == (-(-samples.shape[0] // WINDOW),)
    # Two graphs of one network: other onnxruntime kernels, the same scores up to rounding.
    np.testing.assert_allclose(sequence, streaming, rtol=0, atol=VAD_PROBABILITY_TOLERANCE)
    assert 0.3 < float(np.mean(sequence > 0.5)) < 0.95


def test_scores_do_not_depend_on_how_the_audio_is_cut() -> None:
    samples = _meeting()[: 20 * SAMPLE_RATE]
    whole = detector().speech_probabilities(samples)
    stream = detector().stream()
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.integers(0, samples.shape[0], size=40))
    for piece in np.split(samples, cuts):
        stream.feed(piece)
    stream.flush()
    # Other cuts are other batch sizes for onnxruntime, which may round them differently.
    np.testing.assert_allclose(stream.probabilities, whole, rtol=0, atol=VAD_PROBABILITY_TOLERANCE)
    small_blocks = VoiceActivityDetector(
        corpora.models_cache_dir() / SILERO_VAD_SEQUENCE.filename, block_windows=7
    )
    np.testing.assert_allclose(
        small_blocks.speech_probabilities(samples), whole, rtol=0, atol=VAD_PROBABILITY_TOLERANCE
    )


def test_one_detector_serves_several_threads() -> None:
    signals = [corpora.load(f.path) for f in corpora.ami_files()[:6]]
    expected = [detector().speech_segments(signal) for signal in signals]
    results: dict[int, list[tuple[int, int]]] = {}

    def work(index: int) -> None:
        results[index] = detector().speech_segments(signals[index])

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(signals))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[index] for index in range(len(signals))] == expected


def test_a_file_that_is_not_silero_vad_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="not a Silero VAD model"):
        VoiceActivityDetector(path)


# --- Post-processing ---------------------------------------------------------------------------


def test_segments_match_silero_on_real_scores() -> None:
    samples = _meeting()
    scores = detector().speech_probabilities(samples)
    reference = _reference_timestamps(scores.tolist(), samples.shape[0])
    assert len(reference) > 10
    assert detector().speech_segments(samples) == reference


@pytest.mark.parametrize("seed", range(6))
def test_segments_match_silero_on_varied_scores_and_parameters(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(400):
        count = int(rng.integers(1, 400))
        shape = trial % 3
        if shape == 0:
            scores = rng.random(count)
        elif shape == 1:
            scores = np.clip(np.cumsum(rng.normal(0, 0.15, count)) + 0.4, 0, 1)
        else:
            scores = rng.choice([0.05, 0.4, 0.6, 0.9], count)
        length = count * WINDOW - int(rng.integers(0, WINDOW))
        settings: dict[str, Any] = {
            "threshold": float(rng.choice([0.3, 0.5, 0.7])),
            "min_speech_duration_ms": float(rng.choice([0, 64, 250])),
            "min_silence_duration_ms": float(rng.choice([0, 32, 100, 300])),
            "speech_pad_ms": float(rng.choice([0, 30, 100, 7.3])),
            "neg_threshold": None if trial % 2 else 0.2,
        }
        expected = _reference_timestamps(scores.tolist(), length, **settings)
        found = segments_from_probabilities(scores, length, VadParameters(**settings))
        assert [tuple(map(int, pair)) for pair in found] == expected, settings


def _random_scores(rng: np.random.Generator, count: int, shape: int) -> NDArray[np.float64]:
    if shape == 0:
        return rng.random(count)
    if shape == 1:
        return np.clip(np.cumsum(rng.normal(0, 0.15, count)) + 0.4, 0, 1)
    return rng.choice([0.05, 0.4, 0.6, 0.9], count)


@pytest.mark.parametrize("seed", range(4))
def test_segments_settled_piece_by_piece_are_the_segments_of_the_whole(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for trial in range(300):
        count = int(rng.integers(1, 600))
        scores = _random_scores(rng, count, trial % 3).astype(np.float32)
        length = count * WINDOW - int(rng.integers(0, WINDOW))
        parameters = VadParameters(
            threshold=float(rng.choice([0.3, 0.5, 0.7])),
            min_speech_duration_ms=float(rng.choice([0, 64, 250])),
            min_silence_duration_ms=float(rng.choice([0, 32, 100, 300])),
            speech_pad_ms=float(rng.choice([0, 30, 100, 7.3])),
            neg_threshold=None if trial % 2 else 0.2,
        )
        expected = segments_from_probabilities(scores, length, parameters)
        segmenter = SpeechSegmenter(parameters)
        cuts = np.sort(rng.integers(0, count, size=int(rng.integers(0, 12))))
        pieces = np.split(scores, cuts)
        stretches: list[tuple[int, int]] = []
        for index, piece in enumerate(pieces):
            needed_from = segmenter.needed_from
            if index == len(pieces) - 1:
                given = segmenter.finish(piece, length)
            else:
                given = segmenter.push(piece)
            assert all(start >= needed_from for start, _ in given), parameters
            stretches.extend(given)
        assert segmenter.segments == [tuple(map(int, pair)) for pair in expected], parameters
        # The stretches given out cover exactly the samples of the segments, in order.
        covered = np.concatenate([np.arange(a, b) for a, b in stretches] or [np.zeros(0, int)])
        inside = np.concatenate([np.arange(a, b) for a, b in expected] or [np.zeros(0, int)])
        np.testing.assert_array_equal(covered, inside)


def test_a_long_stream_keeps_only_the_audio_that_may_still_be_speech() -> None:
    # Ten minutes of real speech with silence between its parts, fed in small pieces: the
    # audio held stays near one piece plus the unsettled end of the speech.
    part = speech("dev00", 0.0, 20.0)
    silence = np.zeros(5 * SAMPLE_RATE, np.float32)
    signal = np.concatenate([part, silence] * 24)
    stream = detector().stream()
    piece = SAMPLE_RATE
    held = []
    taken = []
    for begin in range(0, signal.shape[0], piece):
        stream.feed(signal[begin : begin + piece])
        held.append(stream.held_samples)
        taken.append(stream.take())
    rest = stream.finish()
    assert max(held) < 4 * SAMPLE_RATE
    segments = detector().speech_segments(signal)
    assert len(segments) >= 24
    assert [tuple(map(int, pair)) for pair in rest.segments] == segments
    streamed = np.concatenate([*taken, rest.samples])
    expected = np.concatenate([signal[start:end] for start, end in segments])
    np.testing.assert_array_equal(streamed, expected)


def test_no_scores_no_segments() -> None:
    assert segments_from_probabilities(np.zeros(0), 0).shape == (0, 2)
    assert detector().speech_segments(np.zeros(0, np.float32)) == []
    empty = detector().speech_samples(np.zeros(0, np.float32))
    assert empty.seconds == 0
    assert empty.segments.shape == (0, 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"threshold": 0.0}, "threshold must be in"),
        ({"threshold": 1.0}, "threshold must be in"),
        ({"neg_threshold": 0.6}, "neg_threshold must be in"),
        ({"min_speech_duration_ms": -1}, "min_speech_duration_ms must be >= 0"),
        ({"speech_pad_ms": -5}, "speech_pad_ms must be >= 0"),
    ],
)
def test_bad_parameters_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VadParameters(**settings)


# --- Speech, silence and noise ---------------------------------------------------------------


def test_speech_is_found_where_the_rttm_has_speech() -> None:
    turns = corpora.ami_turns()
    found = annotated = overlap = 0
    for speech_file in corpora.ami_files():
        samples = corpora.load(speech_file.path)
        reference = np.zeros(samples.shape[0], dtype=bool)
        for turn in turns:
            if turn.uri == speech_file.name:
                reference[round(turn.start * SAMPLE_RATE) : round(turn.end * SAMPLE_RATE)] = True
        mask = detector().speech_mask(samples)
        found += int(mask.sum())
        annotated += int(reference.sum())
        overlap += int((mask & reference).sum())
    # The RTTM turns include the pauses inside a speaker's turn, which a VAD rightly leaves out,
    # so recall is well below 1; what it calls speech should almost all be annotated speech.
    assert overlap / found > 0.97
    assert overlap / annotated > 0.65


def test_read_speech_is_mostly_speech() -> None:
    for speech_file in [*corpora.an4_files(), *corpora.librivox_files()]:
        samples = corpora.load(speech_file.path)
        found = detector().speech_samples(samples)
        assert found.seconds > 0.5 * samples.shape[0] / SAMPLE_RATE, speech_file.name


def test_no_speech_in_silence_or_noise() -> None:
    rng = np.random.default_rng(11)
    five_seconds = 5 * SAMPLE_RATE
    quiet_hiss = (1e-4 * rng.standard_normal(five_seconds)).astype(np.float32)
    white = (0.1 * rng.standard_normal(five_seconds)).astype(np.float32)
    rumble = (np.cumsum(rng.standard_normal(five_seconds)) / 300).astype(np.float32)
    recorded = [corpora.load(path) for path in corpora.noise_files()]
    for signal in [np.zeros(five_seconds, np.float32), quiet_hiss, white, rumble, *recorded]:
        assert detector().speech_segments(signal) == []
        result = detector().speech_samples(signal)
        assert result.seconds == 0
        assert result.processed_samples == signal.shape[0]


def test_speech_samples_are_the_segments_concatenated() -> None:
    samples = speech("dev00", 0.0, 20.0)
    result = detector().speech_samples(samples)
    segments = detector().speech_segments(samples)
    assert [tuple(map(int, pair)) for pair in result.segments] == segments
    expected = np.concatenate([samples[start:end] for start, end in segments])
    np.testing.assert_array_equal(result.samples, expected)
    assert result.seconds == pytest.approx(sum(e - s for s, e in segments) / SAMPLE_RATE)
    mask = detector().speech_mask(samples)
    assert int(mask.sum()) == expected.shape[0]
    np.testing.assert_array_equal(samples[mask], expected)


# --- The speech cap (gRPC speech_length) --------------------------------------------------------


@pytest.mark.parametrize("cap", [0.5, 3.0, 10.0, 20.0, 40.0])
def test_capped_speech_is_the_start_of_the_uncapped_speech(cap: float) -> None:
    samples = _meeting()
    whole = detector().speech_samples(samples)
    capped = detector().speech_samples(samples, max_speech_seconds=cap)
    assert capped.seconds == pytest.approx(cap, abs=1 / SAMPLE_RATE)
    np.testing.assert_array_equal(capped.samples, whole.samples[: capped.samples.shape[0]])
    # Scoring stopped soon after the capped speech ended: within the block in which it ended
    # and the next one, which can be needed to see that the last segment had closed.
    where_cap_ends = int(capped.segments[-1, 1])
    block = detector().block_windows * WINDOW
    assert capped.processed_samples < samples.shape[0]
    assert capped.processed_samples - where_cap_ends <= 2 * block


def test_cap_above_the_speech_present_returns_all_of_it() -> None:
    samples = speech("dev00", 0.0, 10.0)
    whole = detector().speech_samples(samples)
    capped = detector().speech_samples(samples, max_speech_seconds=60.0)
    np.testing.assert_array_equal(capped.samples, whole.samples)
    assert capped.processed_samples == samples.shape[0]


def test_streamed_audio_with_a_cap_asks_to_stop() -> None:
    samples = _meeting()
    stream = detector().stream(max_speech_seconds=5.0)
    piece = SAMPLE_RATE // 10
    fed = 0
    while not stream.feed(samples[fed : fed + piece]):
        fed += piece
        assert fed < samples.shape[0], "the cap was never reached"
    assert stream.capped
    assert stream.feed(samples[fed : fed + piece]) is True  # later audio is ignored
    result = stream.finish()
    assert result.seconds == pytest.approx(5.0, abs=1 / SAMPLE_RATE)
    # The uncapped speech fed in the same pieces: the same batches, so the same scores exactly.
    uncapped = detector().stream()
    for begin in range(0, samples.shape[0], piece):
        uncapped.feed(samples[begin : begin + piece])
    uncapped_samples = uncapped.finish().samples
    np.testing.assert_array_equal(result.samples, uncapped_samples[: result.samples.shape[0]])


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one channel"):
        detector().speech_segments(np.zeros((2, 1000), np.float32))
    with pytest.raises(ValueError, match="float samples"):
        detector().speech_segments(np.zeros(1000, np.int16))
    with pytest.raises(ValueError, match="max_speech_seconds must be positive"):
        detector().speech_samples(np.zeros(1000, np.float32), max_speech_seconds=0)
    finished = detector().stream()
    finished.finish()
    with pytest.raises(RuntimeError, match="finished"):
        finished.feed(np.zeros(10, np.float32))
