"""What the audio behind a voiceprint was like: its effective bandwidth and an SNR estimate.

Telephone audio often arrives as 16 kHz or 44.1 kHz files, so the file's sample rate says little;
the content does. The effective bandwidth is the upper edge of the speech's long-term spectrum:
the highest frequency at which the spectrum, smoothed over 281 Hz, stays within
`LEVEL_BELOW_BAND_DB` (40 dB) of its mean level in the telephone band (300-3400 Hz). Content no
more than 10 dB above the quantisation noise of 16-bit audio does not count: a quiet 16-bit
recording of telephone speech otherwise shows that noise, flat up to 8 kHz, within 40 dB of its
speech. Audio whose bandwidth is below `NARROWBAND_BELOW_HZ` (4.5 kHz), or whose source rate is
8 kHz or less, is narrowband.

Measured through extraction on real speech (`python -m tools.bandwidth_report`): 56 wideband
clips of AMI, AN4 and LibriVox speakers and their 749 telephone versions (band-pass 300-3400 Hz,
8 kHz, PCM, G.711 mu-law and A-law, GSM 06.10, AMR-NB 12.2 kbit/s; stored at 8, 16 and
44.1 kHz). Every original has a bandwidth of at least 6.28 kHz (median 7.25 kHz), every
telephone version at most 3.94 kHz (median 3.81 kHz): the threshold at 4.5 kHz makes no
error either way, 560 Hz above the highest telephone version and 1.78 kHz below the lowest
original. Telephone audio cannot exceed 4 kHz; wideband codecs keep 6.4-7 kHz and more, but
MP3 at 16 kHz cuts wideband speech at 5.9 kHz (measured on the four clips of
tests/test_bandwidth.py, where telephone versions re-encoded as MP3 or Opus still measure
3.6-3.9 kHz): a threshold much above 4.5 kHz would call such files narrowband.

The model's own filterbank features are not used for this, though they cover 0-8 kHz: they are
not dithered (dither 0, as 3D-Speaker computes them), so an empty band is not lifted to a
dither floor, but their log is floored at float32 epsilon in the power of samples in [-1, 1],
a floor that sat as little as 20 dB below the telephone band of the quietest speech measured
(AN4 is recorded at about -48 dBFS), where the measure needs 40 dB and more. A spectrum of the
speech in 32 ms frames (and the frame powers of the whole signal) costs about 0.15 ms per
second of audio.

The SNR estimate compares the mean power of the speech frames with the noise floor, taken as the
10th percentile of the power of every 32 ms frame of the signal (speech or not). Both are kept as
running sums and a fixed histogram, so memory does not grow with the length of the recording. A
recording without pauses underestimates it (its 10th percentile is quiet speech).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxmatch.voiceprint import NARROWBAND, WIDEBAND

NARROWBAND_BELOW_HZ = 4500.0
"""A voiceprint whose audio has a bandwidth below this is narrowband. Telephone audio has nothing
above its 4 kHz Nyquist frequency; measured telephone versions of real speech reach 3.94 kHz at
most, their wideband originals 6.28 kHz at least."""
LEVEL_BELOW_BAND_DB = 40.0
"""How far below the telephone band's level the spectrum may fall and still count as content."""
TELEPHONE_BAND_HZ = (300.0, 3400.0)
NARROWBAND_SOURCE_RATE = 8000
"""Audio at this sample rate or below is narrowband whatever its content."""
FRAME = 512
"""Samples per analysis frame (32 ms at 16 kHz), Hann-windowed, not overlapping."""
_SMOOTHING_BINS = 9
_NOISE_PERCENTILE = 10.0
_FLOOR_DB = -130.0
_CEILING_DB = 10.0
_HISTOGRAM_STEP_DB = 0.25
# 16-bit quantisation noise (step 2**-15 in [-1, 1], variance step**2 / 12) in one bin of the
# windowed power spectrum; content up to 10 dB above it is not counted.
_WINDOW = np.hanning(FRAME)
_IGNORED_POWER = 10.0 * (2.0**-15) ** 2 / 12.0 * float((_WINDOW**2).sum())


@dataclass(frozen=True)
class AudioCondition:
    condition: int
    """`WIDEBAND` or `NARROWBAND`."""
    bandwidth: float
    """Effective bandwidth in Hz; 0 when there was no speech to measure."""
    snr: float
    """SNR estimate in dB; 0 when there was no speech to measure."""


