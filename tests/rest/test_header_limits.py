"""Request heads are bounded in bytes and headers: 431 with an SPE4 body, memory unchanged."""

from __future__ import annotations

from typing import Any

from _raw_http import connect, process_memory, request_head, wait_until

from _helpers import RunningServer, ServerFactory

INFO = "/api/system/info"
MIB = 1024 * 1024
GIANT = 16 * MIB
"""Bytes of the one header sent; without a bound the server grew by 3.5 times this."""
MEMORY_SLACK = 6 * MIB
"""Growth of the server allowed while it refuses the giant header: allocator noise, not the
header."""


def assert_431(body: dict[str, Any], problem: str) -> None:
    assert body["type"] == "request.header-fields-too-large"
    assert body["message"]
    (item,) = body["detail"]
    assert item["location"] == ["header"]
    assert problem in item["message"]


def test_a_giant_header_is_refused_without_growing_the_server(server: RunningServer) -> None:
    client = server.client()
    assert client.get(INFO).status_code == 200
    warm_up = connect(server)
    warm_up.send(request_head("GET", INFO, {"x-big": "a" * 100_000}))
    assert warm_up.read_response().status == 431
    warm_up.close()
    before = process_memory(server)

    connection = connect(server)
    head = f"GET {INFO} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ".encode()
    connection.send_in_background(head, b"a" * 65536, GIANT)
    response = connection.read_response()
    assert response.status == 431
    assert_431(response.json(), "exceed 65536 bytes")
    assert response.headers["connection"] == "close"
    assert response.headers["x-request-id"]
    connection.read_until_closed()
    connection.close()

    after = process_memory(server)
    assert after["VmHWM"] - before["VmHWM"] < MEMORY_SLACK, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < MEMORY_SLACK, (before, after)
    assert client.get(INFO).status_code == 200


def test_giant_trailer_fields_are_refused_without_growing_the_server(
    server: RunningServer,
) -> None:
    before = process_memory(server)
    connection = connect(server)
    head = request_head(
        "POST",
        "/api/technology/speaker-identification-voiceprint-comparison",
        {"content-type": "application/json", "transfer-encoding": "chunked"},
    )
    # A chunked body of two bytes, then a trailer field without end.
    connection.send_in_background(head + b"2\r\n{}\r\n0\r\nx-trailer: ", b"a" * 65536, GIANT)
    response = connection.read_response()
    connection.close()
    assert response.status == 431
    assert_431(response.json(), "trailer fields exceed 65536 bytes")
    after = process_memory(server)
    assert after["VmHWM"] - before["VmHWM"] < MEMORY_SLACK, (before, after)
    # The app reading that body learns that its client is gone.
    wait_until(lambda: "went away during POST" in server.log(), "the request ends")
    assert "Traceback" not in server.log()


def test_too_many_headers_are_refused(server: RunningServer) -> None:
    connection = connect(server)
    connection.send(request_head("GET", INFO, {f"x-h{index}": "v" for index in range(150)}))
    response = connection.read_response()
    connection.close()
    assert response.status == 431
    assert_431(response.json(), "more than 100 headers")


def test_a_giant_url_is_refused(server: RunningServer) -> None:
    connection = connect(server)
    connection.send(request_head("GET", INFO + "?q=" + "a" * 200_000, {}))
    response = connection.read_response()
    connection.close()
    assert response.status == 431
    assert_431(response.json(), "request line and headers")


def test_heads_within_the_limits_are_served(server: RunningServer) -> None:
    client = server.client()
    near_the_byte_limit = client.get(INFO, headers={"x-big": "a" * 60_000})
    assert near_the_byte_limit.status_code == 200
    near_the_count_limit = client.get(INFO, headers={f"x-h{index}": "v" for index in range(90)})
    assert near_the_count_limit.status_code == 200


def test_pipelined_and_kept_alive_requests_are_served(server: RunningServer) -> None:
    connection = connect(server)
    body = b"x" * 300_000
    # A body many times the head limit, then two requests sent at once on the same connection.
    connection.send(
        request_head(
            "POST",
            "/api/technology/speaker-identification-voiceprint-comparison",
            {"content-type": "application/json", "content-length": str(len(body))},
        )
        + body
        + request_head("GET", INFO, {})
        + request_head("GET", INFO, {"x-request-id": "second"})
    )
    statuses = [connection.read_response() for _ in range(3)]
    connection.close()
    assert [response.status for response in statuses] == [400, 200, 200]
    assert statuses[2].headers["x-request-id"] == "second"


def test_limits_are_settings(server_factory: ServerFactory) -> None:
    limited = server_factory(
        {"VOXMATCH_MAX_HEADER_BYTES": "4096", "VOXMATCH_MAX_HEADER_COUNT": "10"}
    )
    for headers, problem in (
        ({"x-big": "a" * 5000}, "exceed 4096 bytes"),
        ({f"x-h{index}": "v" for index in range(12)}, "more than 10 headers"),
    ):
        connection = connect(limited)
        connection.send(request_head("GET", INFO, headers))
        response = connection.read_response()
        connection.close()
        assert response.status == 431
        assert_431(response.json(), problem)
    assert limited.client().get(INFO, headers={"x-small": "a" * 3000}).status_code == 200


def test_a_request_that_is_not_http_gets_an_spe4_400(server: RunningServer) -> None:
    connection = connect(server)
    connection.send(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    response = connection.read_response()
    connection.close()
    assert response.status == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["type"] == "request.invalid"
    assert server.client().get(INFO).status_code == 200
