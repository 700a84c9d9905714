"""Telephone versions of real speech, made through real codec chains, for calibration and tests.

No telephone corpus can be had here, so narrowband speech is made from the wideband speech
that can: each chain band-passes 16 kHz speech to the telephone band (about 300-3400 Hz, as
ITU-T G.712 channel filters do), resamples it to 8 kHz with soxr, then encodes it with a real
speech codec and decodes it again:

- `g711-mulaw`, `g711-alaw`: G.711 at 64 kbit/s (FFmpeg's pcm_mulaw / pcm_alaw through PyAV);
- `gsm610`: GSM 06.10 full rate, 13 kbit/s (libsndfile's GSM610 WAV);
- `g726-32k`: G.726 ADPCM at 32 kbit/s (FFmpeg's g726);
- `amr-nb-12k2`: AMR-NB at 12.2 kbit/s, the mobile-phone codec (OpenCORE through PyAV);
- `opus-nb-8k`: Opus at 8 kbit/s, narrowband, VoIP mode (libopus through PyAV).

`narrowband-only` is the band-pass and 8 kHz resampling without a codec: the "narrowband
simulation" of a wideband recording that bandwidth matching scores instead of the recording.

Each result is stored twice, at 8 kHz and resampled back to 16 kHz (as telephone audio often
arrives), as 16-bit WAV in the test cache (`tools.corpora.cache_dir()/telephone`), named by a
hash of the input samples and the chain, so a rerun reads instead of encoding again. The chains
are deterministic: the same input gives the same files.

    .venv/bin/python -m tools.telephone   # makes every chain of the AN4 utterances, prints SNRs
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import soundfile
import soxr
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream

from tools import corpora

WIDEBAND_RATE = 16_000
TELEPHONE_RATE = 8_000
BAND_LOW_HZ = 300.0
BAND_HIGH_HZ = 3_400.0
_BAND_TAPS = 511
"""Kaiser-windowed FIR length at 16 kHz: transitions about 150 Hz wide, stop band below -80 dB."""
_KAISER_BETA = 8.0
_FRAME = 160
"""20 ms at 8 kHz: the frame of GSM, AMR and of the Opus packets made here."""
_CACHE_VERSION = "v1"

FloatArray = npt.NDArray[np.float32]


def band_pass(samples: FloatArray, rate: int = WIDEBAND_RATE) -> FloatArray:
    """The telephone band (BAND_LOW_HZ to BAND_HIGH_HZ) of a signal; linear phase, no delay."""
    centre = np.arange(_BAND_TAPS) - (_BAND_TAPS - 1) / 2
    high, low = 2 * BAND_HIGH_HZ / rate, 2 * BAND_LOW_HZ / rate
    taps = (high * np.sinc(high * centre) - low * np.sinc(low * centre)) * np.kaiser(
        _BAND_TAPS, _KAISER_BETA
    )
    filtered: FloatArray = np.convolve(samples.astype(np.float64), taps, mode="same").astype(
        np.float32
    )
    return filtered


def to_telephone_band(samples: FloatArray) -> FloatArray:
    """16 kHz speech band-passed and resampled to 8 kHz: what reaches a telephone codec."""
    narrow: FloatArray = soxr.resample(band_pass(samples), WIDEBAND_RATE, TELEPHONE_RATE, "HQ")
    return narrow.astype(np.float32)


def upsample(samples: FloatArray) -> FloatArray:
    """8 kHz audio at 16 kHz, as telephone recordings are often delivered."""
    wide: FloatArray = soxr.resample(samples, TELEPHONE_RATE, WIDEBAND_RATE, "HQ")
    return wide.astype(np.float32)


def _pcm16(samples: FloatArray) -> npt.NDArray[np.int16]:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)


def _through_pyav(
    codec: str, container: str, bit_rate: int | None = None, options: dict[str, str] | None = None
) -> Callable[[FloatArray], tuple[FloatArray, int]]:
    """A round trip through an FFmpeg encoder and its decoder, in a real container (which carries
    what the decoder needs, such as G.726's bits per sample)."""

    def round_trip(narrow: FloatArray) -> tuple[FloatArray, int]:
        encoded = io.BytesIO()
        pcm = _pcm16(narrow)
        with av.open(encoded, "w", format=container) as output:
            stream = output.add_stream(codec, rate=TELEPHONE_RATE, layout="mono")
            assert isinstance(stream, AudioStream)
            if bit_rate is not None:
                stream.codec_context.bit_rate = bit_rate
            if options:
                stream.codec_context.options = options
            for start in range(0, pcm.size, _FRAME):
                frame = AudioFrame.from_ndarray(
                    pcm[None, start : start + _FRAME], format="s16", layout="mono"
                )
                frame.sample_rate = TELEPHONE_RATE
                frame.pts = start
                for packet in stream.encode(frame):
                    output.mux(packet)
            for packet in stream.encode(None):
                output.mux(packet)
        payload = encoded.getvalue()
        pieces: list[FloatArray] = []
        decoded_rate = TELEPHONE_RATE
        with av.open(io.BytesIO(payload), "r") as source:
            audio = source.streams.audio[0]
            for decoded in source.decode(audio):
                decoded_rate = decoded.sample_rate
                array = decoded.to_ndarray().reshape(-1)
                if array.dtype == np.int16:
                    pieces.append(array.astype(np.float32) / 32768.0)
                else:
                    pieces.append(array.astype(np.float32))
        result = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if decoded_rate != TELEPHONE_RATE:
            # The Opus decoder answers at 48 kHz whatever was encoded.
            result = soxr.resample(result, decoded_rate, TELEPHONE_RATE, "HQ").astype(np.float32)
        return result, len(payload)

    return round_trip


def _through_gsm610(narrow: FloatArray) -> tuple[FloatArray, int]:
    encoded = io.BytesIO()
    soundfile.write(encoded, _pcm16(narrow), TELEPHONE_RATE, subtype="GSM610", format="WAV")
    payload = encoded.getvalue()
    decoded, _ = soundfile.read(io.BytesIO(payload), dtype="float32")
    return decoded.astype(np.float32), len(payload)


def _no_codec(narrow: FloatArray) -> tuple[FloatArray, int]:
    return _pcm16(narrow).astype(np.float32) / 32768.0, 2 * narrow.size


@dataclass(frozen=True)
class Chain:
    name: str
    description: str
    bit_rate: int
    """The codec's nominal bits per second (PCM 128 kbit/s for `narrowband-only`)."""
    round_trip: Callable[[FloatArray], tuple[FloatArray, int]]
    """8 kHz band-limited samples -> (decoded 8 kHz samples, bytes of the encoded file)."""


CODEC_CHAINS: tuple[Chain, ...] = (
    Chain(
        "g711-mulaw",
        "G.711 mu-law, 64 kbit/s",
        64_000,
        _through_pyav("pcm_mulaw", "wav"),
    ),
    Chain("g711-alaw", "G.711 A-law, 64 kbit/s", 64_000, _through_pyav("pcm_alaw", "wav")),
    Chain("gsm610", "GSM 06.10 full rate, 13 kbit/s", 13_000, _through_gsm610),
    Chain(
        "g726-32k", "G.726 ADPCM, 32 kbit/s", 32_000, _through_pyav("g726", "wav", bit_rate=32_000)
    ),
    Chain(
        "amr-nb-12k2",
        "AMR-NB 12.2 kbit/s",
        12_200,
        _through_pyav("amr_nb", "amr", bit_rate=12_200),
    ),
    Chain(
        "opus-nb-8k",
        "Opus narrowband, 8 kbit/s, VoIP mode",
        8_000,
        _through_pyav("libopus", "ogg", bit_rate=8_000, options={"application": "voip"}),
    ),
)
"""The telephone channels that calibration is fitted and judged on."""

NARROWBAND_ONLY = Chain("narrowband-only", "band-pass and 8 kHz, no codec", 128_000, _no_codec)
"""The narrowband simulation of a wideband recording (bandwidth matching)."""

CHAINS: dict[str, Chain] = {chain.name: chain for chain in (*CODEC_CHAINS, NARROWBAND_ONLY)}


def through_chain(samples: FloatArray, chain: Chain) -> FloatArray:
    """16 kHz speech through a telephone chain: the decoded 8 kHz samples."""
    decoded, _ = chain.round_trip(to_telephone_band(samples))
    return decoded


@dataclass(frozen=True)
class TelephoneFiles:
    chain: str
    narrowband: Path
    """The decoded audio at 8 kHz (16-bit WAV)."""
    upsampled: Path
    """The same, resampled to 16 kHz (16-bit WAV)."""


def telephone_dir() -> Path:
    return corpora.cache_dir() / "telephone" / _CACHE_VERSION


def content_key(samples: FloatArray, chain: str) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    digest.update(chain.encode("utf-8"))
    return digest.hexdigest()[:24]


def telephone_files(samples: FloatArray, chain: Chain, cache: Path | None = None) -> TelephoneFiles:
    """The 8 kHz and 16 kHz files of 16 kHz `samples` through `chain`, made once and cached
    (under `cache`, by default `telephone_dir()`)."""
    key = content_key(samples, chain.name)
    folder = (cache or telephone_dir()) / chain.name
    narrowband = folder / f"{key}.8k.wav"
    upsampled = folder / f"{key}.16k.wav"
    if not (narrowband.exists() and upsampled.exists()):
        decoded = through_chain(samples, chain)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(narrowband, decoded, TELEPHONE_RATE)
        _write_atomically(upsampled, upsample(decoded), WIDEBAND_RATE)
    return TelephoneFiles(chain.name, narrowband, upsampled)


def _write_atomically(path: Path, samples: FloatArray, rate: int) -> None:
    # The cache is shared by concurrent runs: a reader must never see half a file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(handle)
    try:
        soundfile.write(temporary, _pcm16(samples), rate, subtype="PCM_16", format="WAV")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


STORED_RATES = (TELEPHONE_RATE, WIDEBAND_RATE, 44_100)
"""Rates telephone audio arrives at: as it left the codec, or resampled by whatever stored it."""


def telephone_wav(samples: FloatArray, chain: str, stored_rate: int = TELEPHONE_RATE) -> bytes:
    """The bytes of a 16-bit WAV file of 16 kHz `samples` after the chain named `chain`, stored
    at `stored_rate`: a file to hand to extraction as a user would (not cached)."""
    decoded = through_chain(samples, CHAINS[chain])
    if stored_rate != TELEPHONE_RATE:
        decoded = soxr.resample(decoded, TELEPHONE_RATE, stored_rate, "HQ").astype(np.float32)
    return wav_bytes(decoded, stored_rate)


def wav_bytes(samples: FloatArray, rate: int = WIDEBAND_RATE) -> bytes:
    """The bytes of a 16-bit mono WAV file of `samples`."""
    buffer = io.BytesIO()
    soundfile.write(buffer, _pcm16(samples), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def high_band_share(samples: FloatArray, rate: int, above_hz: float = 4_000.0) -> float:
    """The share of a signal's energy above `above_hz` (0 for a silent signal)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(samples.size, 1 / rate)
    total = float(spectrum.sum())
    return float(spectrum[frequencies > above_hz].sum()) / total if total > 0 else 0.0


def main() -> int:
    for item in corpora.an4_files():
        samples = corpora.load(item.path)
        aligned = soxr.resample(band_pass(samples), WIDEBAND_RATE, TELEPHONE_RATE, "HQ")
        line = [f"{item.name:18s}"]
        for chain in CHAINS.values():
            files = telephone_files(samples, chain)
            decoded, _ = soundfile.read(files.narrowband, dtype="float32")
            line.append(f"{chain.name} {_snr_db(aligned, decoded):5.1f} dB")
        print(", ".join(line))
    return 0


def _snr_db(reference: npt.NDArray[np.float64], decoded: FloatArray) -> float:
    """SNR of a decoded signal against its codec input, at the best alignment (codec delay)."""
    length = min(reference.size, decoded.size) - 800
    best = -np.inf
    for delay in range(0, 400):
        error = decoded[delay : delay + length] - reference[:length]
        snr = 10 * np.log10(np.sum(reference[:length] ** 2) / max(np.sum(error**2), 1e-20))
        best = max(best, float(snr))
    return best


if __name__ == "__main__":
    sys.exit(main())
