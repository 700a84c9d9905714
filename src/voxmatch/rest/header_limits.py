"""Bounds on the request line and headers, enforced while they arrive.

httptools has no limit of its own: it gathers a header value across reads until the line ends,
so one endless header grows the server without bound (a 128 MiB header cost 450 MB), and so do
the trailer fields after a chunked body. The protocol below feeds the parser at most the bytes
a head may still take, so the parser never holds more than `max_header_bytes` of an unfinished
head (trailers: that plus one read), and answers 431 with an SPE4 body the moment a limit is
passed, then ends the connection.

It also gathers a JSON request body of declared length whole before the app sees it (see
`BoundedHeadProtocol.on_body`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from voxmatch.rest.errors import ERROR_TYPES_BY_STATUS, detail_item, error_body

log = logging.getLogger("voxmatch.access")

LINGER_SECONDS = 2.0
"""How long a refused connection still reads (and discards) what the client keeps sending, so
that closing it does not reset the connection before the client has read the 431."""


class _HeadTooLarge(Exception):
    def __init__(self, problem: str, limit: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.limit = limit


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a byte budget and a count limit on request heads;
    `bounded_head_protocol` makes one with the configured limits."""

    max_header_bytes: ClassVar[int]
    max_header_count: ClassVar[int]
    max_whole_body_bytes: ClassVar[int]
    """The largest JSON body gathered whole (a larger one is refused by the app from its
    declared length, unread)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Bytes fed since the parser last made progress (finished a head, passed body bytes on,
        # finished a message): a head, or a chunked body's framing and trailer fields, which
        # httptools also gathers in memory until they end.
        self._idle_bytes = 0
        self._progress = 0
        self._in_body = False
        self._refused = False
        self._whole_body: list[bytes] | None = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after an answer that ends the connection: discarded
        self._unset_keepalive_if_required()
        rest = memoryview(data)
        while rest:
            # Reading a head, one byte more than the head may take: the parser then either
            # finishes the head inside this piece or proves it too long.
            budget = self.max_header_bytes - self._idle_bytes + 1
            piece = rest if self._in_body else rest[:budget]
            rest = rest[len(piece) :]
            progress_before = self._progress
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserCallbackError as error:
                if isinstance(error.__context__, _HeadTooLarge):
                    self._refuse(error.__context__)
                else:
                    self._invalid_request()
                return
            except httptools.HttpParserError:
                self._invalid_request()
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            # A piece in which the parser made progress may end with the start of the next
            # head (pipelined) or of trailer fields. Those bytes go uncounted, so such a head is
            # cut within the budget plus one read of the transport.
            if self._progress != progress_before:
                self._idle_bytes = 0
                continue
            self._idle_bytes += len(piece)
            if self._idle_bytes > self.max_header_bytes:
                what = "trailer fields" if self._in_body else "request line and headers"
                self._refuse(
                    _HeadTooLarge(
                        f"the {what} exceed {self.max_header_bytes} bytes", self.max_header_bytes
                    )
                )
                return

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.max_header_count:
            raise _HeadTooLarge(
                f"the request has more than {self.max_header_count} headers",
                self.max_header_count,
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._progress += 1
        self._in_body = True
        before = self.cycle
        super().on_headers_complete()
        # A request the app takes has a cycle of its own (an upgrade does not).
        taken = self.cycle is not None and self.cycle is not before
        self._whole_body = [] if taken and self._gathers_whole_body() else None

    def _gathers_whole_body(self) -> bool:
        """A JSON body is read whole by every route that takes one (it cannot be decoded in
        parts); with its length declared and within the limit, it is gathered here."""
        headers = dict(self.headers)
        media_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        declared = headers.get(b"content-length", b"")
        return (
            media_type == b"application/json"
            and declared.isdigit()
            and int(declared) <= self.max_whole_body_bytes
        )

    def on_body(self, body: bytes) -> None:
        self._progress += 1
        if self._whole_body is None:
            super().on_body(body)
        elif not self.cycle.response_complete:
            # Kept apart and handed to the app once complete, as one `bytes`: uvicorn would
            # copy each read into its buffer and out again, and pause reading until the app had
            # taken each (a 55 MB body: two more copies, and a round through the app's receive
            # for each of some 200 reads).
            self._whole_body.append(body)

    def on_message_complete(self) -> None:
        self._progress += 1
        self._in_body = False
        if self._whole_body is not None:
            gathered, self._whole_body = self._whole_body, None
            if not self.cycle.response_complete:
                # `bytes` is what the cycle's `receive` hands on without copying it again.
                self.cycle.body = b"".join(gathered)  # type: ignore[assignment]
        super().on_message_complete()

    def _invalid_request(self) -> None:
        log.info("refused a request that is not valid HTTP")
        self._answer_and_close(
            400,
            b"Bad Request",
            error_body(ERROR_TYPES_BY_STATUS[400], "Invalid HTTP request.", []),
        )

    def _refuse(self, error: _HeadTooLarge) -> None:
        log.info("refused a request: %s", error.problem)
        error_type = ERROR_TYPES_BY_STATUS[431]
        self._answer_and_close(
            431,
            b"Request Header Fields Too Large",
            error_body(
                error_type,
                "Request header fields are too large.",
                [detail_item(["header"], error.problem, error_type, {"limit": error.limit})],
            ),
        )

    def _answer_and_close(self, status: int, reason: bytes, body: bytes) -> None:
        """Answer outside any request cycle (the head was never handed to the app)."""
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or self.pipeline:
                # Another answer is under way on this connection: one now would come out of
                # order and pass as part of it, so the connection is dropped unanswered.
                self.transport.close()
                return
            # The app is reading this request's body (its trailer fields are too large): it
            # sees the client gone, and this answer takes the place of its own.
            cycle.disconnected = True
            cycle.message_event.set()
        head = b"".join(
            [
                b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                # Generated: the request's own ids are in the head that is not read.
                b"x-request-id: %s\r\n" % uuid.uuid4().hex.encode("ascii"),
                b"x-correlation-id: %s\r\n" % uuid.uuid4().hex.encode("ascii"),
                b"connection: close\r\n\r\n",
            ]
        )
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def bounded_head_protocol(
    max_header_bytes: int, max_header_count: int, max_whole_body_bytes: int
) -> type[BoundedHeadProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    byte_limit, count_limit, body_limit = max_header_bytes, max_header_count, max_whole_body_bytes

    class Configured(BoundedHeadProtocol):
        max_header_bytes = byte_limit
        max_header_count = count_limit
        max_whole_body_bytes = body_limit

    return Configured
