"""The JSON request bodies shown in OpenAPI are the ones the decoders read.

The handlers decode bodies with msgspec structs; pydantic models only document them. Here the
document a real server serves is compared, field by field, with the structs' own JSON schema,
and each list's documented lower bound with the request rule that enforces it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from _helpers import RunningServer
from voxmatch.request_checks import RequestError, check_list_length
from voxmatch.rest.bodies import VoiceprintsBody
from voxmatch.rest.comparison import ComparisonBody

ROUTES: dict[str, type[msgspec.Struct]] = {
    "/api/technology/speaker-identification-voiceprint-comparison": ComparisonBody,
    "/api/technology/speaker-identification-voiceprint-merging": VoiceprintsBody,
    "/api/technology/speaker-identification-voiceprint-conversion": VoiceprintsBody,
}

_SHAPE_KEYS = ("type", "items", "anyOf")
"""What a field is (as opposed to how it is described)."""


def _resolved(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, section, name = schema["$ref"].split("/")
        schema = (document.get("components", {}).get(section) or document["$defs"])[name]
    return schema


def _decoded_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    document = msgspec.json.schema(struct)
    return _resolved(document, document)


@pytest.fixture(scope="module")
def openapi(server: RunningServer) -> dict[str, Any]:
    response = server.client().get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("path", ROUTES)
def test_the_documented_body_is_the_decoded_body(openapi: dict[str, Any], path: str) -> None:
    body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    shown = _resolved(body, openapi)
    decoded = _decoded_schema(ROUTES[path])
    assert shown["type"] == decoded["type"] == "object"
    assert sorted(shown["required"]) == sorted(decoded["required"])
    assert shown.keys() & {"additionalProperties"} == decoded.keys() & {"additionalProperties"}
    assert shown["properties"].keys() == decoded["properties"].keys()
    for name, field in decoded["properties"].items():
        documented = shown["properties"][name]
        assert {key: documented.get(key) for key in _SHAPE_KEYS} == {
            key: field.get(key) for key in _SHAPE_KEYS
        }, name
        if field.get("type") != "array":
            continue
        # The decoder leaves list lengths to the request rules: the document states their bound.
        assert documented["minItems"] == 1, name
        assert "maxItems" not in documented, name  # a setting, given in the description
        check_list_length(name, 1, max_list_length=1)
        with pytest.raises(RequestError):
            check_list_length(name, 0, max_list_length=1)
