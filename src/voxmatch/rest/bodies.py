"""Decoding JSON request bodies of voiceprints into SPE4 errors or checked batches."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from voxmatch.rest.errors import invalid_json, schema_error, validation_error, voiceprint_error
from voxmatch.voiceprint import VoiceprintBatch, VoiceprintError, decode_base64_batch

BodyT = TypeVar("BodyT")


def decode_body(decoder: msgspec.json.Decoder[BodyT], body: bytes) -> BodyT:
    """The typed body, or 400 (not JSON) / 422 (wrong shape, naming the field)."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise schema_error(error) from None
    except msgspec.DecodeError as error:
        raise invalid_json(error) from None


def check_list_length(field: str, items: list[Any], limit: int) -> None:
    """422 naming the field unless 1 <= len(items) <= limit."""
    if 1 <= len(items) <= limit:
        return
    problem, kind = (
        ("List should have at least 1 item", "too_short")
        if not items
        else (f"List should have at most {limit} items, not {len(items)}", "too_long")
    )
    raise validation_error(["body", field], problem, kind, {"limit": limit, "length": len(items)})


def decode_voiceprints(field: str, items: list[str], model: str | None = None) -> VoiceprintBatch:
    """The checked batch, or 422 naming the field and the index of the first bad voiceprint."""
    try:
        return decode_base64_batch(items, model=model)
    except VoiceprintError as error:
        raise voiceprint_error(error, field) from None


class _VoiceprintsBody(msgspec.Struct):
    voiceprints: list[str]


_decoder = msgspec.json.Decoder(_VoiceprintsBody)


def decode_voiceprints_body(body: bytes, max_list_length: int) -> VoiceprintBatch:
    """Parse `{"voiceprints": [...]}` and decode every voiceprint; raise ApiError (400/422)."""
    parsed = decode_body(_decoder, body)
    check_list_length("voiceprints", parsed.voiceprints, max_list_length)
    return decode_voiceprints("voiceprints", parsed.voiceprints)
