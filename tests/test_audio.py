"""voxmatch.audio on real speech: every format round-tripped, raw PCM, ranges, channels, errors."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from _audio_fixtures import (
    SAMPLE_RATE,
    at_rate,
    band_limited,
    best_correlation,
    encode_with_pyav,
    speech,
    two_speakers,
    write,
)
from tools import corpora
from voxmatch.audio import (
    AudioError,
    DecodedAudio,
    RawAudioFormat,
    RawEncoding,
    TimeRange,
    decode,
    parse_channel_mode,
)


def _encode_with_soundfile(
    samples: NDArray[np.float32], rate: int, fmt: str, subtype: str
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(samples.T), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _assert_same_speech(
    decoded: DecodedAudio, original: NDArray[np.float32], *, min_correlation: float
) -> None:
    """Each decoded channel is its own original channel, not the other one."""
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.shape[0] == original.shape[0]
    for index in range(original.shape[0]):
        own = best_correlation(original[index], decoded.samples[index], max_lag=3000)
        assert own >= min_correlation, f"channel {index}: correlation {own:.4f}"
        if original.shape[0] > 1:
            other = best_correlation(original[1 - index], decoded.samples[index], max_lag=3000)
            assert other < 0.5, f"channel {index} looks like channel {1 - index} ({other:.3f})"


# --- Real files as the corpora ship them ----------------------------------------------------


def test_real_float_wav_with_non_ascii_name_decodes_from_path_and_bytes() -> None:
    path = corpora.ami_path("trn00")
    assert path.name == "trñ00.wav"
    from_path = decode(path)
    from_bytes = decode(path.read_bytes())
    reference, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    for decoded in (from_path, from_bytes):
        assert decoded.sample_rate == SAMPLE_RATE
        assert decoded.original_sample_rate == SAMPLE_RATE
        assert decoded.original_channels == 1
        assert decoded.channel_numbers == (0,)
        assert decoded.original_duration == pytest.approx(480_001 / SAMPLE_RATE)
        np.testing.assert_array_equal(decoded.samples[0], reference)


def _sphere_header(path: Path) -> dict[str, int]:
    header = path.read_bytes()[:1024].decode("ascii", "replace").splitlines()
    fields = (line.split() for line in header)
    return {field[0]: int(field[2]) for field in fields if len(field) == 3 and field[1] == "-i"}


def test_an4_sphere_files_decode_to_their_header_figures() -> None:
    for speech_file in corpora.an4_files():
        header = _sphere_header(speech_file.path)
        decoded = decode(speech_file.path)
        assert decoded.original_sample_rate == header["sample_rate"] == SAMPLE_RATE
        assert decoded.samples.shape == (1, header["sample_count"])
        # The header's checksum is the sum of the 16-bit samples modulo 2**16: matching it shows
        # byte order and scaling are right, which the length alone would not.
        integers = np.round(decoded.samples[0].astype(np.float64) * 32768).astype(np.int64)
        assert int(integers.sum()) % 65536 == header["sample_checksum"]


def test_librivox_wavs_decode() -> None:
    files = corpora.librivox_files()
    durations = [decode(f.path).duration for f in files]
    assert len(durations) == 5
    assert all(2.5 < seconds < 8 for seconds in durations)


# --- Every format, encoded from real speech and decoded back --------------------------------

LOSSLESS_FORMATS = [
    ("WAV", "PCM_16", 16000),
    ("WAV", "PCM_24", 44100),
    ("WAV", "PCM_32", 48000),
    ("WAV", "FLOAT", 22050),
    ("WAV", "DOUBLE", 32000),
    ("FLAC", "PCM_16", 44100),
    ("FLAC", "PCM_24", 96000),
    ("NIST", "PCM_16", 16000),
    ("AIFF", "PCM_16", 22050),
    ("RF64", "PCM_16", 48000),
    ("W64", "PCM_24", 16000),
]
NEAR_LOSSLESS_FORMATS = [
    ("WAV", "PCM_U8", 8000, 0.9),
    ("WAV", "ALAW", 8000, 0.98),
    ("WAV", "ULAW", 8000, 0.98),
    ("NIST", "ULAW", 8000, 0.98),
    ("WAV", "MS_ADPCM", 16000, 0.98),
    ("WAV", "IMA_ADPCM", 8000, 0.98),
    ("OGG", "VORBIS", 44100, 0.98),
    ("OGG", "OPUS", 48000, 0.98),
    ("MP3", "MPEG_LAYER_III", 44100, 0.98),
]


@pytest.mark.parametrize(("fmt", "subtype", "rate"), LOSSLESS_FORMATS)
def test_lossless_formats_round_trip(fmt: str, subtype: str, rate: int) -> None:
    original = two_speakers()
    payload = _encode_with_soundfile(at_rate(original, rate), rate, fmt, subtype)
    decoded = decode(payload)
    assert decoded.original_sample_rate == rate
    assert decoded.original_channels == 2
    assert decoded.sample_rate == SAMPLE_RATE
    assert decoded.samples.shape == original.shape
    assert decoded.original_duration == pytest.approx(original.shape[1] / SAMPLE_RATE, abs=1e-4)
    _assert_same_speech(decoded, original, min_correlation=0.999)


@pytest.mark.parametrize(("fmt", "subtype", "rate", "min_correlation"), NEAR_LOSSLESS_FORMATS)
def test_lossy_formats_round_trip(
    fmt: str, subtype: str, rate: int, min_correlation: float
) -> None:
    original = two_speakers()
    payload = _encode_with_soundfile(at_rate(original, rate), rate, fmt, subtype)
    decoded = decode(payload)
    assert decoded.original_sample_rate == rate
    assert decoded.original_channels == 2
    original = band_limited(original, rate)
    # Block codecs round the length up to whole blocks; none adds more than 0.1 s.
    assert decoded.duration == pytest.approx(original.shape[1] / SAMPLE_RATE, abs=0.1)
    _assert_same_speech(decoded, original, min_correlation=min_correlation)


@pytest.mark.parametrize(
    ("container_format", "codec", "rate", "suffix"),
    [
        ("ipod", "aac", 44100, ".m4a"),
        ("matroska", "aac", 48000, ".mka"),
        ("mp3", "libmp3lame", 44100, ".mp3"),
        ("ogg", "libopus", 48000, ".opus"),
        ("adts", "aac", 22050, ".aac"),
        ("ipod", "alac", 44100, ".m4a"),
    ],
)
def test_ffmpeg_encoded_files_round_trip_from_bytes_and_path(
    container_format: str, codec: str, rate: int, suffix: str, tmp_path: Path
) -> None:
    original = two_speakers()
    payload = encode_with_pyav(at_rate(original, rate), rate, container_format, codec)
    path = write(tmp_path / f"speech{suffix}", payload)
    for decoded in (decode(payload), decode(path)):
        assert decoded.original_sample_rate == rate
        assert decoded.original_channels == 2
        assert decoded.duration == pytest.approx(original.shape[1] / SAMPLE_RATE, abs=0.1)
        _assert_same_speech(decoded, original, min_correlation=0.98)


def test_mono_and_many_channel_files() -> None:
    mono = speech()
    decoded = decode(_encode_with_soundfile(mono[np.newaxis], 8000, "WAV", "PCM_16"))
    assert decoded.samples.shape[0] == 1
    assert decoded.original_sample_rate == 8000
    four = np.stack([mono, -mono, 0.5 * mono, np.zeros_like(mono)])
    decoded = decode(_encode_with_soundfile(four, SAMPLE_RATE, "WAV", "FLOAT"))
    assert decoded.channel_numbers == (0, 1, 2, 3)
    np.testing.assert_allclose(decoded.samples, four, atol=1e-7)


@pytest.mark.parametrize("stated_size", [0, 0xFFFFFFFF])
def test_wav_from_a_stream_whose_header_was_never_finalised(stated_size: int) -> None:
    original = speech()
    payload = bytearray(_encode_with_soundfile(original[np.newaxis], SAMPLE_RATE, "WAV", "PCM_16"))
    data_chunk = payload.index(b"data")
    size = stated_size.to_bytes(4, "little")
    payload[4:8] = size
    payload[data_chunk + 4 : data_chunk + 8] = size
    decoded = decode(bytes(payload))
    np.testing.assert_allclose(decoded.samples[0], original, atol=1 / 32767)


def test_rate_conversion_keeps_the_speech() -> None:
    original = speech()[np.newaxis]
    for rate in (8000, 11025, 24000, 44100, 48000):
        decoded = decode(_encode_with_soundfile(at_rate(original, rate), rate, "WAV", "FLOAT"))
        assert decoded.samples.shape[1] == pytest.approx(original.shape[1], abs=2)
        # 8 kHz and 11 kHz lose the band above their Nyquist frequency, and speech a little.
        floor = 0.97 if rate < SAMPLE_RATE else 0.9999
        assert best_correlation(original[0], decoded.samples[0], max_lag=8) >= floor


def test_other_target_rates() -> None:
    original = speech()[np.newaxis]
    decoded = decode(
        _encode_with_soundfile(original, SAMPLE_RATE, "WAV", "FLOAT"), sample_rate=8000
    )
    assert decoded.sample_rate == 8000
    assert decoded.samples.shape[1] == original.shape[1] // 2


# --- Headerless PCM as the gRPC RawAudioConfig describes it -------------------------------------


def _pcm16(samples: NDArray[np.float32]) -> bytes:
    interleaved = np.ascontiguousarray(samples.T).reshape(-1)
    return bytes(np.round(interleaved * 32767).astype("<i2").tobytes())


def _pcm32(samples: NDArray[np.float32]) -> bytes:
    interleaved = np.ascontiguousarray(samples.T).reshape(-1).astype(np.float64)
    return bytes(np.round(interleaved * 2_147_483_647).astype("<i4").tobytes())


def _g711(samples: NDArray[np.float32], rate: int, codec: str) -> bytes:
    """Raw A-law or mu-law bytes made by FFmpeg, independent of the libsndfile we decode with."""
    muxer = {"pcm_alaw": "alaw", "pcm_mulaw": "mulaw"}[codec]
    return encode_with_pyav(samples, rate, muxer, codec)


@pytest.mark.parametrize(
    ("encoding", "rate", "min_correlation"),
    [
        (RawEncoding.PCM16, 16000, 0.9999),
        (RawEncoding.PCM16, 8000, 0.999),
        (RawEncoding.PCM32, 44100, 0.9999),
        (RawEncoding.MULAW, 8000, 0.98),
        (RawEncoding.ALAW, 8000, 0.98),
    ],
)
def test_raw_audio(encoding: RawEncoding, rate: int, min_correlation: float) -> None:
    original = two_speakers()
    at_source = np.clip(at_rate(original, rate), -1, 1)
    payload = {
        RawEncoding.PCM16: lambda: _pcm16(at_source),
        RawEncoding.PCM32: lambda: _pcm32(at_source),
        RawEncoding.MULAW: lambda: _g711(at_source, rate, "pcm_mulaw"),
        RawEncoding.ALAW: lambda: _g711(at_source, rate, "pcm_alaw"),
    }[encoding]()
    layout = RawAudioFormat(encoding, rate, channels=2)
    decoded = decode(payload, raw=layout)
    assert decoded.original_sample_rate == rate
    assert decoded.original_channels == 2
    assert decoded.original_duration == pytest.approx(at_source.shape[1] / rate)
    _assert_same_speech(decoded, band_limited(original, rate), min_correlation=min_correlation)
    if rate == SAMPLE_RATE and encoding == RawEncoding.PCM16:
        np.testing.assert_allclose(decoded.samples, original, atol=1.0 / 32767)


def test_raw_audio_from_a_path_with_a_time_range(tmp_path: Path) -> None:
    mono = speech()[np.newaxis]
    path = write(tmp_path / "speech.raw", _pcm16(mono))
    decoded = decode(
        path, raw=RawAudioFormat(RawEncoding.PCM16, SAMPLE_RATE), time_range=TimeRange(1.0, 2.5)
    )
    np.testing.assert_allclose(
        decoded.samples[0], mono[0, SAMPLE_RATE : 2 * SAMPLE_RATE + SAMPLE_RATE // 2], atol=1e-4
    )
    assert decoded.start == 1.0
    assert decoded.original_duration == pytest.approx(mono.shape[1] / SAMPLE_RATE)


def test_raw_encoding_may_be_given_as_the_grpc_number_or_name() -> None:
    assert RawAudioFormat(2, 8000).encoding is RawEncoding.MULAW  # type: ignore[arg-type]
    assert RawAudioFormat("alaw", 8000).encoding is RawEncoding.ALAW  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((7, 8000, 1), "unsupported raw audio encoding 7"),
        (("OPUS", 8000, 1), "unsupported raw audio encoding 'OPUS'"),
        ((RawEncoding.PCM16, 0, 1), "sample rate"),
        ((RawEncoding.PCM16, 8000, 0), "channels"),
    ],
)
def test_bad_raw_layouts_are_refused(arguments: tuple[object, int, int], message: str) -> None:
    with pytest.raises(AudioError, match=message):
        RawAudioFormat(*arguments)  # type: ignore[arg-type]


def test_raw_audio_that_is_not_whole_frames_is_refused() -> None:
    with pytest.raises(AudioError, match="not a whole number of frames"):
        decode(b"\x00" * 1001, raw=RawAudioFormat(RawEncoding.PCM16, 8000, channels=2))


# --- Time ranges ---------------------------------------------------------------------------


def test_time_range_cuts_exactly_at_16k() -> None:
    path = corpora.ami_path("dev00")
    whole = decode(path).samples[0]
    part = decode(path, time_range=TimeRange(3.25, 7.5))
    np.testing.assert_array_equal(part.samples[0], whole[52_000:120_000])
    assert part.start == 3.25
    assert part.original_duration == pytest.approx(30.0, abs=1e-3)
    head = decode(path, time_range=TimeRange(end=2.0))
    np.testing.assert_array_equal(head.samples[0], whole[:32_000])
    tail = decode(path, time_range=TimeRange(start=29.0))
    np.testing.assert_array_equal(tail.samples[0], whole[464_000:])


def test_time_range_end_past_the_audio_is_cut_to_it() -> None:
    path = corpora.ami_path("dev00")
    decoded = decode(path, time_range=TimeRange(28.0, 99.0))
    assert decoded.duration == pytest.approx(2.0, abs=1e-3)


def test_time_range_before_resampling_matches_resampling_then_cutting() -> None:
    original = speech()[np.newaxis]
    payload = _encode_with_soundfile(at_rate(original, 44100), 44100, "FLAC", "PCM_24")
    part = decode(payload, time_range=TimeRange(1.0, 3.0))
    assert part.duration == pytest.approx(2.0, abs=1e-3)
    assert best_correlation(original[0, 16_000:48_000], part.samples[0], max_lag=4) > 0.999


def test_time_range_on_ffmpeg_decoded_audio_stops_at_its_end() -> None:
    original = two_speakers()
    payload = encode_with_pyav(at_rate(original, 44100), 44100, "ipod", "aac")
    whole = decode(payload)
    part = decode(payload, time_range=TimeRange(1.0, 2.0))
    assert part.duration == pytest.approx(1.0, abs=1e-3)
    assert part.original_duration == pytest.approx(whole.original_duration, abs=0.05)
    assert best_correlation(whole.samples[0, 16_000:32_000], part.samples[0], max_lag=4) > 0.99


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (-1.0, None, "start must be a finite number >= 0"),
        (None, -2.0, "end must be a finite number >= 0"),
        (float("nan"), None, "start must be"),
        (None, float("inf"), "end must be"),
        (5.0, 5.0, "must be after its start"),
        (6.0, 2.0, "must be after its start"),
    ],
)
def test_bad_time_ranges_are_refused(start: float | None, end: float | None, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        TimeRange(start, end)


def test_time_range_after_the_end_is_refused_for_every_backend() -> None:
    original = speech()[np.newaxis]
    wav = _encode_with_soundfile(original, SAMPLE_RATE, "WAV", "PCM_16")
    m4a = encode_with_pyav(original, SAMPLE_RATE, "ipod", "aac")
    raw = _pcm16(original)
    for payload, layout in ((wav, None), (m4a, None), (raw, RawAudioFormat(0, SAMPLE_RATE))):  # type: ignore[arg-type]
        with pytest.raises(AudioError, match="time range starts at 60 s"):
            decode(payload, raw=layout, time_range=TimeRange(60.0))


# --- Channels ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stereo_wav() -> bytes:
    return _encode_with_soundfile(two_speakers(), SAMPLE_RATE, "WAV", "FLOAT")


def test_split_gives_each_channel_with_its_number(stereo_wav: bytes) -> None:
    decoded = decode(stereo_wav)
    signals = decoded.signals("split")
    assert [signal.channel_number for signal in signals] == [0, 1]
    np.testing.assert_array_equal(signals[0].samples, two_speakers()[0])
    np.testing.assert_array_equal(signals[1].samples, two_speakers()[1])
    assert signals[1].duration == pytest.approx(two_speakers().shape[1] / SAMPLE_RATE)


def test_mix_is_the_average_of_the_selected_channels(stereo_wav: bytes) -> None:
    decoded = decode(stereo_wav)
    (mixed,) = decoded.signals("mix")
    assert mixed.channel_number == 0
    np.testing.assert_allclose(mixed.samples, two_speakers().mean(axis=0), atol=1e-7)
    (only_second,) = decoded.signals("mix", [1])
    np.testing.assert_array_equal(only_second.samples, two_speakers()[1])


def test_channel_selection_while_decoding(stereo_wav: bytes) -> None:
    decoded = decode(stereo_wav, channels=[1])
    assert decoded.channel_numbers == (1,)
    assert decoded.original_channels == 2
    np.testing.assert_array_equal(decoded.channel(1), two_speakers()[1])
    assert [s.channel_number for s in decoded.signals("split")] == [1]
    reordered = decode(stereo_wav, channels=[1, 0])
    np.testing.assert_array_equal(reordered.samples, two_speakers()[::-1])
    with pytest.raises(AudioError, match="channel 0 was not decoded"):
        decoded.channel(0)


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        ([2], "channel 2 does not exist: the audio has 2 channels"),
        ([0, 5], "channel 5 does not exist"),
        ([-1], "channel -1 does not exist"),
        ([0, 0], "channel 0 is listed twice"),
        ([], "channel list is empty"),
    ],
)
def test_bad_channel_lists_are_refused(
    stereo_wav: bytes, channels: list[int], message: str
) -> None:
    with pytest.raises(AudioError, match=message):
        decode(stereo_wav, channels=channels)
    decoded = decode(stereo_wav)
    with pytest.raises(AudioError, match=message):
        decoded.signals("split", channels)
    with pytest.raises(AudioError, match=message):
        decoded.signals("mix", channels)


def test_bad_channel_is_refused_by_the_ffmpeg_path_too() -> None:
    m4a = encode_with_pyav(at_rate(two_speakers(), 44100), 44100, "ipod", "aac")
    with pytest.raises(AudioError, match="channel 3 does not exist: the audio has 2 channels"):
        decode(m4a, channels=[3])
    assert decode(m4a, channels=[1]).channel_numbers == (1,)


def test_bad_channel_mode_is_refused() -> None:
    assert parse_channel_mode("split") == "split"
    assert parse_channel_mode("mix") == "mix"
    with pytest.raises(AudioError, match="channel_mode must be 'split' or 'mix'"):
        parse_channel_mode("stereo")


# --- Errors ----------------------------------------------------------------------------------


def test_empty_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        decode(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        decode(write(tmp_path / "empty.wav", b""))


def test_missing_file_is_an_audio_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="No such file"):
        decode(tmp_path / "absent.wav")


@pytest.mark.parametrize(
    "payload",
    [
        b"This is a text file, not audio at all.\n" * 10,
        bytes(range(256)) * 8,
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"%PDF-1.4\n" + b"\x00" * 500,
    ],
)
def test_non_audio_is_refused(payload: bytes) -> None:
    with pytest.raises(AudioError, match="not a readable audio file"):
        decode(payload)


def test_zero_length_audio_is_refused() -> None:
    empty_wav = _encode_with_soundfile(np.zeros((1, 0), np.float32), SAMPLE_RATE, "WAV", "PCM_16")
    with pytest.raises(AudioError, match="no samples"):
        decode(empty_wav)


def test_a_file_without_audio_stream_is_refused() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioError, match="no audio stream"):
        decode(buffer.getvalue())


def test_too_long_audio_is_refused_before_it_is_all_decoded() -> None:
    # An hour of silence is a few kB of FLAC: the decompression bomb the limit is there for.
    silence = np.zeros((1, 3600 * 8000), np.float32)
    bomb = _encode_with_soundfile(silence, 8000, "FLAC", "PCM_16")
    assert len(bomb) < 1_000_000
    with pytest.raises(AudioError, match="longer than the allowed maximum of 600 s"):
        decode(bomb, max_duration=600)
    m4a = encode_with_pyav(speech()[np.newaxis], SAMPLE_RATE, "ipod", "aac")
    with pytest.raises(AudioError, match="longer than the allowed maximum of 2 s"):
        decode(m4a, max_duration=2)
    # A range that ends before the limit is fine even when the file is longer.
    assert decode(bomb, max_duration=600, time_range=TimeRange(10, 20)).duration == 10


def test_damaged_files_raise_only_audio_errors() -> None:
    original = speech()[np.newaxis]
    payloads = [
        _encode_with_soundfile(original, SAMPLE_RATE, "WAV", "PCM_16"),
        _encode_with_soundfile(original, 44100, "FLAC", "PCM_16"),
        _encode_with_soundfile(original, 48000, "OGG", "OPUS"),
        _encode_with_soundfile(original, 44100, "MP3", "MPEG_LAYER_III"),
        encode_with_pyav(original, SAMPLE_RATE, "ipod", "aac"),
    ]
    rng = np.random.default_rng(7)
    for payload in payloads:
        damaged = [payload[:cut] for cut in (1, 4, 12, 44, 100, 1000, len(payload) // 2)]
        for _ in range(6):
            noisy = bytearray(payload)
            positions = rng.integers(0, len(noisy), size=20)
            noisy_values = rng.integers(0, 256, size=20)
            for position, value in zip(positions, noisy_values, strict=True):
                noisy[position] = value
            damaged.append(bytes(noisy))
        for candidate in damaged:
            try:
                decoded = decode(candidate)
            except AudioError:
                continue
            assert decoded.samples.dtype == np.float32
            assert np.all(np.isfinite(decoded.samples))


def test_source_type_is_checked() -> None:
    with pytest.raises(TypeError, match="bytes or a path"):
        decode(np.zeros(10))  # type: ignore[arg-type]


def test_path_and_bytes_agree_for_a_copied_corpus_file(tmp_path: Path) -> None:
    source = corpora.an4_files()[0].path
    copy = Path(shutil.copy(source, tmp_path / "äñ ü.sph"))
    np.testing.assert_array_equal(decode(copy).samples, decode(source.read_bytes()).samples)
    assert os.fspath(copy).endswith("äñ ü.sph")


def test_the_duration_limit_counts_every_channel_kept(tmp_path: Path) -> None:
    four_channels = np.random.default_rng(0).uniform(-0.5, 0.5, (48000, 4)).astype(np.float32)
    path = tmp_path / "four.wav"
    sf.write(path, four_channels, 16000)  # 3 s, so 12 channel-seconds
    with pytest.raises(AudioError, match="channels"):
        decode(path, max_duration=5.0)
    one = decode(path, channels=[2], max_duration=5.0)
    assert one.channel_numbers == (2,)
    assert one.duration == pytest.approx(3.0)
