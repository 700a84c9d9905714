"""Decode what users have into float32 samples at 16 kHz, one row per channel.

libsndfile (through soundfile) is tried first: it reads WAV in all its PCM, float, A-law and
mu-law flavours, FLAC, OGG/Vorbis, MP3 and NIST SPHERE, and it can seek, so a time range costs
only the part it covers. Whatever libsndfile cannot open (M4A/AAC, and any odd file it refuses)
goes to FFmpeg through PyAV, and so does OGG/Opus, which FFmpeg decodes twice as fast.
Headerless PCM is read as the Phonexia gRPC `RawAudioConfig` describes it.

Decoding streams block by block: the wanted channels are picked and the time range cut at the
source rate, then each block is resampled with soxr, so memory follows the 16 kHz output rather
than the source, and a decompression bomb is stopped as soon as it decodes past the limit.

Every failure is an `AudioError` (a ValueError) whose message can be shown to the user as is.
"""

from __future__ import annotations

import enum
import io
import math
import os
import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import av
import av.error
import numpy as np
import soundfile
import soxr
from numpy.typing import NDArray

from voxmatch.request_checks import RequestError

SAMPLE_RATE = 16000
"""The rate everything downstream (VAD, speaker model) works at."""
DEFAULT_MAX_DURATION = 2 * 3600.0
"""Seconds of audio decoded at most, unless the caller sets another limit (two hours is
460 MB of float32 per channel at 16 kHz)."""
MAX_CHANNELS = 256
"""Most channels a source may have (so channel numbers run from 0 to 255), in every interface:
a channel above it can never exist."""
MAX_SAMPLE_RATE = 768_000
_BLOCK_SAMPLES = 1 << 20
"""Samples (all channels together) read per block at the source rate."""
_OUTPUT_BLOCK_SAMPLES = 1 << 18
"""Output samples (all channels together) gathered before a block is given out: 16 s of mono
16 kHz, so the many small frames FFmpeg decodes reach the caller in blocks of useful size."""

ChannelMode = Literal["split", "mix"]
Source = bytes | bytearray | memoryview | str | os.PathLike[str]

# What soundfile and PyAV raise for a file they cannot read. Anything else (MemoryError, a bug of
# ours) is left to propagate: turning it into "not audio" would hide it.
_BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,  # soundfile.LibsndfileError derives from it
    OSError,
    ValueError,
    EOFError,
    av.error.FFmpegError,
)


class AudioError(ValueError):
    """The audio cannot be used as given; the message says why, for the user."""


class AudioOptionError(AudioError, RequestError):
    """An option of the request (channels, channel mode, time range) is wrong whatever the audio:
    interfaces name its field."""


class RawEncoding(enum.IntEnum):
    """Sample encodings of headerless audio, numbered as the Phonexia gRPC AudioEncoding enum."""

    PCM16 = 0
    PCM32 = 1
    MULAW = 2
    ALAW = 3


_RAW_SUBTYPES = {
    RawEncoding.PCM16: ("PCM_16", 2),
    RawEncoding.PCM32: ("PCM_32", 4),
    RawEncoding.MULAW: ("ULAW", 1),
    RawEncoding.ALAW: ("ALAW", 1),
}


@dataclass(frozen=True)
class RawAudioFormat:
    """Layout of headerless audio: little-endian, interleaved channels."""

    encoding: RawEncoding
    sample_rate: int
    channels: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoding", _raw_encoding(self.encoding))
        if not 0 < self.sample_rate <= MAX_SAMPLE_RATE:
            raise AudioError(
                f"raw audio sample rate must be 1..{MAX_SAMPLE_RATE} Hz, got {self.sample_rate}"
            )
        if not 0 < self.channels <= MAX_CHANNELS:
            raise AudioError(f"raw audio must have 1..{MAX_CHANNELS} channels, got {self.channels}")

    @property
    def frame_bytes(self) -> int:
        return _RAW_SUBTYPES[self.encoding][1] * self.channels


