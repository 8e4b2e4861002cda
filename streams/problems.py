"""Error bodies of the HTTP API: problem details (RFC 9457), `application/problem+json`.

Every error the API answers, whoever answers it (a view, a middleware, the router, or aiohttp's
parser before any of them runs, `streams.webserver`), is one of these:
`{"type": "about:blank", "title": <the status's phrase>, "status": <code>, "error": <code>,
"detail": <text>}`. `type` is `about:blank` (the problem means what its status means, RFC 9457
4.2.1); `error`, an extension member, is the machine-readable code the API answered before it
spoke RFC 9457 (`not-found`, `invalid-digest`, `busy`, a `LockerError`'s class name, ...), so
clients keyed on it go on working. `detail` never holds bytes of the request (its path, query or
headers): an error says what was wrong, never echoes what was sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

import msgspec
from aiohttp import web

CONTENT_TYPE = "application/problem+json"

# The codes of the errors the HTTP layer answers itself (not a view): `error` of their bodies.
BAD_REQUEST = "bad-request"  # not well-formed HTTP/1.1: a bad request line, header or framing
NOT_FOUND = "not-found"  # no such route
METHOD_NOT_ALLOWED = "method-not-allowed"
BODY_TOO_LARGE = "body-too-large"
URL_TOO_LONG = "url-too-long"
HEADER_TOO_LARGE = "header-too-large"
TOO_MANY_HEADERS = "too-many-headers"
TOO_MANY_CONNECTIONS = "too-many-connections"
INTERNAL = "internal"


def body(status: int, error: str, detail: str) -> dict[str, object]:
    """The problem object: RFC 9457's members, and `error`."""
    return {"type": "about:blank", "title": title(status), "status": status, "error": error, "detail": detail}


def title(status: int) -> str:
    """The status's reason phrase (`about:blank` problems take it as their title)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status Python does not name
        return "Error"


def encode(status: int, error: str, detail: str) -> bytes:
    return msgspec.json.encode(body(status, error, detail))


def response(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The aiohttp response of a problem."""
    return web.Response(
        body=encode(status, error, detail), status=status, content_type=CONTENT_TYPE, headers=headers
    )


def raw(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response, with `Connection: close`: for a connection that is answered
    before, or without, any HTTP parsing (one beyond `Service:MaxConnections`)."""
    content = encode(status, error, detail)
    lines = [
        f"HTTP/1.1 {status} {title(status)}",
        f"Content-Type: {CONTENT_TYPE}",
        f"Content-Length: {len(content)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + content
