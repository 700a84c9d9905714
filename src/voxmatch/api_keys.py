"""API keys: the key file, key hashes, new keys, and looking a presented key up.

The key file holds one key per line, `NAME SHA256`, where SHA256 is the lowercase hex SHA-256
of the key's UTF-8 text; blank lines and lines starting with `#` are ignored. Only hashes are
stored, so the file reveals no key. Scripts outside voxmatch write this format: keep it.

Several lines may share a NAME: those keys then act as one owner (a key can be replaced without
its owner losing its tasks).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("voxmatch.keys")

KEY_BYTES = 32
"""Random bytes in a new key: 256 bits, as many as the hash that stores it."""

_HEX_DIGITS = frozenset("0123456789abcdef")
_SHA256_HEX_LENGTH = 64


class KeyFileError(ValueError):
    """A key file that cannot be used, or a key that cannot be added to it."""


@dataclass(frozen=True)
class KeyEntry:
    name: str
    sha256: str


def hash_key(key: str) -> str:
    """The key's SHA-256 as the key file stores it (lowercase hex of its UTF-8 text)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def check_name(name: str) -> None:
    """A NAME is one token of the line: no white space, and not a comment."""
    if not name or not name.isprintable() or any(char.isspace() for char in name):
        raise KeyFileError(f"key name {name!r} must be one word: printable, no spaces")
    if name.startswith("#"):
        raise KeyFileError(f"key name {name!r} must not start with # (that marks a comment)")


def parse_key_file(content: bytes, source: str) -> list[KeyEntry]:
    """The keys of a key file's content; `source` names the file in error messages.

    Errors name the line but never repeat it: a malformed line may be a key pasted by mistake.
    """
    entries = []
    for number, raw_line in enumerate(content.splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise KeyFileError(f"{source} line {number}: not UTF-8 text") from None
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise KeyFileError(
                f"{source} line {number}: expected NAME SHA256 (two fields), got"
                f" {len(fields)} fields"
            )
        name, digest = fields
        if len(digest) != _SHA256_HEX_LENGTH or not _HEX_DIGITS.issuperset(digest):
            raise KeyFileError(
                f"{source} line {number}: the second field must be the key's SHA-256 as"
                f" {_SHA256_HEX_LENGTH} lowercase hex digits"
            )
        try:
            check_name(name)
        except KeyFileError as error:
            raise KeyFileError(f"{source} line {number}: {error}") from None
        entries.append(KeyEntry(name, digest))
    return entries


def read_key_file(path: Path) -> list[KeyEntry]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"API key file {path} does not exist") from None
    except OSError as error:
        raise KeyFileError(f"cannot read API key file {path}: {error.strerror}") from None
    return parse_key_file(content, f"API key file {path}")


def add_key(path: Path, name: str) -> str:
    """Make a new key named `name`, append its line to the key file (created owner-only if
    missing) and return the key itself, which is stored nowhere."""
    check_name(name)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as error:
        raise KeyFileError(f"cannot open API key file {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb+") as stream:
        # Two `keys add` at once must not both pass the uniqueness check.
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
        content = stream.read()
        entries = parse_key_file(content, f"API key file {path}")
        if any(entry.name == name for entry in entries):
            raise KeyFileError(f"API key file {path} already has a key named {name!r}")
        key = new_key()
        separator = b"\n" if content and not content.endswith(b"\n") else b""
        stream.write(separator + f"{name} {hash_key(key)}\n".encode())
    return key


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[int, int, int] | None
    entries: tuple[KeyEntry, ...]


class KeyRing:
    """The keys of a key file, read again whenever the file changes.

    The file's modification time, size and inode are checked at each lookup (one stat call),
    so keys added or removed take effect at the next request, without a restart. A file that
    becomes unreadable or malformed is logged and the keys read before stay in force, as a
    server keeps its running configuration when a reload fails.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded = _Loaded(self._signature(), tuple(read_key_file(path)))
        if not self._loaded.entries:
            log.warning("API key file %s holds no key: requests that need one are refused", path)

    def __len__(self) -> int:
        return len(self._current().entries)

    def owner_of(self, key: str | None) -> str | None:
        """The NAME of `key`, or None when it is missing or not in the file.

        Every stored hash is compared, in constant time, so the answer's timing tells nothing
        about which hashes are close.
        """
        entries = self._current().entries
        if not key:
            return None
        digest = hash_key(key)
        owner = None
        for entry in entries:
            if hmac.compare_digest(digest, entry.sha256):
                owner = entry.name
        return owner

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def _current(self) -> _Loaded:
        loaded = self._loaded
        signature = self._signature()
        if signature == loaded.signature:
            return loaded
        try:
            entries = tuple(read_key_file(self.path))
        except KeyFileError as error:
            log.error("%s; keeping the %d keys read before", error, len(loaded.entries))
            # Remembered with the new signature: the error is logged once per change.
            entries = loaded.entries
        else:
            log.info("API key file %s changed: %d keys", self.path, len(entries))
        # One attribute assignment: threads that reload at the same time each store a whole
        # state, and the last one stands.
        self._loaded = _Loaded(signature, entries)
        return self._loaded