def _raw_encoding(value: object) -> RawEncoding:
    if isinstance(value, RawEncoding):
        return value
    supported = ", ".join(f"{member.name} ({member.value})" for member in RawEncoding)
    try:
        if isinstance(value, str):
            return RawEncoding[value.strip().upper()]
        if isinstance(value, int) and not isinstance(value, bool):
            return RawEncoding(value)
    except (KeyError, ValueError):
        pass
    raise AudioError(f"unsupported raw audio encoding {value!r}; supported: {supported}")


@dataclass(frozen=True)
class TimeRange:
    """Part of the audio to use, in seconds from its beginning; None means that end is open.

    An end past the end of the audio is cut to it; a start at or past the end is an error,
    since nothing would be left.
    """

    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise AudioOptionError(
                    (name,),
                    "range",
                    f"must be a finite number >= 0, got {value}",
                    subject=f"time range {name}",
                )
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise AudioOptionError(
                ("end",),
                "range",
                f"({self.end:g} s) must be after its start ({self.start:g} s)",
                subject="time range end",
            )


@dataclass(frozen=True)
class ChannelSignal:
    """One signal to process: a source channel, or the mix of several (reported as channel 0)."""

    channel_number: int
    samples: NDArray[np.float32]
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return int(self.samples.shape[0]) / self.sample_rate


@dataclass(frozen=True, eq=False)
class DecodedAudio:
    """Decoded audio with its channels kept apart: `samples` is channels x samples."""

    samples: NDArray[np.float32]
    sample_rate: int
    channel_numbers: tuple[int, ...]
    """The source channel (0-based) of each row of `samples`."""
    original_sample_rate: int
    original_channels: int
    original_duration: float
    """Length of the whole source in seconds, whatever part of it was decoded.

    Exact for files libsndfile reads and for raw audio; for FFmpeg-decoded files read only up to
    the end of a time range, it is the container's stated duration.
    """
    start: float = 0.0
    """Where in the source the samples begin, in seconds."""

    @property
    def duration(self) -> float:
        return int(self.samples.shape[1]) / self.sample_rate

    def channel(self, number: int) -> NDArray[np.float32]:
        """The samples of source channel `number`."""
        row: NDArray[np.float32] = self.samples[self._row(number)]
        return row

    def split(self, channels: Sequence[int] | None = None) -> list[ChannelSignal]:
        """One signal per channel (all decoded channels, or the listed ones in that order)."""
        numbers = self.channel_numbers if channels is None else channels
        return [
            ChannelSignal(number, self.samples[self._row(number)], self.sample_rate)
            for number in _check_channel_list(numbers, self.original_channels)
        ]

    def mix(self, channels: Sequence[int] | None = None) -> ChannelSignal:
        """The average of the channels (all decoded ones, or the listed ones)."""
        numbers = self.channel_numbers if channels is None else channels
        rows = [
            self._row(number) for number in _check_channel_list(numbers, self.original_channels)
        ]
        if len(rows) == 1:
            mixed = self.samples[rows[0]]
        else:
            mixed = self.samples[rows].mean(axis=0, dtype=np.float32)
        return ChannelSignal(0, mixed, self.sample_rate)

    def signals(
        self, channel_mode: str = "split", channels: Sequence[int] | None = None
    ) -> list[ChannelSignal]:
        """The signals an SPE4 request asks for: `split` gives one per channel, `mix` one."""
        mode = parse_channel_mode(channel_mode)
        if mode == "mix":
            return [self.mix(channels)]
        return self.split(channels)

    def _row(self, number: int) -> int:
        _check_channel(number, self.original_channels)
        try:
            return self.channel_numbers.index(number)
        except ValueError:
            raise AudioError(
                f"channel {number} was not decoded (decoded: {list(self.channel_numbers)})"
            ) from None


def parse_channel_mode(value: object) -> ChannelMode:
    if value == "split":
        return "split"
    if value == "mix":
        return "mix"
    raise AudioOptionError(("channel_mode",), "enum", f"must be 'split' or 'mix', got {value!r}")


