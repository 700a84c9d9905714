"""Receiving a multipart upload: the media file streams into a file of the data folder.

Starlette's form parsing spools every file to the system's temporary folder first, so an upload
was on disk twice, once outside the data folder. Here python-multipart's streaming parser hands
each piece of the file part to the destination as it arrives; the other fields (small option
values) are kept in memory within a byte budget. Limits are enforced while the body streams in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from voxmatch.rest.errors import ApiError, detail_item, validation_error

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("voxmatch.rest")

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024
"""All the fields other than the file together, in bytes: option values and `config`."""
_WRITE_BATCH = 1 << 20


@dataclass
class ReceivedForm:
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


def _invalid(problem: str) -> ApiError:
    return ApiError(400, "Invalid request.", [detail_item(["body"], problem, "multipart_invalid")])


def _too_large(location: list[str | int], problem: str, limit: int) -> ApiError:
    # The connection is kept: the rest of the body is discarded as it arrives, and a client
    # still sending reads this answer, where closing under it could reset the connection first.
    return ApiError(
        413,
        "Request body is too large.",
        [detail_item(location, problem, "request.size-limit-exceeded", {"limit": limit})],
    )


class _FormReader:
    """The parser's callbacks: file bytes to `target`, other fields to memory."""

    def __init__(self, target: BinaryIO, max_file_bytes: int) -> None:
        self.target = target
        self.max_file_bytes = max_file_bytes
        self.form = ReceivedForm(filename=None)
        self.ended = False
        self.file_bytes = 0
        self.unwritten: list[bytes] = []
        self.unwritten_bytes = 0
        self.file_seen = False
        self._field_bytes = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._part_name = ""
        self._part_is_file = False
        self._part_is_kept = False
        self._part_data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data_received,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._part_data = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise _invalid('a part of the form has no name (Content-Disposition "name")')
        self._part_name = name.decode("utf-8", errors="replace")
        self._part_is_file = self._part_name == FILE_FIELD
        if self._part_is_file:
            if self.file_seen:
                raise validation_error(
                    ["body", FILE_FIELD], "the form holds more than one file", "too_many_files"
                )
            self.file_seen = True
            filename = options.get(b"filename")
            self.form.filename = None if filename is None else filename.decode("utf-8", "replace")
        # Parts with a file name other than `file` are not options: their content is skipped.
        self._part_is_kept = not self._part_is_file and b"filename" not in options

    def _part_data_received(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._part_is_file:
            self.file_bytes += size
            if self.file_bytes > self.max_file_bytes:
                raise _too_large(
                    ["body", FILE_FIELD],
                    f"the file exceeds the limit of {self.max_file_bytes} bytes",
                    self.max_file_bytes,
                )
            self.unwritten.append(data[start:end])
            self.unwritten_bytes += size
        elif self._part_is_kept:
            self._field_bytes += size
            if self._field_bytes > MAX_FIELD_BYTES:
                raise _too_large(
                    ["body", self._part_name],
                    f"the form fields other than the file exceed {MAX_FIELD_BYTES} bytes",
                    MAX_FIELD_BYTES,
                )
            self._part_data += data[start:end]

    def _part_end(self) -> None:
        if not self._part_is_kept:
            return
        if self._part_name in self.form.fields:
            raise validation_error(
                ["body", self._part_name],
                f"the form field {self._part_name!r} is given twice",
                "duplicate_field",
            )
        self.form.fields[self._part_name] = self._part_data.decode("utf-8", errors="replace")

    def _end(self) -> None:
        self.ended = True


async def receive_form(request: Request, target: BinaryIO, max_file_bytes: int) -> ReceivedForm:
    """Read a multipart/form-data body, writing its `file` part to `target`.

    Raises ApiError: 400 (not multipart or malformed), 413 (the file or the other fields over
    their limit, checked as the body arrives), 422 (no `file` part, or a field twice).
    """
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise _invalid(
            "the body must be multipart/form-data, with the media file in the field `file`"
        )
    reader = _FormReader(target, max_file_bytes)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
    except FormParserError as error:
        raise _invalid(f"the multipart boundary cannot be used: {error}") from None
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except FormParserError as error:
            raise _invalid(f"the multipart body is malformed: {error}") from None
        if reader.unwritten_bytes >= _WRITE_BATCH:
            await _write_unwritten(reader)
    await _write_unwritten(reader)
    if not reader.ended:
        raise _invalid("the multipart body ends before its closing boundary")
    if not reader.file_seen:
        raise validation_error(["body", FILE_FIELD], "Field required", "missing")
    log.debug("received an upload of %d bytes", reader.file_bytes)
    return reader.form


async def _write_unwritten(reader: _FormReader) -> None:
    if not reader.unwritten:
        return
    pieces, reader.unwritten, reader.unwritten_bytes = reader.unwritten, [], 0
    await run_in_threadpool(reader.target.writelines, pieces)
