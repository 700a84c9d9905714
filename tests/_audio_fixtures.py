"""Real speech and helpers shared by the audio, VAD and corpora tests.

The speech comes from `tools.corpora` (fetched from the registries once per machine and
cached); nothing here is synthetic except where a test needs silence or noise.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import av
import numpy as np
import soxr
from numpy.typing import NDArray

from tools import corpora
from voxmatch.vad import SILERO_VAD_STREAMING, VoiceActivityDetector

SAMPLE_RATE = 16000

# Two stretches of AMI meeting speech, each with one speaker alone (see debug.*.rttm):
# MEE009 in dev00.wav, and MEO069's neighbour MEE068 in trñ00.wav (RTTM URI trn00).
FIRST_SPEAKER = ("dev00", 2.0, 8.0)
SECOND_SPEAKER = ("trn00", 11.1, 15.6)


@functools.cache
def speech(
    uri: str = FIRST_SPEAKER[0], start: float = FIRST_SPEAKER[1], end: float = 8.0
) -> NDArray[np.float32]:
    """Real speech at 16 kHz, mono."""
    samples = corpora.load(corpora.ami_path(uri), start, end)
    samples.setflags(write=False)
    return samples


@functools.cache
def two_speakers() -> NDArray[np.float32]:
    """2 x N at 16 kHz: a different real speaker on each channel, same length."""
    first = speech(*FIRST_SPEAKER)
    second = speech(*SECOND_SPEAKER)
    length = min(first.shape[0], second.shape[0])
    stereo = np.stack((first[:length], second[:length]))
    stereo.setflags(write=False)
    return stereo


def at_rate(samples: NDArray[np.float32], rate: int) -> NDArray[np.float32]:
    """16 kHz rows resampled to `rate` (channels x samples in, channels x samples out)."""
    if rate == SAMPLE_RATE:
        return np.array(samples, dtype=np.float32)
    rows = np.atleast_2d(samples)
    resampled = soxr.resample(np.ascontiguousarray(rows.T), SAMPLE_RATE, rate, quality="VHQ")
    return np.ascontiguousarray(
        np.asarray(resampled, dtype=np.float32).T.reshape(rows.shape[0], -1)
    )


def band_limited(samples: NDArray[np.float32], rate: int) -> NDArray[np.float32]:
    """What is left of 16 kHz rows after a trip through `rate`: the reference for a decode."""
    if rate >= SAMPLE_RATE:
        return samples
    return at_rate_back(at_rate(samples, rate), rate)


def at_rate_back(samples: NDArray[np.float32], rate: int) -> NDArray[np.float32]:
    rows = np.ascontiguousarray(np.atleast_2d(samples).T)
    resampled = soxr.resample(rows, rate, SAMPLE_RATE, quality="VHQ")
    return np.ascontiguousarray(np.asarray(resampled, dtype=np.float32).T)


def best_correlation(
    reference: NDArray[np.float32], other: NDArray[np.float32], max_lag: int
) -> float:
    """Largest normalised cross-correlation of two signals over lags up to `max_lag` samples.

    Lossy codecs delay the signal by their priming samples unless the container says so; the
    search over lags makes the check about the content, not the alignment.
    """
    length = min(reference.shape[0], other.shape[0])
    a = reference[:length].astype(np.float64)
    b = other[:length].astype(np.float64)
    # An 8-bit codec's rounding leaves a small DC offset; it says nothing about the content.
    a -= a.mean()
    b -= b.mean()
    size = 1 << int(np.ceil(np.log2(2 * length)))
    spectrum = np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size))
    correlation = np.fft.irfft(spectrum, size)
    lags = np.concatenate((correlation[: max_lag + 1], correlation[-max_lag:]))
    return float(np.max(lags) / (np.linalg.norm(a) * np.linalg.norm(b)))


def encode_with_pyav(
    samples: NDArray[np.float32],
    rate: int,
    container_format: str,
    codec: str,
) -> bytes:
    """Encode channels x samples floats with FFmpeg into a file's bytes."""
    channels = samples.shape[0]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(
            codec, rate=rate, layout="stereo" if channels == 2 else "mono"
        )
        assert isinstance(stream, av.audio.stream.AudioStream)
        planar = np.ascontiguousarray(samples, dtype=np.float32)
        step = 1024
        for begin in range(0, planar.shape[1], step):
            chunk = planar[:, begin : begin + step]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk.T.reshape(1, -1)),
                format="flt",
                layout=stream.layout.name,
            )
            frame.sample_rate = rate
            frame.pts = begin
            # PyAV converts the sample format and re-chunks to the codec's frame size itself.
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@functools.cache
def detector() -> VoiceActivityDetector:
    """The default (sequence-form) Silero VAD, fetched into the shared test cache."""
    return VoiceActivityDetector.from_registry(corpora.models_cache_dir())


@functools.cache
def streaming_detector() -> VoiceActivityDetector:
    """The streaming form of the same network, one window per call."""
    return VoiceActivityDetector.from_registry(
        corpora.models_cache_dir(), asset=SILERO_VAD_STREAMING
    )


def write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path
