"""API keys over gRPC: calls without a valid `x-api-key` metadata end UNAUTHENTICATED.

The health service stays open: load balancers and orchestrators probe it without credentials.
A call is refused before its handler runs and before a request message is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from voxmatch.api_keys import KeyRing

log = logging.getLogger("voxmatch.grpc")

OPEN_SERVICES = ("/grpc.health.v1.Health/",)

_KEY_METADATA = "x-api-key"
_AUTHORIZATION_METADATA = "authorization"


def _presented_key(metadata: grpc.Metadata | None) -> str | None:
    bearer = None
    for name, value in metadata or ():
        if isinstance(value, bytes):
            continue  # binary (-bin) metadata: never a key
        if name == _KEY_METADATA:
            return value.strip() or None
        if name == _AUTHORIZATION_METADATA:
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() == "bearer":
                bearer = credentials.strip() or None
    return bearer


def _refusal(message: str) -> Callable[[Any, grpc.ServicerContext], NoReturn]:
    def refuse(request: Any, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return refuse


if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    _Interceptor = grpc.ServerInterceptor


class ApiKeyInterceptor(_Interceptor):
    """Refuse calls whose `x-api-key` metadata (or `authorization: Bearer KEY`) is missing or
    not in the key file."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        key = _presented_key(handler_call_details.invocation_metadata)
        if self.keys.owner_of(key) is not None:
            return handler
        reason = (
            "the API key is not valid"
            if key is not None
            else "an API key is required: send it as x-api-key metadata"
        )
        log.info("%s: UNAUTHENTICATED: %s", handler_call_details.method, reason)
        refuse = _refusal(reason)
        # The refusal has the call's shape, so that grpc reads and answers it as it would
        # have the real method.
        if handler.request_streaming and handler.response_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            make = grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            make = grpc.unary_stream_rpc_method_handler
        else:
            make = grpc.unary_unary_rpc_method_handler
        return make(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
