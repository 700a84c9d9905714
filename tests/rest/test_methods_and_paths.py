"""405 answers name every method of the path."""

from __future__ import annotations

import uuid

import pytest

from _helpers import COMPARISON, RunningServer

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", f"{COMPARISON}/{uuid.uuid4()}", {"GET", "DELETE"}),
        ("POST", f"{EXTRACTION}/{uuid.uuid4()}", {"GET", "DELETE"}),
        ("GET", COMPARISON, {"POST"}),
        ("DELETE", "/api/system/info", {"GET"}),
    ],
)
def test_allow_lists_every_method_of_the_path(
    server: RunningServer, method: str, path: str, allowed: set[str]
) -> None:
    response = server.client().request(method, path)
    assert response.status_code == 405
    assert response.json()["type"] == "method.invalid"
    assert {name.strip() for name in response.headers["allow"].split(",")} == allowed