_CHANNEL_NUMBER = re.compile(r"[0-9]{1,3}")


def parse_channels(text: str) -> list[int] | None:
    """Channels as every interface writes them: 0-based numbers, comma-separated (`0,1`); blank
    text means all channels."""
    if text.strip() == "":
        return None
    numbers = []
    for part in text.split(","):
        part = part.strip()
        if not _CHANNEL_NUMBER.fullmatch(part) or int(part) >= MAX_CHANNELS:
            raise AudioOptionError(
                ("channels",),
                "channels_invalid",
                f"must be like 0,1: channel numbers from 0 to {MAX_CHANNELS - 1}, comma-separated;"
                f" got {text!r}",
            )
        numbers.append(int(part))
    _check_duplicates(numbers)
    return numbers


def decode(
    source: Source,
    *,
    raw: RawAudioFormat | None = None,
    time_range: TimeRange | None = None,
    channels: Sequence[int] | None = None,
    sample_rate: int = SAMPLE_RATE,
    max_duration: float = DEFAULT_MAX_DURATION,
) -> DecodedAudio:
    """Decode a file's bytes, or the file at a path, into float32 rows at `sample_rate`.

    `raw` reads headerless audio of that layout instead of detecting a format. `channels` keeps
    only those source channels (0-based), in that order; None keeps all. `max_duration` is the
    furthest point, in seconds from the start of the source, that decoding may reach.
    """
    stream = stream_audio(
        source,
        raw=raw,
        time_range=time_range,
        channels=channels,
        sample_rate=sample_rate,
        max_duration=max_duration,
    )
    blocks = list(stream)
    samples = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
    return DecodedAudio(
        samples=samples,
        sample_rate=stream.sample_rate,
        channel_numbers=stream.channel_numbers,
        original_sample_rate=stream.original_sample_rate,
        original_channels=stream.original_channels,
        original_duration=stream.original_duration,
        start=stream.start,
    )


class AudioStream:
    """Audio decoded block by block: iterate for float32 blocks of channels x samples.

    The blocks follow each other without gaps or overlap and together are what `decode` returns,
    so memory stays at one block whatever the length. Made by `stream_audio`; iterate it once.
    A problem found while decoding (a damaged file, audio past `max_duration`) raises AudioError
    from the iteration, possibly after some blocks.
    """

    def __init__(
        self, collector: _Collector, blocks: Generator[NDArray[np.float32], None, None]
    ) -> None:
        self._collector = collector
        self._blocks = blocks
        self.sample_rate = collector.request.sample_rate
        self.channel_numbers: tuple[int, ...] = tuple(collector.rows)
        """The source channel (0-based) of each row of the blocks."""
        self.original_sample_rate = collector.source_rate
        self.original_channels = collector.channel_count
        self.start = collector.first / collector.source_rate
        """Where in the source the first block begins, in seconds."""
        self.expected_seconds = collector.expected_seconds
        """Seconds of audio the blocks will hold, if the file says (the container's stated
        duration for FFmpeg-decoded files, exact otherwise); None when unknown."""
        self._original_duration: float | None = None

    @property
    def original_duration(self) -> float:
        """Length of the whole source in seconds (as `DecodedAudio.original_duration`); known
        once every block has been read."""
        if self._original_duration is None:
            raise RuntimeError("the original duration is known once every block has been read")
        return self._original_duration

    def __iter__(self) -> Iterator[NDArray[np.float32]]:
        try:
            for frames in self._blocks:
                yield np.ascontiguousarray(frames.T)
        except _BackendError as failure:
            raise AudioError(f"the audio cannot be decoded to its end: {failure}") from None
        self._original_duration = self._collector.original_duration

    def close(self) -> None:
        """Stop decoding and close the file (for a caller that needs no more blocks)."""
        self._blocks.close()