class ConditionMeter:
    """Measures one signal as it streams by: feed every sample to `add_audio` and the detected
    speech to `add_speech`, in order, then ask `result`. Memory stays the same whatever the
    length. Not for sharing between threads."""

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self._spectrum = np.zeros(FRAME // 2 + 1, dtype=np.float64)
        self._speech_frames = 0
        self._speech_power = 0.0
        self._speech_rest = np.zeros(0, dtype=np.float32)
        self._audio_rest = np.zeros(0, dtype=np.float32)
        self._histogram = np.zeros(
            round((_CEILING_DB - _FLOOR_DB) / _HISTOGRAM_STEP_DB), dtype=np.int64
        )

    def add_audio(self, samples: npt.NDArray[np.float32]) -> None:
        """The next samples of the whole signal (for the noise floor)."""
        frames, self._audio_rest = _frames(self._audio_rest, samples)
        if frames.shape[0] == 0:
            return
        power = np.mean(np.square(frames, dtype=np.float64), axis=1)
        levels = 10.0 * np.log10(np.maximum(power, 10.0 ** (_FLOOR_DB / 10.0)))
        bins = ((levels - _FLOOR_DB) / _HISTOGRAM_STEP_DB).astype(np.int64)
        np.add.at(self._histogram, np.clip(bins, 0, self._histogram.size - 1), 1)

    def add_speech(self, samples: npt.NDArray[np.float32]) -> None:
        """The next samples of detected speech, concatenated as the detector gives them."""
        frames, self._speech_rest = _frames(self._speech_rest, samples)
        if frames.shape[0] == 0:
            return
        windowed = frames.astype(np.float64) * _WINDOW
        self._spectrum += (np.abs(np.fft.rfft(windowed, axis=1)) ** 2).sum(axis=0)
        self._speech_power += float(np.square(frames, dtype=np.float64).mean(axis=1).sum())
        self._speech_frames += frames.shape[0]

    def result(self, source_rate: int | None = None) -> AudioCondition:
        """The condition of what was fed; `source_rate` is the file's own rate when known."""
        narrow_source = source_rate is not None and source_rate <= NARROWBAND_SOURCE_RATE
        if self._speech_frames == 0:
            return AudioCondition(NARROWBAND if narrow_source else WIDEBAND, 0.0, 0.0)
        bandwidth = self._bandwidth()
        if source_rate is not None:
            bandwidth = min(bandwidth, source_rate / 2)
        narrow = narrow_source or bandwidth < NARROWBAND_BELOW_HZ
        return AudioCondition(NARROWBAND if narrow else WIDEBAND, bandwidth, self._snr())

    def _bandwidth(self) -> float:
        spectrum = self._spectrum / self._speech_frames
        frequencies = np.fft.rfftfreq(FRAME, 1.0 / self.sample_rate)
        low, high = TELEPHONE_BAND_HZ
        band_level = float(spectrum[(frequencies >= low) & (frequencies <= high)].mean())
        if not band_level > 0:
            return 0.0
        kernel = np.full(_SMOOTHING_BINS, 1.0 / _SMOOTHING_BINS)
        smoothed = np.convolve(spectrum, kernel, mode="same") - _IGNORED_POWER
        content = np.flatnonzero(smoothed >= band_level * 10.0 ** (-LEVEL_BELOW_BAND_DB / 10.0))
        return float(frequencies[content[-1]]) if content.size else 0.0

    def _snr(self) -> float:
        speech_power = max(self._speech_power / self._speech_frames, 10.0 ** (_FLOOR_DB / 10.0))
        total = int(self._histogram.sum())
        if total == 0:
            return 0.0
        rank = math.ceil(total * _NOISE_PERCENTILE / 100.0)
        noise_bin = int(np.searchsorted(np.cumsum(self._histogram), rank))
        noise_db = _FLOOR_DB + (noise_bin + 0.5) * _HISTOGRAM_STEP_DB
        return float(10.0 * math.log10(speech_power) - noise_db)


def _frames(
    rest: npt.NDArray[np.float32], samples: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Whole frames of `rest` followed by `samples`, and what is left over (< FRAME)."""
    joined = np.concatenate((rest, samples)) if rest.size else samples
    whole = joined.shape[0] // FRAME * FRAME
    return joined[:whole].reshape(-1, FRAME), joined[whole:].copy()
