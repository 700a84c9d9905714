"""HTTP/1.1 over a plain socket, for what an HTTP client library will not send: giant or
unfinished heads, bodies sent halfway, `Expect: 100-continue` answered before the body."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from _helpers import RunningServer

TIMEOUT = 60.0
"""Seconds a read may wait before the test fails; a correct server answers long before."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict), document
        return document


@dataclass
class Connection:
    sock: socket.socket
    buffered: bytes = b""
    senders: list[threading.Thread] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_in_background(self, head: bytes, filler: bytes, total: int) -> None:
        """Send `head`, then `filler` until `total` bytes, from a thread: the server may answer
        (and stop reading) long before; the sender then stops at the closed connection."""

        def send() -> None:
            try:
                self.sock.sendall(head)
                sent = 0
                while sent < total:
                    self.sock.sendall(filler)
                    sent += len(filler)
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        self.senders.append(sender)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffered += chunk
        return bool(chunk)

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buffered:
            if not self._fill():
                raise ConnectionError("the server closed the connection mid-line")
        line, _, self.buffered = self.buffered.partition(b"\r\n")
        return line

    def read_response(self) -> RawResponse:
        """The next response; an interim `100 Continue` is returned like any other."""
        status_line = self.read_line()
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while line := self.read_line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffered) < length:
            if not self._fill():
                raise ConnectionError("the server closed the connection mid-body")
        body, self.buffered = self.buffered[:length], self.buffered[length:]
        return RawResponse(status, headers, body)

    def read_until_closed(self) -> bytes:
        while self._fill():
            pass
        return self.buffered

    def close(self) -> None:
        self.sock.close()
        for sender in self.senders:
            sender.join(TIMEOUT)


def connect(server: RunningServer) -> Connection:
    address = urlsplit(server.base_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=TIMEOUT)
    return Connection(sock)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Multipart:
    """A multipart/form-data body cut where the file's content goes, so that a test can send
    the content in pieces."""

    boundary: str
    before_file: bytes
    after_file: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def length(self, file_size: int) -> int:
        return len(self.before_file) + file_size + len(self.after_file)

    def body(self, content: bytes) -> bytes:
        return self.before_file + content + self.after_file


def multipart(fields: dict[str, str] | None = None, filename: str = "audio.wav") -> Multipart:
    boundary = uuid.uuid4().hex
    parts = b"".join(
        f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    )
    before = (
        parts
        + (
            f'--{boundary}\r\ncontent-disposition: form-data; name="file";'
            f' filename="{filename}"\r\ncontent-type: application/octet-stream\r\n\r\n'
        ).encode()
    )
    return Multipart(boundary, before, f"\r\n--{boundary}--\r\n".encode())


def process_memory(server: RunningServer) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of the server process, in bytes."""
    values = {}
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(value.split()[0]) * 1024
    return values
