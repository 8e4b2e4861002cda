"""Problem details (RFC 9457): the body, the aiohttp response, and a whole raw HTTP response."""

from __future__ import annotations

import json

import pytest

from streams import problems


def test_a_problem_has_the_rfc_members_and_the_error_code() -> None:
    assert problems.body(404, "not-found", "no such route") == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "error": "not-found",
        "detail": "no such route",
    }
    assert (
        json.loads(problems.encode(431, "too-many-headers", "x"))["title"]
        == "Request Header Fields Too Large"
    )


def test_a_status_python_does_not_name_still_has_a_title() -> None:
    assert problems.body(599, "odd", "x")["title"] == "Error"


def test_the_response_is_problem_json_with_its_headers() -> None:
    response = problems.response(401, "unauthorized", "send a token", {"WWW-Authenticate": "Bearer"})
    assert (response.status, response.content_type) == (401, problems.CONTENT_TYPE)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.body, bytes) and json.loads(response.body)["error"] == "unauthorized"


@pytest.mark.parametrize("detail", ["plain", 'quotes " and \\ and \u00e9 and \r\n'])
def test_a_raw_response_is_whole_http_and_closes(detail: str) -> None:
    raw = problems.raw(503, "too-many-connections", detail, {"Retry-After": "1"})
    head, _, content = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers["Content-Type"] == problems.CONTENT_TYPE and headers["Connection"] == "close"
    assert headers["Retry-After"] == "1" and int(headers["Content-Length"]) == len(content)
    assert json.loads(content) == problems.body(503, "too-many-connections", detail)