def stream_audio(
    source: Source,
    *,
    raw: RawAudioFormat | None = None,
    time_range: TimeRange | None = None,
    channels: Sequence[int] | None = None,
    sample_rate: int = SAMPLE_RATE,
    max_duration: float = DEFAULT_MAX_DURATION,
) -> AudioStream:
    """The audio `decode` gives, as an `AudioStream` of blocks, with the same arguments.

    The file is opened and its first block decoded here, so a file no backend can read fails
    at once with AudioError; the other blocks are decoded as the stream is iterated.
    """
    if not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be 1..{MAX_SAMPLE_RATE}, got {sample_rate}")
    if not max_duration > 0:
        raise ValueError(f"max_duration must be positive, got {max_duration}")
    time_range = time_range or TimeRange()
    wanted = None if channels is None else list(channels)
    _check_duplicates(wanted)
    opened = _open_source(source)
    request = _Request(time_range, wanted, sample_rate, max_duration)
    if raw is not None:
        try:
            return _start(_raw_blocks(opened, raw, request))
        except _BackendError as failure:
            raise AudioError(f"cannot read the raw audio: {failure}") from None
    backends: list[tuple[str, _Backend]] = [
        ("libsndfile", _soundfile_blocks),
        ("FFmpeg", _pyav_blocks_of),
    ]
    if _is_ogg_opus(opened.head()):
        # libsndfile decodes Opus at half FFmpeg's speed (RTF 0.0034 against 0.0018 measured
        # here), which alone would take a fifth of the whole extraction budget.
        backends.reverse()
    failures: list[str] = []
    for name, backend in backends:
        try:
            return _start(backend(opened, request))
        except _NoAudioStreamError:
            raise AudioError("the file has no audio stream") from None
        except _BackendError as failure:
            failures.append(f"{name}: {failure}")
    raise AudioError(f"not a readable audio file ({'; '.join(failures)})")


# --- Internals ----------------------------------------------------------------------------


class _BackendError(Exception):
    """A decoding library could not read the input; another backend may still try."""


class _NoAudioStreamError(_BackendError):
    pass


@dataclass(frozen=True)
class _Opened:
    """The input as each backend wants it: a path, or bytes wrapped anew per attempt."""

    path: str | None
    data: bytes | None

    def head(self, size: int = 64) -> bytes:
        if self.data is not None:
            return self.data[:size]
        try:
            with open(cast(str, self.path), "rb") as file:
                return file.read(size)
        except OSError:
            return b""

    def stream(self) -> str | io.BytesIO:
        if self.path is not None:
            return self.path
        return _SeekClampedBytesIO(cast(bytes, self.data))


class _SeekClampedBytesIO(io.BytesIO):
    """BytesIO that refuses to seek before its start by staying put instead of raising.

    libsndfile asks for such seeks on some damaged files; soundfile calls `seek` from a C
    callback, where an exception cannot propagate and is printed as "Exception ignored" instead.
    Staying put makes libsndfile see a failed seek and report the file as unreadable.
    """

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: len(self.getbuffer())}
        if base.get(whence, 0) + offset < 0:
            return self.tell()
        return super().seek(offset, whence)


@dataclass(frozen=True)
class _Request:
    time_range: TimeRange
    channels: list[int] | None
    sample_rate: int
    max_duration: float


_Decoding = Generator["_Collector | NDArray[np.float32]", None, None]
"""A decoder at work: yields its `_Collector` once the header is read, then output blocks
(frames x channels)."""
_Backend = Callable[[_Opened, _Request], _Decoding]


def _start(decoding: _Decoding) -> AudioStream:
    collector = next(decoding)
    assert isinstance(collector, _Collector)
    # Decoding the first block here lets a file that fails this early go to the next backend.
    first = next(decoding)
    return AudioStream(collector, _blocks_from(first, decoding))


def _blocks_from(
    first: _Collector | NDArray[np.float32], rest: _Decoding
) -> Generator[NDArray[np.float32], None, None]:
    try:
        yield _output_block(first)
        for item in rest:
            yield _output_block(item)
    finally:
        rest.close()  # closes the file when the caller stops early


