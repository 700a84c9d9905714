"""Reading voiceprints from files, for the command line.

Accepted: a `.vp` file (the base64 text, or the raw binary record), a text file with one base64
voiceprint per line, a JSON file holding a list of base64 voiceprints (or `{"voiceprints": [...]}`,
or an SPE4 extraction result with `channels`), or a folder of `.vp` files. Text may end with a
newline or not, use CRLF line ends, and start with a byte-order mark (UTF-8 or UTF-16, as Windows
editors and PowerShell redirections write).
"""

from __future__ import annotations

import binascii
import codecs
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from voxmatch.voiceprint import MAGIC, VoiceprintBatch, VoiceprintError, decode_base64_batch


class VoiceprintFileError(ValueError):
    """A file that holds no usable voiceprints, with the file and item named."""


def read_voiceprints(paths: Iterable[Path]) -> tuple[list[str], VoiceprintBatch]:
    """Labels (file name, with the item number for lists) and one batch of all voiceprints."""
    labels: list[str] = []
    sources: list[tuple[Path, int]] = []
    texts: list[str] = []
    for path in _expand(paths):
        try:
            content = path.read_bytes()
        except OSError as error:
            raise VoiceprintFileError(f"cannot read {path}: {error.strerror}") from None
        items = (
            [binascii.b2a_base64(content, newline=False).decode()]
            if content.startswith(MAGIC)
            else _texts_in(path, content)
        )
        for number, text in enumerate(items):
            texts.append(text)
            labels.append(path.stem if len(items) == 1 else f"{path.stem}[{number}]")
            sources.append((path, number))
    if not labels:
        raise VoiceprintFileError("no voiceprints found in the given files")
    try:
        batch = decode_base64_batch(texts)
    except VoiceprintError as error:
        path, number = sources[error.index]
        raise VoiceprintFileError(f"{path} (item {number}): {error}") from None
    return labels, batch


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.vp"))
            if not found:
                raise VoiceprintFileError(f"{path} holds no .vp files")
            files.extend(found)
        else:
            files.append(path)
    return files


def _texts_in(path: Path, content: bytes) -> list[str]:
    stripped = _without_byte_order_mark(path, content).strip()
    if stripped[:1] in (b"[", b"{"):
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError as error:
            raise VoiceprintFileError(f"{path}: not valid JSON: {error}") from None
        return _texts_in_json(path, document)
    try:
        text = stripped.decode("ascii")
    except UnicodeDecodeError:
        raise VoiceprintFileError(f"{path}: neither a voiceprint nor a list of them") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise VoiceprintFileError(f"{path} is empty")
    return lines


def _without_byte_order_mark(path: Path, content: bytes) -> bytes:
    """UTF-8 content of a text file, re-encoded from UTF-16 when a byte-order mark says so."""
    if content.startswith(codecs.BOM_UTF8):
        return content[len(codecs.BOM_UTF8) :]
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return content.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise VoiceprintFileError(f"{path}: not valid UTF-16 text") from None
    return content


def _texts_in_json(path: Path, document: Any) -> list[str]:
    if isinstance(document, dict):
        result = document.get("result") or document
        if isinstance(result, dict) and isinstance(result.get("channels"), list):
            document = [channel.get("voiceprint") for channel in result["channels"]]
        else:
            document = document.get("voiceprints")
    if not isinstance(document, list) or not all(isinstance(item, str) for item in document):
        raise VoiceprintFileError(
            f"{path}: expected a JSON list of base64 voiceprints, an object with"
            " 'voiceprints', or an SPE4 extraction result"
        )
    if not document:
        raise VoiceprintFileError(f"{path} holds an empty list")
    return document
