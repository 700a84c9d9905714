"""Metrics of gRPC calls: a server interceptor that counts every call by method and status code.

It also counts the work of the calls that do it inline (Extract, Compare), read from their
responses, so that voxmatch_extraction_* and voxmatch_comparison_scores_total cover gRPC as well
as REST tasks. Calls refused by `maximum_concurrent_rpcs` are answered by gRPC before any
interceptor runs, and calls to unknown methods are left uncounted (their names come from
clients and would make unbounded label values).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)

from voxmatch.grpc.services import seconds
from voxmatch.metrics import Metrics

_EXTRACT = "phonexia.grpc.technologies.speaker_identification.v1.VoiceprintExtraction/Extract"
_COMPARE = "phonexia.grpc.technologies.speaker_identification.v1.VoiceprintComparison/Compare"


def _final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status the call ends with, as far as the handler's side can tell."""
    code = context.code()  # type: ignore[attr-defined]  # in grpcio since 1.38, not in the stubs
    if isinstance(code, grpc.StatusCode):
        return code
    if not context.is_active():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    # An exception that is not an abort becomes UNKNOWN, as gRPC itself answers it.
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class CallMetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]  # generic in the stubs only
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method.lstrip("/")
        service, _, method = full_method.rpartition("/")
        done = self._recorder(service, method, full_method)
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            streaming = handler.stream_stream if handler.request_streaming else handler.unary_stream
            if streaming is None:  # the flags name the behaviour a handler has
                return handler
            wrapped_stream = _streaming(streaming, done)
            if handler.request_streaming:
                return grpc.stream_stream_rpc_method_handler(wrapped_stream, **options)
            return grpc.unary_stream_rpc_method_handler(wrapped_stream, **options)
        unary = handler.stream_unary if handler.request_streaming else handler.unary_unary
        if unary is None:
            return handler
        wrapped_unary = _unary(unary, done)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(wrapped_unary, **options)
        return grpc.unary_unary_rpc_method_handler(wrapped_unary, **options)

    def _recorder(
        self, service: str, method: str, full_method: str
    ) -> Callable[[grpc.ServicerContext, float, bool, Any], None]:
        """What to do when a call ends: count it, and the work its first response shows."""
        metrics = self._metrics

        def done(context: grpc.ServicerContext, began: float, failed: bool, first: Any) -> None:
            code = _final_code(context, failed)
            metrics.grpc_calls.labels(service, method, code.name).inc()
            metrics.grpc_call_duration.labels(service, method).observe(time.perf_counter() - began)
            if code is not grpc.StatusCode.OK or first is None:
                return
            if full_method == _EXTRACT:
                metrics.count_extraction(
                    seconds(first.processed_audio_length), seconds(first.result.speech_length)
                )
            elif full_method == _COMPARE:
                # The first message carries the matrix's shape (see voxmatch.grpc._wire).
                matrix = sid.CompareResponse.FromString(first).scores
                metrics.count_scores(matrix.rows_count * matrix.columns_count)

        return done


def _unary(
    behaviour: Callable[[Any, grpc.ServicerContext], Any],
    done: Callable[[grpc.ServicerContext, float, bool, Any], None],
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        began = time.perf_counter()
        response = None
        failed = True
        try:
            response = behaviour(request, context)
            failed = False
            return response
        finally:
            done(context, began, failed, response)

    return call


def _streaming(
    behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
    done: Callable[[grpc.ServicerContext, float, bool, Any], None],
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        began = time.perf_counter()
        first = None
        failed = True
        try:
            for response in behaviour(request, context):
                if first is None:
                    first = response
                yield response
            failed = False
        finally:
            # Also when gRPC closes the generator because the client went away.
            done(context, began, failed, first)

    return call
