"""Decoding JSON request bodies of voiceprints into SPE4 errors or checked batches."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from voxmatch import request_checks
from voxmatch.request_checks import RequestError
from voxmatch.rest.errors import (
    ApiError,
    invalid_json,
    request_error,
    schema_error,
    voiceprint_error,
)
from voxmatch.voiceprint import VoiceprintBatch, VoiceprintError, decode_base64_batch

BodyT = TypeVar("BodyT")


async def read_body(request: Request) -> bytes:
    """The whole body. A JSON body arrives in one piece (gathered by the HTTP protocol, see
    voxmatch.rest.header_limits), and is returned as it is: Starlette's `Request.body` joins it
    with the empty piece that ends its stream, a copy (of 55 MB for 50,000 voiceprints)."""
    pieces = [piece async for piece in request.stream() if piece]
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def decode_body(decoder: msgspec.json.Decoder[BodyT], body: bytes) -> BodyT:
    """The typed body, or 400 (not JSON) / 422 (wrong shape, naming the field)."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise schema_error(error) from None
    except msgspec.DecodeError as error:
        raise invalid_json(error) from None


def body_error(error: RequestError) -> ApiError:
    """The 422 of a body that broke a request rule, located at the field in the body."""
    return request_error(error, ["body", *error.field])


def decode_voiceprints(field: str, items: list[str], model: str | None = None) -> VoiceprintBatch:
    """The checked batch, or 422 naming the field and the index of the first bad voiceprint."""
    try:
        return decode_base64_batch(items, model=model)
    except VoiceprintError as error:
        raise voiceprint_error(error, field) from None


class VoiceprintsBody(msgspec.Struct):
    """The body as it is decoded; schemas.VoiceprintsRequest shows it in OpenAPI, and a test
    keeps the two the same (tests/rest/test_request_schemas.py)."""

    voiceprints: list[str]


_decoder = msgspec.json.Decoder(VoiceprintsBody)


def decode_voiceprints_body(body: bytes, max_list_length: int) -> VoiceprintBatch:
    """Parse `{"voiceprints": [...]}` and decode every voiceprint; raise ApiError (400/422)."""
    parsed = decode_body(_decoder, body)
    try:
        request_checks.check_list_length("voiceprints", parsed.voiceprints, max_list_length)
    except RequestError as error:
        raise body_error(error) from None
    return decode_voiceprints("voiceprints", parsed.voiceprints)
