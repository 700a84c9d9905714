"""voxmatch.bandwidth on real speech: wideband originals and their telephone versions, through
real codecs, told apart by what they contain whatever the rate of the file; and the SNR
estimate."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from numpy.typing import NDArray

from _audio_fixtures import detector
from tools import corpora, telephone
from voxmatch.audio import decode
from voxmatch.bandwidth import NARROWBAND_BELOW_HZ, AudioCondition, ConditionMeter
from voxmatch.extraction import Extractor, load_extractor
from voxmatch.models import DEFAULT_MODEL_NAME
from voxmatch.voiceprint import NARROWBAND, WIDEBAND


@functools.cache
def extractor() -> Extractor:
    return load_extractor(DEFAULT_MODEL_NAME, corpora.models_cache_dir())


@functools.cache
def clips() -> dict[str, NDArray[np.float32]]:
    """Real speech of three corpora and four speakers, 16 kHz: the longest AN4 utterances of
    two speakers (about 2.5 s), a LibriVox reading and an AMI meeting run."""
    an4 = {file.name: file.path for file in corpora.an4_files()}
    librivox = corpora.librivox_files()
    ami = max(corpora.ami_segments(3.0), key=lambda segment: segment.duration)
    return {
        "an4-fash": corpora.load(an4["cen7-fash-b"]),
        "an4-fcaw": corpora.load(an4["cen8-fcaw-b"]),
        "librivox": corpora.load(librivox[0].path),
        "ami": corpora.load_segment(ami),
    }


def measured(samples: NDArray[np.float32], source_rate: int | None = None) -> AudioCondition:
    """The meter fed as extraction feeds it: every sample, then the detected speech."""
    meter = ConditionMeter()
    meter.add_audio(samples)
    meter.add_speech(detector().speech_samples(samples).samples)
    return meter.result(source_rate)


@pytest.mark.parametrize("name", ["an4-fash", "an4-fcaw", "librivox", "ami"])
def test_wideband_speech_is_detected_wideband(name: str) -> None:
    (channel,) = extractor().extract_source(telephone.wav_bytes(clips()[name]))
    voiceprint = channel.extraction.voiceprint
    assert voiceprint.speech_length > 0.5
    assert voiceprint.condition == WIDEBAND
    # The lowest measured on all the wideband speech at hand is 6.28 kHz.
    assert voiceprint.bandwidth > 6000


@pytest.mark.parametrize("codec", tuple(telephone.CHAINS))
@pytest.mark.parametrize("stored_rate", telephone.STORED_RATES)
def test_telephone_speech_is_detected_narrowband_at_any_file_rate(
    codec: str, stored_rate: int
) -> None:
    for name, samples in clips().items():
        wav = telephone.telephone_wav(samples, codec, stored_rate)
        assert decode(wav).original_sample_rate == stored_rate
        (channel,) = extractor().extract_source(wav)
        voiceprint = channel.extraction.voiceprint
        assert voiceprint.speech_length > 0.5, name
        assert voiceprint.condition == NARROWBAND, (name, voiceprint.bandwidth)
        assert 3000 < voiceprint.bandwidth < NARROWBAND_BELOW_HZ - 400, name


def test_the_content_decides_not_the_rate_of_the_file() -> None:
    """Telephone audio stored at 16 kHz is narrowband even where no source rate is known, and
    audio from an 8 kHz source is narrowband by definition."""
    samples = clips()["an4-fcaw"]
    upsampled = decode(telephone.telephone_wav(samples, "g711-mulaw", 16000)).mix().samples
    assert measured(upsampled).condition == NARROWBAND
    assert measured(samples).condition == WIDEBAND
    from_8k = measured(samples, source_rate=8000)
    assert from_8k.condition == NARROWBAND
    assert from_8k.bandwidth == 4000.0, "at most the source's Nyquist frequency"
    from_11k = measured(samples, source_rate=11025)
    assert (from_11k.condition, from_11k.bandwidth) == (WIDEBAND, 11025 / 2)


def test_feeding_in_any_pieces_gives_the_same_measure() -> None:
    samples = clips()["ami"]
    speech = detector().speech_samples(samples).samples
    whole = measured(samples)
    meter = ConditionMeter()
    rng = np.random.default_rng(3)
    for pieces_of, feed in ((samples, meter.add_audio), (speech, meter.add_speech)):
        cuts = np.sort(rng.integers(0, pieces_of.shape[0], 40))
        for piece in np.split(pieces_of, cuts):
            feed(piece)
    pieced = meter.result()
    assert (pieced.condition, pieced.bandwidth) == (whole.condition, whole.bandwidth)
    # Sums over frames in another grouping: float64 rounding only.
    assert pieced.snr == pytest.approx(whole.snr, abs=1e-9)


def test_noise_lowers_the_snr_estimate() -> None:
    samples = clips()["an4-fash"]
    recorded = corpora.load(corpora.noise_files()[1])
    # The clip is silence, then a steady noise: keep the noise, as a background throughout.
    frames = recorded[: recorded.shape[0] // 512 * 512].reshape(-1, 512)
    steady = frames[np.mean(frames**2, axis=1) > 0.01].reshape(-1)
    assert steady.shape[0] > 16000
    noise = np.tile(steady, -(-samples.shape[0] // steady.shape[0]))[: samples.shape[0]]

    def mixed(snr_db: float) -> NDArray[np.float32]:
        gain = np.sqrt(np.mean(samples**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
        noisy: NDArray[np.float32] = (samples + gain * noise).astype(np.float32)
        return noisy

    clean, at_20, at_5 = measured(samples), measured(mixed(20.0)), measured(mixed(5.0))
    assert clean.snr > at_20.snr + 5 > at_5.snr + 10
    # Speech frames carry the noise too, and the mix's SNR is over the whole clip, pauses
    # included: the estimate is near the true figure, not equal to it (measured 21.3 and 7.0).
    assert at_20.snr == pytest.approx(20.0, abs=4.0)
    assert at_5.snr == pytest.approx(5.0, abs=4.0)


def test_no_speech_is_not_measured() -> None:
    silence = np.zeros(16000, dtype=np.float32)
    assert measured(silence) == AudioCondition(WIDEBAND, 0.0, 0.0)
    assert measured(silence, source_rate=8000) == AudioCondition(NARROWBAND, 0.0, 0.0)
    (channel,) = extractor().extract_source(telephone.wav_bytes(silence, 8000))
    empty = channel.extraction.voiceprint
    assert (empty.speech_length, empty.condition, empty.bandwidth) == (0.0, NARROWBAND, 0.0)
