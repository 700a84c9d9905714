"""The API key file: its format, new keys, lookups, and re-reading when the file changes."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from voxmatch.api_keys import KeyFileError, KeyRing, add_key, hash_key, parse_key_file


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hash_is_the_lowercase_hex_sha256_of_the_utf8_text() -> None:
    assert hash_key("clé") == hashlib.sha256("clé".encode()).hexdigest()
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_comments_blank_lines_and_crlf_are_ignored() -> None:
    content = (
        f"# voxmatch keys\r\n\r\n   \nalice {sha256_hex('a')}\r\n  # indented comment\n"
        f"bob\t{sha256_hex('b')}  \n"
    ).encode()
    entries = parse_key_file(content, "keys")
    assert [(entry.name, entry.sha256) for entry in entries] == [
        ("alice", sha256_hex("a")),
        ("bob", sha256_hex("b")),
    ]


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("alice", "got 1 fields"),
        (f"alice smith {'0' * 64}", "got 3 fields"),
        ("alice secret-key-pasted-by-mistake", "64 lowercase hex digits"),
        (f"alice {'A' * 64}", "64 lowercase hex digits"),
        (f"alice {'0' * 63}", "64 lowercase hex digits"),
    ],
)
def test_a_malformed_line_is_named_by_its_number_and_not_repeated(
    bad_line: str, problem: str
) -> None:
    content = f"# keys\nbob {sha256_hex('b')}\n\n{bad_line}\n".encode()
    with pytest.raises(KeyFileError) as caught:
        parse_key_file(content, "API key file keys.txt")
    message = str(caught.value)
    assert message.startswith("API key file keys.txt line 4: ")
    assert problem in message
    assert "secret-key" not in message


def test_a_line_that_is_not_utf8_is_named() -> None:
    with pytest.raises(KeyFileError, match="line 2: not UTF-8"):
        parse_key_file(f"bob {sha256_hex('b')}\n\xff\xfe {'0' * 64}\n".encode("latin-1"), "f")


def test_lookup_finds_the_name_of_a_key_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"alice {sha256_hex('k1')}\nbob {sha256_hex('k2')}\nalice {sha256_hex('k3')}\n")
    keys = KeyRing(path)
    assert len(keys) == 3
    assert keys.owner_of("k1") == "alice"
    assert keys.owner_of("k3") == "alice"  # two keys of one owner: a key can be replaced
    assert keys.owner_of("k2") == "bob"
    assert keys.owner_of("k4") is None
    assert keys.owner_of("") is None
    assert keys.owner_of(None) is None
    assert keys.owner_of(sha256_hex("k1")) is None  # the stored hash is not a key


def test_add_creates_an_owner_only_file_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    first = add_key(path, "alice")
    second = add_key(path, "bob")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 43
    assert first != second
    assert path.read_text() == f"alice {sha256_hex(first)}\nbob {sha256_hex(second)}\n"
    keys = KeyRing(path)
    assert (keys.owner_of(first), keys.owner_of(second)) == ("alice", "bob")


def test_add_keeps_lines_apart_when_the_file_does_not_end_with_a_newline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# written by a script\nalice {sha256_hex('a')}")
    key = add_key(path, "bob")
    assert path.read_text().splitlines()[1:] == [
        f"alice {sha256_hex('a')}",
        f"bob {sha256_hex(key)}",
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("alice", "already has a key named 'alice'"), ("a b", "one word"), ("", "one word"),
     ("#ops", "must not start with #"), ("tab\there", "one word")],
)  # fmt: skip
def test_add_refuses_names_that_are_taken_or_not_one_word(
    tmp_path: Path, name: str, problem: str
) -> None:
    path = tmp_path / "keys"
    add_key(path, "alice")
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match=problem):
        add_key(path, name)
    assert path.read_bytes() == before


def test_add_refuses_to_extend_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alice not-a-hash\n")
    with pytest.raises(KeyFileError, match="line 1"):
        add_key(path, "bob")
    assert path.read_text() == "alice not-a-hash\n"


def test_concurrent_adds_keep_every_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keys: dict[str, str] = {}

    def add(name: str) -> None:
        keys[name] = add_key(path, name)

    threads = [threading.Thread(target=add, args=(f"user{number}",)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ring = KeyRing(path)
    assert len(ring) == 16
    assert all(ring.owner_of(key) == name for name, key in keys.items())


def test_changes_to_the_file_apply_at_the_next_lookup(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"alice {sha256_hex('old')}\n")
    keys = KeyRing(path)
    assert keys.owner_of("old") == "alice"
    bob = add_key(path, "bob")
    assert keys.owner_of(bob) == "bob"
    # Revoked by rewriting the file, as an editor does (a new file renamed into place).
    replacement = tmp_path / "keys.new"
    replacement.write_text(f"alice {sha256_hex('new')}\nbob {sha256_hex(bob)}\n")
    os.replace(replacement, path)
    assert keys.owner_of("old") is None
    assert keys.owner_of("new") == "alice"


def test_a_broken_file_keeps_the_keys_read_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"alice {sha256_hex('a')}\n")
    keys = KeyRing(path)
    path.write_text(f"alice {sha256_hex('a')}\nbob oops\n")
    with caplog.at_level(logging.ERROR, logger="voxmatch.keys"):
        assert keys.owner_of("a") == "alice"
        assert keys.owner_of("a") == "alice"
    errors = [record.getMessage() for record in caplog.records]
    assert len(errors) == 1  # once per change, not once per request
    assert "line 2" in errors[0]
    assert "keeping the 1 keys read before" in errors[0]
    path.unlink()
    assert keys.owner_of("a") == "alice"
    path.write_text(f"carol {sha256_hex('c')}\n")
    assert keys.owner_of("a") is None
    assert keys.owner_of("c") == "carol"


def test_a_missing_or_malformed_file_is_an_error_at_once(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        KeyRing(tmp_path / "missing")
    path = tmp_path / "keys"
    path.write_text("\n\nalice\n")
    with pytest.raises(KeyFileError, match="line 3"):
        KeyRing(path)