def _output_block(item: _Collector | NDArray[np.float32]) -> NDArray[np.float32]:
    assert not isinstance(item, _Collector)
    return item


def _is_ogg_opus(head: bytes) -> bool:
    """An Ogg stream whose first packet is an Opus header (RFC 7845)."""
    return head.startswith(b"OggS") and b"OpusHead" in head


def _open_source(source: Source) -> _Opened:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise AudioError("the audio file is empty (0 bytes)")
        return _Opened(None, data)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            size = os.stat(path).st_size
        except OSError as error:
            raise AudioError(f"cannot read {path}: {error.strerror or error}") from None
        if size == 0:
            raise AudioError("the audio file is empty (0 bytes)")
        return _Opened(path, None)
    raise TypeError(f"audio source must be bytes or a path, not {type(source).__name__}")


def _check_channel(number: int, channel_count: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int | np.integer):
        raise AudioError(f"channel index must be an integer, got {number!r}")
    if not 0 <= number < channel_count:
        plural = "channel" if channel_count == 1 else "channels"
        raise AudioError(
            f"channel {number} does not exist: the audio has {channel_count} {plural} "
            f"(0..{channel_count - 1})"
        )


def _check_duplicates(numbers: Sequence[int] | None) -> None:
    if numbers is None:
        return
    if not numbers:
        raise AudioOptionError(
            ("channels",),
            "channels_invalid",
            "is empty; omit it to use every channel",
            subject="the channel list",
        )
    seen: set[int] = set()
    for number in numbers:
        if number in seen:
            raise AudioOptionError(
                ("channels",), "channels_invalid", f"{number} is listed twice", subject="channel"
            )
        seen.add(number)


def _check_channel_list(numbers: Sequence[int], channel_count: int) -> list[int]:
    _check_duplicates(numbers)
    for number in numbers:
        _check_channel(number, channel_count)
    return [int(number) for number in numbers]


