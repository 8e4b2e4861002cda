"""The HTTP server's guards on a live service, spoken to over raw sockets (an HTTP client would
refuse to send most of these requests): what aiohttp's parser refuses is problem JSON that never
echoes the request; a client that sends its headers slowly is cut off after the header timeout, an
idle keep-alive connection after the idle timeout; connections beyond the cap are refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from commands import service
from locker.config import Settings
from streams import problems

pytestmark = pytest.mark.integration

MARKER = "zq7-planted-marker"  # put in every bad request: no answer may hold it
HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS = 2, 4, 5
GOOD = b"GET /openapi.json HTTP/1.1\r\nHost: locker\r\n\r\n"


@pytest.fixture
def guarded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A running service with short timeouts and a small cap; its port."""
    monkeypatch.setenv("STELLA_SERVICE__HEADERTIMEOUT", str(HEADER_TIMEOUT))
    monkeypatch.setenv("STELLA_SERVICE__IDLETIMEOUT", str(IDLE_TIMEOUT))
    monkeypatch.setenv("STELLA_SERVICE__MAXCONNECTIONS", str(MAX_CONNECTIONS))
    service.start(settings)
    try:
        yield urlsplit(settings.api_url).port or 0
    finally:
        service.stop(settings)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: its status, headers (lower-case names) and all its bytes."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return int(status_line.split()[1]), headers, head + body


async def ask(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await connect(port)
    try:
        writer.write(request)
        return await answer(reader)
    finally:
        writer.close()


def assert_problem(raw: bytes, headers: dict[str, str], status: int, error: str) -> None:
    assert headers["content-type"] == problems.CONTENT_TYPE, raw[:300]
    body = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert body["type"] == "about:blank" and body["title"] and body["detail"], body
    assert (body["status"], body["error"]) == (status, error), body
    assert MARKER.encode() not in raw, raw[:300]


BAD = [
    (f"GET /no/such/{MARKER} HTTP/1.1\r\nHost: locker\r\n\r\n", 404, "not-found"),
    (
        f"DELETE /openapi.json?{MARKER} HTTP/1.1\r\nHost: locker\r\nX-M: {MARKER}\r\n\r\n",
        405,
        "method-not-allowed",
    ),
    (
        f"GET /openapi.json HTTP/1.1\r\nHost: locker\r\nContent-Length: 70000\r\n\r\n{MARKER}",
        413,
        problems.BODY_TOO_LARGE,
    ),
    (f"GET /{MARKER}{'u' * 5000} HTTP/1.1\r\nHost: locker\r\n\r\n", 414, problems.URL_TOO_LONG),
    (f"GET / HTTP/1.1\r\nHost: locker\r\nX-M: {MARKER}{'h' * 9000}\r\n\r\n", 431, problems.HEADER_TOO_LARGE),
    (
        "GET / HTTP/1.1\r\nHost: locker\r\n" + "".join(f"X-{n}: {MARKER}\r\n" for n in range(120)) + "\r\n",
        431,
        problems.TOO_MANY_HEADERS,
    ),
    (f"G\x00T /{MARKER} HTTP/1.1\r\nHost: locker\r\n\r\n", 400, problems.BAD_REQUEST),
    (f"GET /{MARKER} HTTP/1.1\r\nHost: locker\r\n{MARKER} no colon\r\n\r\n", 400, problems.BAD_REQUEST),
]


async def refused_requests(port: int) -> None:
    for request, status, error in BAD:
        code, headers, raw = await ask(port, request.encode("latin-1"))
        assert code == status, raw[:300]
        assert_problem(raw, headers, status, error)
        if status == 405:
            assert "GET" in headers["allow"]


async def slow_headers(port: int) -> float:
    """Seconds until the service cuts a client that sends its headers a byte per 0.5 s."""
    reader, writer = await connect(port)
    started = time.monotonic()
    try:
        for byte in GOOD.replace(b"\r\n\r\n", b"\r\nX-Slow: " + b"s" * 20 + b"\r\n\r\n"):
            writer.write(bytes([byte]))
            try:
                if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                    break  # closed, unanswered
            except TimeoutError:
                continue
        else:
            raise AssertionError("the slow client was never cut off")
    finally:
        writer.close()
    return time.monotonic() - started


async def keep_alive(port: int) -> float:
    """Two requests on one connection, idle longer than the header timeout in between; the
    seconds it then stays open, idle, before the service closes it."""
    reader, writer = await connect(port)
    try:
        writer.write(GOOD)
        assert (await answer(reader))[0] == 200
        await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # idle: not the header timeout's business
        writer.write(GOOD)
        assert (await answer(reader))[0] == 200
        idle = time.monotonic()
        assert await asyncio.wait_for(reader.read(), IDLE_TIMEOUT + 5) == b""
        return time.monotonic() - idle
    finally:
        writer.close()


async def timeouts(port: int) -> None:
    cut, idle = await asyncio.gather(slow_headers(port), keep_alive(port))
    assert HEADER_TIMEOUT - 0.5 <= cut <= HEADER_TIMEOUT + 1.5, cut
    assert IDLE_TIMEOUT - 0.5 <= idle <= IDLE_TIMEOUT + 1.5, idle


async def connection_cap(port: int) -> None:
    held = [await connect(port) for _ in range(MAX_CONNECTIONS)]
    for reader, writer in held:  # each has had an answer: all of them are the service's
        writer.write(GOOD)
        assert (await answer(reader))[0] == 200
    reader, writer = await connect(port)
    code, headers, raw = await answer(reader)
    assert code == 503 and headers["retry-after"] == "1"
    assert_problem(raw, headers, 503, problems.TOO_MANY_CONNECTIONS)
    assert await reader.read() == b""  # and closed
    writer.close()

    held.pop()[1].close()  # one slot frees once the service sees the close
    deadline = time.monotonic() + 5
    while (code := (await ask(port, GOOD))[0]) == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert code == 200
    for _, writer in held:
        writer.close()


def test_refused_requests_timeouts_and_the_connection_cap(guarded: int) -> None:
    asyncio.run(refused_requests(guarded))
    asyncio.run(timeouts(guarded))
    asyncio.run(connection_cap(guarded))
