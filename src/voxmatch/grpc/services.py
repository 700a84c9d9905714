"""The Phonexia speaker-identification services: extraction, comparison, merging, conversion.

Each method translates: it reads the request messages, calls the core (audio, extraction,
scoring, merging, vectors), and answers in messages or gRPC status codes. Bad input is
INVALID_ARGUMENT with a message naming the item ("voiceprints_a[17]: ..."); anything unexpected
is logged and answered INTERNAL. Nothing here keeps state between calls, so a call that breaks
off (a client that disconnects, a deadline) leaves nothing behind and disturbs no other call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import duration_pb2
from phonexia.grpc.common import core_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)

from voxmatch.audio import AudioError, RawAudioFormat, RawEncoding, TimeRange, decode
from voxmatch.grpc import _wire
from voxmatch.merging import merge_voiceprints
from voxmatch.models.registry import describe
from voxmatch.scoring import ScoringStopped, score_matrix
from voxmatch.tasks.shared_extractor import SharedExtractor
from voxmatch.vectors import has_speech, vector_voiceprints
from voxmatch.voiceprint import VoiceprintError, decode_bytes_batch

log = logging.getLogger("voxmatch.grpc")

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""gRPC's default receive limit: no response message may be larger, or a client on default
settings (Phonexia's among them) refuses it."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class CallFailed(Exception):
    """Ends a call with a status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CallFailed:
    return CallFailed(grpc.StatusCode.INVALID_ARGUMENT, message)


def voiceprint_problem(error: VoiceprintError, field: str, offset: int = 0) -> CallFailed:
    return invalid(f"{field}[{offset + error.index}]: {error.message}")


def _end_call(context: grpc.ServicerContext, error: Exception, method: str) -> None:
    """Turn an exception into the call's status; returns only if the call is already over."""
    if isinstance(error, CallFailed):
        log.info("%s: %s: %s", method, error.code.name, error.message)
        context.abort(error.code, error.message)
    if not context.is_active() or isinstance(error, ScoringStopped | grpc.RpcError):
        # The client went away (cancelled, deadline, broken connection): nobody to answer.
        log.info("%s: the client ended the call", method)
        return
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


def guard_unary(
    method: str, function: Callable[[_Request, grpc.ServicerContext], _Response]
) -> Callable[[_Request, grpc.ServicerContext], _Response | None]:
    """`function` (one response) with its exceptions turned into status codes."""

    @functools.wraps(function)
    def call(request: _Request, context: grpc.ServicerContext) -> _Response | None:
        try:
            return function(request, context)
        except Exception as error:
            _end_call(context, error, method)
            return None

    return call


def guard_streaming(
    method: str, function: Callable[[_Request, grpc.ServicerContext], Iterator[_Response]]
) -> Callable[[_Request, grpc.ServicerContext], Iterator[_Response]]:
    """`function` (streamed responses) with its exceptions turned into status codes."""

    @functools.wraps(function)
    def call(request: _Request, context: grpc.ServicerContext) -> Iterator[_Response]:
        try:
            yield from function(request, context)
        except Exception as error:
            _end_call(context, error, method)

    return call


def seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def duration(value: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(value * 1e9))
    return message


@dataclass(frozen=True)
class Limits:
    max_list_length: int
    max_matrix_size: int
    max_audio_bytes: int
    max_audio_seconds: float
    memory_budget: int