class _Collector:
    """Takes source-rate blocks in order; gives the range and channels asked for, resampled."""

    def __init__(self, request: _Request, source_rate: int, channel_count: int, first: int):
        if not 0 < source_rate <= MAX_SAMPLE_RATE:
            raise AudioError(f"unsupported sample rate {source_rate} Hz")
        if not 0 < channel_count <= MAX_CHANNELS:
            raise AudioError(f"the audio has {channel_count} channels; at most {MAX_CHANNELS}")
        self.request = request
        self.source_rate = source_rate
        self.channel_count = channel_count
        if request.channels is None:
            self.rows = list(range(channel_count))
        else:
            self.rows = _check_channel_list(request.channels, channel_count)
        time_range = request.time_range
        self.first = _to_frames(time_range.start or 0.0, source_rate)
        self.stop = None if time_range.end is None else _to_frames(time_range.end, source_rate)
        self.limit = _to_frames(request.max_duration, source_rate)
        # The memory a decode takes grows with channels x duration: the same maximum also
        # bounds the seconds kept summed over the channels kept.
        self.kept_limit = _to_frames(request.max_duration / len(self.rows), source_rate)
        self.position = first
        self.kept = 0
        self.produced = 0
        self.expected_seconds: float | None = None
        self.original_duration: float | None = None
        self._pieces: list[NDArray[np.float32]] = []
        self._buffered = 0
        self._resampler: Any = None
        if source_rate != request.sample_rate:
            self._resampler = soxr.ResampleStream(
                source_rate, request.sample_rate, len(self.rows), dtype="float32", quality="HQ"
            )

    @property
    def done(self) -> bool:
        """True once the end of the time range has been reached: decoding may stop."""
        return self.stop is not None and self.position >= self.stop

    def expect(self, source_duration: float) -> None:
        """Record how much audio the output will hold, from the source's (stated) duration."""
        if source_duration <= 0:
            return
        end = source_duration * self.source_rate
        if self.stop is not None:
            end = min(end, self.stop)
        self.expected_seconds = max(0.0, end - self.first) / self.source_rate

    def push(self, block: NDArray[np.float32]) -> NDArray[np.float32] | None:
        """Take the next `block` of frames x channels that follows the previous one; returns
        output frames x channels once enough have gathered for a block."""
        begin, end = self.position, self.position + block.shape[0]
        self.position = end
        if end > self.limit:
            raise AudioError(
                f"the audio is longer than the allowed maximum of {self.request.max_duration:g} s"
            )
        low = max(begin, self.first)
        high = end if self.stop is None else min(end, self.stop)
        if high <= low:
            return None
        piece = block[low - begin : high - begin]
        if len(self.rows) != self.channel_count or self.rows != list(range(self.channel_count)):
            piece = piece[:, self.rows]
        piece = np.ascontiguousarray(piece, dtype=np.float32)
        self.kept += piece.shape[0]
        if self.kept > self.kept_limit:
            raise AudioError(
                f"{len(self.rows)} channels of this length exceed the allowed maximum of"
                f" {self.request.max_duration:g} s of audio, counted over all channels used;"
                " select fewer channels or a time range"
            )
        if self._resampler is not None:
            piece = self._resampler.resample_chunk(piece)
        self._gather(piece)
        if self._buffered * len(self.rows) >= _OUTPUT_BLOCK_SAMPLES:
            return self._drain()
        return None

    def finish(self, original_duration: float) -> NDArray[np.float32] | None:
        """The last output frames (None if every frame has been given out already)."""
        if original_duration <= 0:
            raise AudioError("the audio contains no samples")
        start = self.request.time_range.start or 0.0
        if self.kept == 0:
            raise AudioError(
                f"the time range starts at {start:g} s, at or after the end of the audio "
                f"({original_duration:g} s)"
            )
        if self._resampler is not None:
            empty = np.zeros((0, len(self.rows)), dtype=np.float32)
            self._gather(self._resampler.resample_chunk(empty, last=True))
        if self.produced == 0:
            raise AudioError(
                f"the selected audio is shorter than one sample at {self.request.sample_rate} Hz"
            )
        self.original_duration = original_duration
        return self._drain() if self._buffered else None

    def _gather(self, piece: NDArray[np.float32]) -> None:
        if piece.shape[0]:
            self._pieces.append(piece)
            self._buffered += piece.shape[0]
            self.produced += piece.shape[0]

    def _drain(self) -> NDArray[np.float32]:
        pieces, self._pieces, self._buffered = self._pieces, [], 0
        return np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]


def _to_frames(seconds: float, rate: int) -> int:
    return round(seconds * rate)


def _soundfile_blocks(opened: _Opened, request: _Request) -> _Decoding:
    try:
        with soundfile.SoundFile(opened.stream()) as sound:
            yield from _read_soundfile(sound, request)
    except AudioError:
        raise
    except _BACKEND_ERRORS as error:
        raise _BackendError(_describe(error)) from None


def _raw_blocks(opened: _Opened, raw: RawAudioFormat, request: _Request) -> _Decoding:
    size = os.stat(opened.path).st_size if opened.path is not None else len(opened.data or b"")
    if size % raw.frame_bytes:
        plural = "channel" if raw.channels == 1 else "channels"
        raise AudioError(
            f"raw {raw.encoding.name} audio with {raw.channels} {plural} comes in frames of "
            f"{raw.frame_bytes} bytes, but {size} bytes is not a whole number of frames"
        )
    subtype = _RAW_SUBTYPES[raw.encoding][0]
    try:
        with soundfile.SoundFile(
            opened.stream(),
            format="RAW",
            subtype=subtype,
            samplerate=raw.sample_rate,
            channels=raw.channels,
            endian="LITTLE",
        ) as sound:
            yield from _read_soundfile(sound, request)
    except AudioError:
        raise
    except _BACKEND_ERRORS as error:
        raise _BackendError(_describe(error)) from None


