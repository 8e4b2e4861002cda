"""The HTTP server's protocol on a bare aiohttp app, over raw sockets: the header timeout leaves a
slow download and a queued request alone; a long URL is told from a long header; the limits are
checked when read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from locker import config
from locker.errors import UsageError
from streams.webserver import Limits, Site, body_within, limits

LIMITS = Limits(
    max_url_bytes=100,
    max_header_bytes=200,
    max_headers=10,
    max_body_bytes=1000,
    header_timeout=0.5,
    idle_timeout=5,
    max_connections=4,
)
CHUNK = 64 * 1024
SLOW = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
FINE = b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n"


async def slow(request: web.Request) -> web.StreamResponse:
    """Three chunks, 0.3 s apart: longer than the header timeout."""
    response = web.StreamResponse()
    response.content_length = 3 * CHUNK
    await response.prepare(request)
    for _ in range(3):
        await response.write(b"x" * CHUNK)
        await asyncio.sleep(0.3)
    await response.write_eof()
    return response


async def fine(request: web.Request) -> web.Response:
    return web.Response(text="fine")


@contextlib.asynccontextmanager
async def serving(limits: Limits) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to an app served through `Site`."""
    app = web.Application(middlewares=[body_within(limits.max_body_bytes)])
    app.router.add_get("/slow", slow)
    app.router.add_get("/fine", fine)
    runner = web.AppRunner(app)
    await runner.setup()
    await Site(runner, "127.0.0.1", 0, limits).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
    try:
        yield reader, writer
    finally:
        writer.close()
        await runner.cleanup()


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")
    )
    return int(head.split()[1]), await asyncio.wait_for(reader.readexactly(length), 5)


def test_a_slow_download_and_a_request_queued_behind_it_outlast_the_header_timeout() -> None:
    async def main() -> None:
        async with serving(LIMITS) as (reader, writer):
            started = time.monotonic()
            writer.write(SLOW + FINE)  # pipelined: the second waits for the first's answer
            assert await answer(reader) == (200, b"x" * 3 * CHUNK)
            assert await answer(reader) == (200, b"fine")
            assert time.monotonic() - started > LIMITS.header_timeout + 0.3

    asyncio.run(main())


@pytest.mark.parametrize(("url_bytes", "status"), [(100, 414), (200, 431)])
def test_a_long_url_is_414_unless_its_limit_is_the_headers(url_bytes: int, status: int) -> None:
    async def main() -> None:
        async with serving(replace(LIMITS, max_url_bytes=url_bytes)) as (reader, writer):
            writer.write(b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            code, body = await answer(reader)
            assert (code, json.loads(body)["status"]) == (status, status)

    asyncio.run(main())


def test_limits_are_read_from_the_service_keys_and_must_be_positive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_HOME", str(tmp_path))
    assert limits(config.load()).max_connections == 512
    monkeypatch.setenv("STELLA_SERVICE__HEADERTIMEOUT", "0")
    with pytest.raises(UsageError, match="Service:HeaderTimeout must be at least 1"):
        limits(config.load())
