"""GET /artifacts/{id}: safe headers, ETag and Range, streamed large blobs, memory flat under load."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from commands import service
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from streams.topics import Topics
from tests.integration.helpers import index_count, produce, submission, wait_for

pytestmark = pytest.mark.integration
MIB = 1 << 20


def ingest_typed(settings: Settings, items: list[tuple[bytes, str]]) -> None:
    before = index_count(settings)
    topic = Topics(settings.topic_prefix).submissions
    records = [(digest_of(c).encode(), submission(c, media_type=media)) for c, media in items]
    asyncio.run(produce(settings, topic, records))
    wait_for(lambda: index_count(settings) == before + len(items), what="ingest")


def get(settings: Settings, artifact_id: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{settings.api_url}/artifacts/{artifact_id}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_headers_etag_and_ranges_small_and_streamed(running: Settings) -> None:
    page = b"<html><script>alert(1)</script></html>"
    big = os.urandom(3 * MIB + 17)  # streamed: over the 1 MiB read in one piece
    ingest_typed(running, [(page, "text/html"), (big, "application/vnd.in-toto+json; charset=utf-8")])
    html_id, big_id = digest_of(page), digest_of(big)

    status, headers, body = get(running, html_id)
    assert (status, body) == (200, page)
    assert headers["Content-Type"] == "application/octet-stream"  # never rendered as a page
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"] == f'attachment; filename="{html_id.removeprefix("sha256:")}"'
    assert headers["ETag"] == f'"{html_id}"'
    assert get(running, html_id, **{"If-None-Match": f'"{html_id}"'})[0] == 304
    assert get(running, html_id, Range="bytes=6-13")[::2] == (206, page[6:14])
    assert get(running, html_id, Range="bytes=-4")[2] == page[-4:]
    status, headers, body = get(running, html_id, Range=f"bytes={len(page)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(page)}"
    assert headers["Content-Type"] == "application/problem+json" and json.loads(body)["status"] == 416

    status, headers, body = get(running, big_id)
    assert status == 200 and body == big and headers["Content-Type"] == "application/vnd.in-toto+json"
    status, headers, body = get(running, big_id, Range=f"bytes={MIB - 5}-{2 * MIB + 4}")
    assert status == 206 and body == big[MIB - 5 : 2 * MIB + 5]
    assert headers["Content-Range"] == f"bytes {MIB - 5}-{2 * MIB + 4}/{len(big)}"

    head = urllib.request.Request(f"{running.api_url}/artifacts/{big_id}", method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Length"] == str(len(big))
        assert response.read() == b""

    # A damaged large blob: 409 before any byte is sent, as for a small one.
    path = BlobStore(running.evidence_path).path(big_id)
    damaged = bytearray(big)
    damaged[-1] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(damaged))
    status, _, body = get(running, big_id)
    assert status == 409 and b"integrity-mismatch" in body


def test_200_concurrent_downloads_of_8_mib_keep_the_worker_small(running: Settings) -> None:
    blob = os.urandom(8 * MIB)
    ingest_typed(running, [(blob, "application/octet-stream")])
    url = f"{running.api_url}/artifacts/{digest_of(blob)}"
    pid = service.daemon(running).pid()
    assert pid is not None
    before = _rss_peak(pid)

    async def download(session: aiohttp.ClientSession) -> str:
        hasher = hashlib.sha256()
        async with session.get(url) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(256 * 1024):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()

    async def all_at_once() -> list[str]:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return await asyncio.gather(*(download(session) for _ in range(200)))

    digests = asyncio.run(all_at_once())
    assert set(digests) == {digest_of(blob)}
    peak = _rss_peak(pid)
    print(f"worker peak RSS: {before / MIB:.0f} MiB before, {peak / MIB:.0f} MiB after 200 x 8 MiB")
    assert peak < 300 * MIB, f"the worker peaked at {peak / MIB:.0f} MiB (was {before / MIB:.0f} MiB)"


def _rss_peak(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
