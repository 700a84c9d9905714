"""The Phonexia speaker-identification services: extraction, comparison, merging, conversion.

Each method translates: it reads the request messages, calls the core (audio, extraction,
scoring, merging, vectors), and answers in messages or gRPC status codes. Bad input is
INVALID_ARGUMENT with a message naming the item ("voiceprints_a[17]: ..."), and so is a request
whose bytes do not parse; anything unexpected is logged and answered INTERNAL. Nothing here
keeps state between calls.

Heavy work (an extraction, a large comparison) holds a compute slot, the CPU budget shared with
REST tasks (voxmatch.compute_slots), and waits in line for one when all are busy. A call that
breaks off (the client cancels or disconnects, its deadline passes) stops its work, or leaves
the line, within a fraction of a second and frees its slot: the work asks `context.is_active()`
as it goes, and a callback on the call's end wakes the line. Such ends are what clients do, so
they are logged at INFO, without a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from phonexia.grpc.common import core_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)

from voxmatch.audio import AudioError, RawAudioFormat, RawEncoding, TimeRange
from voxmatch.compute_slots import LIGHT_COMPARISON_SCORES, ComputeSlots
from voxmatch.grpc import _wire
from voxmatch.merging import merge_voiceprints
from voxmatch.models.registry import describe
from voxmatch.request_checks import (
    RequestError,
    check_comparison_lists,
    check_growing_comparison_lists,
    check_list_length,
    speech_cap,
)
from voxmatch.scoring import Traits, score_matrix
from voxmatch.shared_extractor import SharedExtractor
from voxmatch.stopping import Stopped
from voxmatch.vectors import vector_rows, vector_voiceprints
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


@contextlib.contextmanager
def request_rules() -> Iterator[None]:
    """Turns a broken request rule into INVALID_ARGUMENT with its message."""
    try:
        yield
    except RequestError as error:
        raise invalid(error.message) from None


def voiceprint_problem(error: VoiceprintError, field: str, offset: int = 0) -> CallFailed:
    return invalid(f"{field}[{offset + error.index}]: {error.message}")


class RequestStreamBrokeOff(Exception):
    """The request stream ended because the call did, not because the client finished it."""


@dataclass(frozen=True)
class Unparsable:
    """A request message whose bytes do not parse, handed to the method in its place.

    gRPC's own handling of a deserializer's exception is to log it at ERROR with a traceback and
    answer INTERNAL; a client's bad bytes are neither, so the method answers INVALID_ARGUMENT.
    """

    reason: str

    def problem(self) -> CallFailed:
        return invalid(f"the request message cannot be parsed: {self.reason}")


def request_parser(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer that gives `Unparsable` instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Unparsable(str(error))

    return parse


def _parsed_stream(requests: Iterable[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Unparsable):
            raise request.problem()
        yield request


def _parsed(request: Any, streamed: bool) -> Any:
    if streamed:
        return _parsed_stream(request)
    if isinstance(request, Unparsable):
        raise request.problem()
    return request


_WORK_STOPPED = {
    grpc.RpcError: "the request stream broke off",
    RequestStreamBrokeOff: "the request stream broke off",
}


DEADLINE_SLACK_SECONDS = 0.5
"""A client ends its call itself when its deadline passes, so the server often hears of it as a
cancellation shortly before its own copy of the deadline (sent as a timeout, so a little later)
expires."""


def _why_ended(context: grpc.ServicerContext) -> str:
    """Why a call is no longer active, as far as the server can tell."""
    if context.time_remaining() <= DEADLINE_SLACK_SECONDS:
        return "deadline exceeded"
    return "cancelled by the client"


def _end_call(
    context: grpc.ServicerContext, error: Exception, method: str, began: float
) -> NoReturn:
    """End the call with the status `error` stands for."""
    stopped = (
        str(error)
        if isinstance(error, Stopped)
        else next((what for kind, what in _WORK_STOPPED.items() if isinstance(error, kind)), None)
    )
    if not context.is_active() or stopped is not None:
        # The client went away (cancelled, deadline, broken connection): nobody to answer.
        log.info(
            "%s: %s after %.1f s; %s",
            method,
            _why_ended(context),
            time.monotonic() - began,
            stopped or f"it ended with {type(error).__name__}",
        )
        # No client hears this status. Aborting is how a method ends without an answer: a
        # method that returns None instead has gRPC log a traceback as it fails to serialize it.
        context.abort(grpc.StatusCode.CANCELLED, "the call ended before it was answered")
    if isinstance(error, CallFailed):
        log.info("%s: %s: %s", method, error.code.name, error.message)
        context.abort(error.code, error.message)
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


def _note_abandoned(context: grpc.ServicerContext, method: str, began: float) -> None:
    if not context.is_active():
        log.info(
            "%s: %s after %.1f s; the answer was ready but not sent",
            method,
            _why_ended(context),
            time.monotonic() - began,
        )


def guard_unary(
    method: str,
    function: Callable[[_Request, grpc.ServicerContext], _Response],
    *,
    streamed_requests: bool = False,
) -> Callable[[Any, grpc.ServicerContext], _Response]:
    """`function` (one response) with its exceptions turned into status codes and requests
    that did not parse into INVALID_ARGUMENT."""

    @functools.wraps(function)
    def call(request: Any, context: grpc.ServicerContext) -> _Response:
        began = time.monotonic()
        try:
            response = function(_parsed(request, streamed_requests), context)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status, logged there
            _end_call(context, error, method, began)
        _note_abandoned(context, method, began)
        return response

    return call


def guard_streaming(
    method: str,
    function: Callable[[_Request, grpc.ServicerContext], Iterator[_Response]],
    *,
    streamed_requests: bool = True,
) -> Callable[[Any, grpc.ServicerContext], Iterator[_Response]]:
    """`function` (streamed responses) with its exceptions turned into status codes and
    requests that did not parse into INVALID_ARGUMENT."""

    @functools.wraps(function)
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[_Response]:
        began = time.monotonic()
        try:
            yield from function(_parsed(request, streamed_requests), context)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status, logged there
            _end_call(context, error, method, began)

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
    (SPE4 REST returns the transpose). The matrix goes out in messages under 4 MiB. A matrix
    of more than LIGHT_COMPARISON_SCORES scores is computed holding a compute slot.
    """

    def __init__(self, limits: Limits, compute_slots: ComputeSlots) -> None:
        self.limits = limits
        self.compute_slots = compute_slots

    def compare(
        self, requests: Iterable[sid.CompareRequest], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        contents_a: list[bytes] = []
        contents_b: list[bytes] = []
        for request in requests:
            contents_a += [voiceprint.content for voiceprint in request.voiceprints_a]
            contents_b += [voiceprint.content for voiceprint in request.voiceprints_b]
            # Checked as the stream arrives: an oversized request is refused before it is read.
            with request_rules():
                check_growing_comparison_lists(len(contents_a), len(contents_b), *self._sizes)
        with request_rules():
            check_comparison_lists(len(contents_a), len(contents_b), *self._sizes)
        try:
            batch_a = decode_bytes_batch(contents_a)
        except VoiceprintError as error:
            raise voiceprint_problem(error, "voiceprints_a") from None
        try:
            batch_b = decode_bytes_batch(contents_b, model=batch_a.model)
        except VoiceprintError as error:
            raise voiceprint_problem(error, "voiceprints_b") from None
        del contents_a, contents_b
        calibration = describe(batch_a.model).calibration
        stopped = _stop_check(context, self.compute_slots)
        heavy = len(batch_a) * len(batch_b) > LIGHT_COMPARISON_SCORES
        with self.compute_slots.slot(stopped) if heavy else contextlib.nullcontext():
            scores = score_matrix(
                batch_a.embeddings,
                batch_b.embeddings,
                calibration,
                row_traits=Traits.of(batch_a),
                column_traits=Traits.of(batch_b),
                memory_budget=self.limits.memory_budget,
                should_stop=stopped,
            )
        yield from _wire.matrix_chunks(scores, MAX_RESPONSE_BYTES)

    @property
    def _sizes(self) -> tuple[int, int]:
        return self.limits.max_list_length, self.limits.max_matrix_size


class Extraction:
    """VoiceprintExtraction.Extract: a stream of audio chunks in, one voiceprint out.

    The audio is an encoded file in chunks, or headerless PCM described by RawAudioConfig in
    the first message. The time range and the config are read from the first message. Phonexia's
    microservices take mono audio only; voxmatch mixes the channels of a multi-channel input
    into one signal instead of refusing it.

    The chunks are written, as they arrive, to a file of the call's own in `spool_dir` (memory
    stays that of one message whatever the length of the audio), which is deleted when the call
    ends, however it ends. The extraction then holds a compute slot.
    """

    def __init__(
        self,
        extractor: SharedExtractor,
        limits: Limits,
        compute_slots: ComputeSlots,
        spool_dir: Path,
    ) -> None:
        self.extractor = extractor
        self.limits = limits
        self.compute_slots = compute_slots
        self.spool_dir = spool_dir

    def extract(
        self, requests: Iterable[sid.ExtractRequest], context: grpc.ServicerContext
    ) -> sid.ExtractResponse:
        stopped = _stop_check(context, self.compute_slots)
        with tempfile.NamedTemporaryFile(dir=self.spool_dir, prefix="extract-") as spool:
            first = self._spool(requests, spool, stopped)
            audio_message = first.audio
            try:
                raw = (
                    _raw_format(audio_message)
                    if audio_message.HasField("raw_audio_config")
                    else None
                )
                time_range = _time_range(audio_message)
            except AudioError as error:
                raise invalid(f"audio: {error}") from None
            cap = _speech_cap(first.config)
            with self.compute_slots.slot(stopped):
                try:
                    (mixed,) = self.extractor.get().extract_source(
                        spool.name,
                        raw=raw,
                        time_range=time_range,
                        channel_mode="mix",
                        max_speech_seconds=cap,
                        max_duration=self.limits.max_audio_seconds,
                        should_stop=stopped,
                    )
                except AudioError as error:
                    raise invalid(f"audio: {error}") from None
        extraction = mixed.extraction
        voiceprint = extraction.voiceprint
        result = sid.ExtractResult(
            speech_length=duration(voiceprint.speech_length),
            voiceprint=core_pb2.Voiceprint(content=voiceprint.to_bytes()),
        )
        if first.config.enable_vector_voiceprint:
            (vector,) = vector_rows(vector_voiceprints([voiceprint]))
            result.vector_voiceprint.values.extend(vector.tolist())
        return sid.ExtractResponse(
            result=result, processed_audio_length=duration(extraction.processed_seconds)
        )

    def _spool(
        self, requests: Iterable[sid.ExtractRequest], spool: IO[bytes], stopped: Callable[[], bool]
    ) -> sid.ExtractRequest:
        """Write the stream's audio to `spool`; the first message (which holds the settings)."""
        first: sid.ExtractRequest | None = None
        size = 0
        for request in requests:
            if first is None:
                first = request
            content = request.audio.content
            size += len(content)
            if size > self.limits.max_audio_bytes:
                raise invalid(
                    f"the audio is larger than {self.limits.max_audio_bytes} bytes"
                    " (max_upload_bytes)"
                )
            spool.write(content)
        if stopped():
            # gRPC ends the request iterator of a cancelled call as if the client had finished
            # its stream: what was spooled is only part of the audio.
            raise RequestStreamBrokeOff()
        if first is None:
            raise invalid("no audio: the request stream was empty")
        if size == 0:
            raise invalid("audio: the audio is empty (0 bytes)")
        spool.flush()
        return first


def prepare_spool_dir(data_dir: Path) -> Path:
    """The folder of Extract's spooled audio, emptied of what a crash may have left in it."""
    folder = data_dir / "grpc-uploads"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    return folder


def _stop_check(context: grpc.ServicerContext, compute_slots: ComputeSlots) -> Callable[[], bool]:
    """What long work asks as it goes: has the call ended (cancelled, deadline, disconnect)?

    When the call ends, the line for compute slots is woken, so a call waiting in it leaves at
    once rather than at its next periodic check.
    """
    context.add_callback(compute_slots.wake)
    return lambda: not context.is_active()


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
    with request_rules():
        return speech_cap(seconds(config.speech_length), ("config", "speech_length"))


class Merging:
    """VoiceprintMerging.Merge: voiceprints of one speaker into one (see voxmatch.merging)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def merge(self, request: sid.MergeRequest, context: grpc.ServicerContext) -> sid.MergeResponse:
        contents = [voiceprint.content for voiceprint in request.voiceprints]
        with request_rules():
            check_list_length("voiceprints", contents, self.limits.max_list_length)
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
            yield from _conversion_chunks(vectors)


def _conversion_chunks(vectors: npt.NDArray[np.float32]) -> Iterator[bytes]:
    """ConvertResponse messages under the size limit (one, unless the request was huge)."""
    entry_bytes = vectors.shape[1] * 4 + 2 * 10 + 2  # values + two tags and lengths at most
    per_message = max(1, MAX_RESPONSE_BYTES // entry_bytes)
    for start in range(0, len(vectors), per_message):
        stop = start + per_message
        yield _wire.convert_response(vectors[start:stop])