class Comparison:
    """VoiceprintComparison.Compare: every voiceprint of list a against every one of list b.

    The request stream is read to its end first, since the response must begin with the
    matrix's shape. Rows follow voiceprints_a and columns voiceprints_b, as the proto says
    (SPE4 REST returns the transpose). The matrix goes out in messages under 4 MiB.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def compare(
        self, requests: Iterable[sid.CompareRequest], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        contents_a: list[bytes] = []
        contents_b: list[bytes] = []
        for request in requests:
            contents_a += [voiceprint.content for voiceprint in request.voiceprints_a]
            contents_b += [voiceprint.content for voiceprint in request.voiceprints_b]
            # Checked as the stream arrives: an oversized request is refused before it is read.
            self._check_sizes(len(contents_a), len(contents_b))
        for field, contents in (("voiceprints_a", contents_a), ("voiceprints_b", contents_b)):
            if not contents:
                raise invalid(f"{field} is empty: each list needs at least one voiceprint")
        try:
            batch_a = decode_bytes_batch(contents_a)
        except VoiceprintError as error:
            raise voiceprint_problem(error, "voiceprints_a") from None
        try:
            batch_b = decode_bytes_batch(contents_b, model=batch_a.model)
        except VoiceprintError as error:
            raise voiceprint_problem(error, "voiceprints_b") from None
        del contents_a, contents_b
        scores = score_matrix(
            batch_a.embeddings,
            batch_b.embeddings,
            describe(batch_a.model).calibration,
            memory_budget=self.limits.memory_budget,
            should_stop=lambda: not context.is_active(),
        )
        yield from _wire.matrix_chunks(scores, MAX_RESPONSE_BYTES)

    def _check_sizes(self, count_a: int, count_b: int) -> None:
        limit = self.limits.max_list_length
        for field, count in (("voiceprints_a", count_a), ("voiceprints_b", count_b)):
            if count > limit:
                raise invalid(f"{field} has more than {limit} voiceprints (max_list_length)")
        if count_a * count_b > self.limits.max_matrix_size:
            raise invalid(
                f"len(voiceprints_a) x len(voiceprints_b) reached {count_a} x {count_b} ="
                f" {count_a * count_b}, over the maximum matrix size"
                f" {self.limits.max_matrix_size} (max_matrix_size)"
            )


class Extraction:
    """VoiceprintExtraction.Extract: a stream of audio chunks in, one voiceprint out.

    The audio is an encoded file in chunks, or headerless PCM described by RawAudioConfig in
    the first message. The time range and the config are read from the first message. Phonexia's
    microservices take mono audio only; voxmatch mixes the channels of a multi-channel input
    into one signal instead of refusing it.
    """

    def __init__(self, extractor: SharedExtractor, limits: Limits) -> None:
        self.extractor = extractor
        self.limits = limits

    def extract(
        self, requests: Iterable[sid.ExtractRequest], context: grpc.ServicerContext
    ) -> sid.ExtractResponse:
        first: sid.ExtractRequest | None = None
        chunks: list[bytes] = []
        size = 0
        for request in requests:
            if first is None:
                first = request
            chunks.append(request.audio.content)
            size += len(chunks[-1])
            if size > self.limits.max_audio_bytes:
                raise invalid(
                    f"the audio is larger than {self.limits.max_audio_bytes} bytes"
                    " (max_upload_bytes)"
                )
        if first is None:
            raise invalid("no audio: the request stream was empty")
        audio_message = first.audio
        try:
            raw = _raw_format(audio_message) if audio_message.HasField("raw_audio_config") else None
            time_range = _time_range(audio_message)
            cap = _speech_cap(first.config)
            extractor = self.extractor.get()
            audio = decode(
                b"".join(chunks),
                raw=raw,
                time_range=time_range,
                sample_rate=extractor.sample_rate,
                max_duration=self.limits.max_audio_seconds,
            )
        except AudioError as error:
            raise invalid(f"audio: {error}") from None
        del chunks
        extraction = extractor.extract(audio.mix().samples, max_speech_seconds=cap)
        voiceprint = extraction.voiceprint
        result = sid.ExtractResult(
            speech_length=duration(voiceprint.speech_length),
            voiceprint=core_pb2.Voiceprint(content=voiceprint.to_bytes()),
        )
        if first.config.enable_vector_voiceprint:
            vector = vector_voiceprints([voiceprint])[0]
            # Empty, not zeros, for no speech: the proto's documented convention.
            result.vector_voiceprint.values.extend(vector.tolist() if vector.any() else [])
        return sid.ExtractResponse(
            result=result, processed_audio_length=duration(extraction.processed_seconds)
        )


def _raw_format(audio: core_pb2.Audio) -> RawAudioFormat:
    config = audio.raw_audio_config
    try:
        encoding = RawEncoding(config.encoding)
    except ValueError:
        raise AudioError(f"unsupported raw audio encoding {config.encoding}") from None
    return RawAudioFormat(
        encoding=encoding, sample_rate=config.sample_rate_hertz, channels=config.channels
    )


def _time_range(audio: core_pb2.Audio) -> TimeRange | None:
    if not audio.HasField("time_range"):
        return None
    bounds = audio.time_range
    start = seconds(bounds.start) if bounds.HasField("start") else None
    end = seconds(bounds.end) if bounds.HasField("end") else None
    return TimeRange(start, end)


def _speech_cap(config: sid.ExtractConfig) -> float | None:
    """ExtractConfig.speech_length as a cap in seconds; unset or zero means no cap."""
    if not config.HasField("speech_length"):
        return None
    cap = seconds(config.speech_length)
    if cap < 0:
        raise invalid(f"config.speech_length must not be negative, got {cap:g} s")
    return cap or None


class Merging:
    """VoiceprintMerging.Merge: voiceprints of one speaker into one (see voxmatch.merging)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def merge(self, request: sid.MergeRequest, context: grpc.ServicerContext) -> sid.MergeResponse:
        contents = [voiceprint.content for voiceprint in request.voiceprints]
        if not contents:
            raise invalid("voiceprints is empty: give at least one voiceprint to merge")
        if len(contents) > self.limits.max_list_length:
            raise invalid(
                f"voiceprints has {len(contents)} items, more than {self.limits.max_list_length}"
                " (max_list_length)"
            )
        try:
            merged = merge_voiceprints(decode_bytes_batch(contents))
        except VoiceprintError as error:
            raise voiceprint_problem(error, "voiceprints") from None
        return sid.MergeResponse(
            speech_length=duration(merged.speech_length),
            voiceprint=core_pb2.Voiceprint(content=merged.to_bytes()),
        )


class Conversion:
    """VoiceprintConversion.Convert: voiceprints to vector voiceprints, answered per request.

    Each request is answered as soon as it is read, in order, so a stream of any length needs
    memory for one request only. Every voiceprint of a stream must be of one model: vectors of
    different models would share a stream but not a space. Indexes in errors count from the
    start of the stream.
    """

    def convert(
        self, requests: Iterable[sid.ConvertRequest], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        model: str | None = None
        seen = 0
        for request in requests:
            contents = [voiceprint.content for voiceprint in request.voiceprints]
            if not contents:
                yield b""  # an empty ConvertResponse answers an empty request
                continue
            try:
                batch = decode_bytes_batch(contents, model=model)
            except VoiceprintError as error:
                raise voiceprint_problem(error, "voiceprints", seen) from None
            model = batch.model
            seen += len(contents)
            vectors = vector_voiceprints(batch)
            yield from _conversion_chunks(vectors, has_speech(vectors))


def _conversion_chunks(
    vectors: npt.NDArray[np.float32], keep: npt.NDArray[np.bool_]
) -> Iterator[bytes]:
    """ConvertResponse messages under the size limit (one, unless the request was huge)."""
    entry_bytes = vectors.shape[1] * 4 + 2 * 10 + 2  # values + two tags and lengths at most
    per_message = max(1, MAX_RESPONSE_BYTES // entry_bytes)
    for start in range(0, len(vectors), per_message):
        stop = start + per_message
        yield _wire.convert_response(vectors[start:stop], keep[start:stop])