def _read_soundfile(sound: soundfile.SoundFile, request: _Request) -> _Decoding:
    rate, channel_count, total = int(sound.samplerate), int(sound.channels), int(sound.frames)
    if total <= 0:
        # libsndfile reports 0 frames for some streamed WAVs whose header was never finalised;
        # FFmpeg reads those by scanning, so let it have a go before calling the file empty.
        raise _BackendError("no frames")
    duration = total / rate
    collector = _Collector(request, rate, channel_count, first=0)
    stop = total if collector.stop is None else min(total, collector.stop)
    if stop > collector.limit:
        raise AudioError(
            f"the audio is longer than the allowed maximum of {request.max_duration:g} s"
        )
    collector.expect(duration)
    yield collector
    if collector.first < total:
        if collector.first and sound.seekable():
            sound.seek(collector.first)
            collector.position = collector.first
        block_frames = max(1024, _BLOCK_SAMPLES // channel_count)
        while collector.position < stop:
            wanted = min(block_frames, stop - collector.position)
            block = sound.read(wanted, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break  # the header promised more frames than the data holds
            ready = collector.push(block)
            if ready is not None:
                yield ready
    last = collector.finish(duration)
    if last is not None:
        yield last


def _pyav_blocks_of(opened: _Opened, request: _Request) -> _Decoding:
    try:
        container = av.open(opened.stream(), mode="r")
    except _BACKEND_ERRORS as error:
        raise _BackendError(_describe(error)) from None
    try:
        with container:
            if not container.streams.audio:
                raise _NoAudioStreamError("no audio stream")
            stream = container.streams.audio[0]
            collector: _Collector | None = None
            layout: tuple[int, int] | None = None
            for block, rate, channel_count in _pyav_blocks(container, stream):
                if collector is None:
                    collector = _Collector(request, rate, channel_count, first=0)
                    collector.expect(_stated_duration(container, stream))
                    layout = (rate, channel_count)
                    yield collector
                elif layout != (rate, channel_count):
                    raise AudioError(
                        "the sample rate or channel count changes within the audio stream"
                    )
                ready = collector.push(block)
                if ready is not None:
                    yield ready
                if collector.done:
                    break
            if collector is None:
                raise AudioError("the audio contains no samples")
            decoded_duration = collector.position / collector.source_rate
            stated = _stated_duration(container, stream) if collector.done else 0.0
            last = collector.finish(max(decoded_duration, stated))
            if last is not None:
                yield last
    except AudioError:
        raise
    except _BACKEND_ERRORS as error:
        raise _BackendError(_describe(error)) from None


def _pyav_blocks(container: Any, stream: Any) -> Iterator[tuple[NDArray[np.float32], int, int]]:
    """(frames x channels float32 block, sample rate, channel count) for each decoded frame."""
    for frame in container.decode(stream):
        channel_count = int(frame.layout.nb_channels)
        array = frame.to_ndarray()
        block = array.T if frame.format.is_planar else array.reshape(-1, channel_count)
        yield _to_float32(block), int(frame.sample_rate), channel_count


def _to_float32(block: NDArray[Any]) -> NDArray[np.float32]:
    kind = block.dtype
    if kind == np.float32:
        return block
    if kind == np.float64:
        return block.astype(np.float32)
    if kind == np.uint8:
        return (block.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(kind, np.signedinteger):
        scale = float(2 ** (8 * kind.itemsize - 1))
        return (block.astype(np.float64) / scale).astype(np.float32)
    raise AudioError(f"unsupported decoded sample type {kind}")


def _stated_duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return 0.0


def _describe(error: BaseException) -> str:
    # libsndfile's own message starts with the name of the file object it was given, which
    # means nothing to the user; its error string alone says what went wrong.
    # FFmpeg's errors carry errno and a placeholder file name around a readable strerror.
    text = (
        getattr(error, "error_string", None)
        or getattr(error, "strerror", None)
        or str(error).strip()
        or type(error).__name__
    )
    return str(text).splitlines()[0]
