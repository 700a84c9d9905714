"""Binding the server's ports before any work starts, so that a busy port is one clear error."""

from __future__ import annotations

import errno
import socket

_BACKLOG = 2048
"""uvicorn's default."""


class ListenError(OSError):
    """An address the server cannot listen on; the message names it and the flag to change."""


def bind_tcp(host: str, port: int, interface: str, flag: str) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to, as asyncio's create_server makes
    them. They listen at once, so that a later bind of the same port (gRPC's) sees it taken;
    connections made before the server accepts wait in the backlog.

    Raises ListenError, naming `interface` (REST, gRPC) and the `flag` that picks another port,
    when the name does not resolve or an address cannot be bound (in use, not local, no right).
    """
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        reason = str(error.strerror).lower()
        raise ListenError(f"cannot listen for {interface} on {where}: {reason}") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, protocol)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: an IPv6 socket takes IPv6 only, the IPv4 address its own.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
    except OSError as error:
        for sock in bound:
            sock.close()
        reason = (error.strerror or str(error)).lower()
        hint = f"; choose another port with {flag}" if error.errno == errno.EADDRINUSE else ""
        raise ListenError(f"cannot listen for {interface} on {where}: {reason}{hint}") from None
    return bound


def check_free(host: str, port: int, interface: str, flag: str) -> None:
    """Raise ListenError now if `port` is taken on `host`, for a server that binds it later
    itself (gRPC's own error comes with a C-level log line); port 0 is always free."""
    if port == 0:
        return
    for sock in bind_tcp(host, port, interface, flag):
        sock.close()
