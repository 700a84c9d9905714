"""tools.telephone: real speech through real telephone codec chains, at 8 kHz and back at 16 kHz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from tools import corpora, telephone

FloatArray = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def speech() -> FloatArray:
    """Two real AN4 utterances (two speakers), 16 kHz."""
    files = {item.name: item.path for item in corpora.an4_files()}
    return np.concatenate([corpora.load(files["cen7-fash-b"]), corpora.load(files["cen8-mwhw-b"])])


def _snr_db(reference: FloatArray, decoded: FloatArray) -> float:
    """Against the codec's input, at the codec delay that fits best (up to 50 ms)."""
    length = min(reference.size, decoded.size) - 400
    best = -np.inf
    for delay in range(400):
        error = decoded[delay : delay + length] - reference[:length]
        best = max(best, 10 * np.log10(np.sum(reference[:length] ** 2) / np.sum(error**2)))
    return float(best)


def test_every_chain_makes_8_khz_and_16_khz_files_of_the_same_speech(
    speech: FloatArray, tmp_path: Path
) -> None:
    for chain in telephone.CHAINS.values():
        files = telephone.telephone_files(speech, chain, tmp_path)
        narrow, narrow_rate = soundfile.read(files.narrowband, dtype="float32")
        wide, wide_rate = soundfile.read(files.upsampled, dtype="float32")
        assert (narrow_rate, wide_rate) == (8000, 16000), chain.name
        # Codecs pad to whole frames (20 ms at most here), nothing more.
        assert abs(narrow.size - speech.size / 2) <= 2 * 160, chain.name
        assert wide.size == 2 * narrow.size, chain.name
        assert np.sqrt(np.mean(narrow**2)) > 0.3 * np.sqrt(np.mean(speech**2)), chain.name


def test_the_16_khz_versions_have_nothing_above_4_khz(speech: FloatArray, tmp_path: Path) -> None:
    assert telephone.high_band_share(speech, 16000) > 1e-3  # the original has
    for chain in telephone.CHAINS.values():
        wide, _ = soundfile.read(
            telephone.telephone_files(speech, chain, tmp_path).upsampled, dtype="float32"
        )
        assert telephone.high_band_share(wide, 16000, above_hz=4000) < 1e-6, chain.name
        # ... and the telephone band's floor: little below 300 Hz is left of the speech.
        assert telephone.high_band_share(wide, 16000, above_hz=250) > 0.99, chain.name


def test_the_chains_are_deterministic_and_cached(speech: FloatArray, tmp_path: Path) -> None:
    chain = telephone.CHAINS["opus-nb-8k"]
    first = telephone.telephone_files(speech, chain, tmp_path)
    written = first.narrowband.stat().st_mtime_ns
    again = telephone.telephone_files(speech, chain, tmp_path)
    assert again == first
    assert again.narrowband.stat().st_mtime_ns == written
    made_again = telephone.through_chain(speech, chain)
    stored, _ = soundfile.read(first.narrowband, dtype="float32")
    # Stored as 16-bit PCM: equal to within half a step.
    np.testing.assert_allclose(stored, made_again, atol=1 / 32768 + 1e-7)


@pytest.mark.parametrize(
    ("name", "low_snr", "high_snr"),
    [
        # Waveform coders keep the waveform: G.711 about 35 dB, G.726 at 32 kbit/s about 20-25.
        ("g711-mulaw", 25.0, 45.0),
        ("g711-alaw", 25.0, 45.0),
        ("g726-32k", 15.0, 30.0),
        # Speech coders (LPC, CELP) keep how it sounds, not the waveform: far lower SNR.
        ("gsm610", 6.0, 18.0),
        ("amr-nb-12k2", 4.0, 14.0),
        ("opus-nb-8k", 4.0, 14.0),
    ],
)
def test_each_codec_really_encodes_at_its_bit_rate(
    speech: FloatArray, name: str, low_snr: float, high_snr: float
) -> None:
    chain = telephone.CHAINS[name]
    narrow = telephone.to_telephone_band(speech)
    decoded, encoded_bytes = chain.round_trip(narrow)
    bits_per_second = 8 * encoded_bytes / (narrow.size / 8000)
    # Container headers and AMR's frame headers add a few percent; a PCM file would be 128k.
    assert 0.85 * chain.bit_rate < bits_per_second < 1.1 * chain.bit_rate, bits_per_second
    assert low_snr < _snr_db(narrow, decoded) < high_snr


@pytest.mark.parametrize("name", ["g711-mulaw", "g711-alaw"])
def test_g711_quantises_logarithmically(speech: FloatArray, name: str) -> None:
    narrow = telephone.to_telephone_band(speech)
    decoded, _ = telephone.CHAINS[name].round_trip(narrow)
    # 8 bits a sample: at most 256 levels, where the 16-bit input had thousands ...
    assert np.unique(decoded).size <= 256 < np.unique(np.round(narrow * 32767)).size
    # ... spaced in proportion to the amplitude (segments of 16 steps, each twice the last).
    error = np.abs(decoded - narrow)
    assert np.all(error <= np.abs(narrow) / 16 + 40 / 32768)
    loud = np.abs(narrow) > 0.1
    assert np.median(error[loud]) > 4 * np.median(error[np.abs(narrow) < 0.01])


def test_mu_law_and_a_law_are_different_codecs(speech: FloatArray) -> None:
    narrow = telephone.to_telephone_band(speech)
    mu_law, _ = telephone.CHAINS["g711-mulaw"].round_trip(narrow)
    a_law, _ = telephone.CHAINS["g711-alaw"].round_trip(narrow)
    assert not np.array_equal(np.unique(mu_law), np.unique(a_law))
