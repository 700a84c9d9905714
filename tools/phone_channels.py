"""Telephone versions of wideband speech, through real codec implementations.

A chain: band-pass 300-3400 Hz (the telephone channel of ITU-T G.712), resample to 8 kHz with
soxr, encode and decode with a narrowband codec (G.711 mu-law and A-law and AMR-NB by FFmpeg's
encoders through PyAV, GSM 06.10 by libsndfile), then store at 8 kHz or resample back to 16 kHz
or 44.1 kHz as telephone audio often arrives. Every chain returns the file's bytes (WAV, or AMR
for AMR-NB at 8 kHz), so a test can hand them to extraction as a user would.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import av
import numpy as np
import soundfile
import soxr
from numpy.typing import NDArray

from voxmatch.audio import decode

TELEPHONE_RATE = 8000
BAND = (300.0, 3400.0)
CODECS = ("pcm", "mulaw", "alaw", "gsm", "amr")
STORED_RATES = (8000, 16000, 44100)

Samples = NDArray[np.float32]


def band_pass(samples: Samples, rate: int, band: tuple[float, float] = BAND) -> Samples:
    """The telephone band of a signal: a linear-phase FFT filter with 100 Hz cosine skirts."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    frequencies = np.fft.rfftfreq(samples.shape[0], 1 / rate)
    low, high = band
    skirt = 100.0
    gain = np.clip((frequencies - (low - skirt)) / skirt, 0, 1) * np.clip(
        ((high + skirt) - frequencies) / skirt, 0, 1
    )
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    filtered = np.fft.irfft(spectrum * gain, samples.shape[0])
    return filtered.astype(np.float32)


def _pyav_round_trip(samples: Samples, container_format: str, codec: str, bit_rate: int) -> Samples:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=TELEPHONE_RATE, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        if bit_rate:
            stream.bit_rate = bit_rate
        step = 1024
        for begin in range(0, samples.shape[0], step):
            chunk = np.ascontiguousarray(samples[begin : begin + step].reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = TELEPHONE_RATE
            frame.pts = begin
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return decode(buffer.getvalue(), sample_rate=TELEPHONE_RATE).mix().samples


def _gsm_round_trip(samples: Samples) -> Samples:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, TELEPHONE_RATE, format="WAV", subtype="GSM610")
    return decode(buffer.getvalue(), sample_rate=TELEPHONE_RATE).mix().samples


_CODEC_ROUND_TRIPS: dict[str, Callable[[Samples], Samples]] = {
    "pcm": lambda samples: samples,
    "mulaw": lambda samples: _pyav_round_trip(samples, "wav", "pcm_mulaw", 0),
    "alaw": lambda samples: _pyav_round_trip(samples, "wav", "pcm_alaw", 0),
    "gsm": _gsm_round_trip,
    "amr": lambda samples: _pyav_round_trip(samples, "amr", "amr_nb", 12_200),
}


def telephone(samples: Samples, codec: str, stored_rate: int, rate: int = 16000) -> bytes:
    """A WAV file of `samples` (mono, at `rate`) after the telephone chain with `codec`,
    stored at `stored_rate`."""
    if codec not in _CODEC_ROUND_TRIPS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    narrow = soxr.resample(band_pass(samples, rate), rate, TELEPHONE_RATE, quality="HQ")
    # Headroom: the band-pass and the resampler can overshoot, and the codecs clip at full scale.
    narrow = np.clip(np.asarray(narrow, dtype=np.float32), -0.99, 0.99)
    coded = _CODEC_ROUND_TRIPS[codec](narrow)
    stored = coded
    if stored_rate != TELEPHONE_RATE:
        stored = soxr.resample(coded, TELEPHONE_RATE, stored_rate, quality="HQ")
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(stored, -1, 1), stored_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def wav(samples: Samples, rate: int = 16000) -> bytes:
    """A 16-bit WAV file of mono `samples`, as the wideband original would be stored."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1, 1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
