"""Pure ASGI middleware: request/correlation ids with an access log, and body size limits.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware) because they sit on the path of
every byte of 100 MB request bodies and must not buffer or copy them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxmatch.logs import correlation_id_var, request_id_var
from voxmatch.rest.errors import ApiError, detail_item, error_body

access_log = logging.getLogger("voxmatch.access")

_REQUEST_ID = b"x-request-id"
_CORRELATION_ID = b"x-correlation-id"
_MAX_ID_LENGTH = 200
_CLIENT_WENT_AWAY = 499
"""Status logged for a request whose client left before its answer (nginx's convention)."""


def _usable_id(raw: bytes | None) -> str | None:
    if raw is None or not raw or len(raw) > _MAX_ID_LENGTH:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


async def send_error(
    send: Send, error: ApiError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """`error` as a whole SPE4 response, for middleware that answers before the app runs."""
    body = error_body(error.error_type, error.message, error.detail)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Take x-request-id / x-correlation-id from the request or make them; echo them always."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = _usable_id(headers.get(_REQUEST_ID)) or uuid.uuid4().hex
        correlation_id = _usable_id(headers.get(_CORRELATION_ID)) or uuid.uuid4().hex
        request_token = request_id_var.set(request_id)
        correlation_token = correlation_id_var.set(correlation_id)
        echoed = [
            (_REQUEST_ID, request_id.encode("ascii")),
            (_CORRELATION_ID, correlation_id.encode("ascii")),
        ]
        status = 500
        started = False
        began = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), *echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except ClientDisconnect:
            # The client's own choice (or its connection's end), not a fault of the server.
            status = _CLIENT_WENT_AWAY
            access_log.info("the client went away during %s %s", scope["method"], scope["path"])
        except Exception:  # noqa: BLE001 - the last resort: logged with its traceback below
            # Answered here rather than by Starlette's outermost handler, so that even this
            # answer carries the ids, and the log line that explains it does too.
            access_log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not started:
                internal = ApiError(500, "Internal server error.", error_type="internal")
                await send_error(send_with_ids, internal)
        finally:
            access_log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                1000 * (time.perf_counter() - began),
            )
            request_id_var.reset(request_token)
            correlation_id_var.reset(correlation_token)


class _BodyTooLarge(BaseException):
    """A BaseException so that framework code that turns any Exception from body parsing into
    a 400 lets it through to this middleware, which answers 413."""


class BodySizeLimitMiddleware:
    """Answer 413 for bodies over the limit of their route, before or while they arrive."""

    def __init__(self, app: ASGIApp, limit_for_path: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for_path = limit_for_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        received = 0
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject(send, limit)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        error = ApiError(
            413,
            "Request body is too large.",
            [
                detail_item(
                    ["body"],
                    f"the body exceeds the limit of {limit} bytes",
                    "request.size-limit-exceeded",
                    {"limit": limit},
                )
            ],
        )
        await send_error(send, error, [(b"connection", b"close")])
