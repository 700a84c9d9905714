"""405 answers name every method of the path."""

from __future__ import annotations

import pytest

from _helpers import COMPARISON, RunningServer

EXTRACTION = "/api/technology/speaker-identification-voiceprint-extraction"
# A fixed id, not uuid4(): parameters are part of test ids, which every xdist worker must agree on.
UNKNOWN_TASK = "5f1d2c3b-0a4e-4b6f-8c7d-9e0f1a2b3c4d"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", f"{COMPARISON}/{UNKNOWN_TASK}", {"GET", "DELETE"}),
        ("POST", f"{EXTRACTION}/{UNKNOWN_TASK}", {"GET", "DELETE"}),
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
