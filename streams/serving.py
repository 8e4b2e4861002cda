"""An artifact's bytes over HTTP: streamed in bounded chunks, checked against its id, safe headers.

- `Content-Type` is the producer's media type only if its base type is one of `EVIDENCE_TYPES`
  (served without parameters), else `application/octet-stream`; every answer also carries
  `X-Content-Type-Options: nosniff` and `Content-Disposition: attachment`, so a browser never
  renders evidence as a page.
- The ETag is the digest: `If-None-Match` with it answers 304. One `Range` of bytes answers 206;
  a range past the end 416 (a problem, `streams.problems`); several ranges, or one that does not
  parse, get the whole (RFC 9110 lets a server ignore Range).
- Checked: a blob up to `WHOLE` bytes is read at once and checked before a byte goes out (409
  when bad, as before). A larger one is hashed first, chunk by chunk (409 when bad), then sent
  chunk by chunk while hashed again; should that second hash differ (the file changed in between),
  the connection is cut before the last chunk, so a client sees a short body, never a whole bad
  one. Memory per download is one chunk, whatever the size.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import structlog
from aiohttp import web

from locker.cas import Blobs
from streams import problems

WHOLE = 1 << 20  # blobs up to 1 MiB are read and checked in one piece
CHUNK = 128 * 1024
# The media types of supply-chain evidence, served as such; anything else is octet-stream.
EVIDENCE_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/vnd.in-toto+json",
        "application/vnd.in-toto.bundle+jsonl",
        "application/vnd.dsse.envelope.v1+json",
        "application/vnd.dev.sigstore.bundle+json",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/spdx+json",
        "text/spdx",
        "application/vnd.cyclonedx+json",
        "application/vnd.cyclonedx+xml",
        "application/openvex+json",
        "application/csaf+json",
        "application/sarif+json",
        "application/pgp-signature",
        "application/pkix-cert",
        "application/x-pem-file",
        "application/octet-stream",
        "text/plain",
    }
)
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
log = structlog.get_logger("stella.api")


def served_type(media_type: str) -> str:
    base = media_type.split(";", 1)[0].strip().lower()
    return base if base in EVIDENCE_TYPES else "application/octet-stream"


def etag(artifact_id: str) -> str:
    return f'"{artifact_id}"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """Does an `If-None-Match` header name this ETag (or `*`)? Weak comparison (RFC 9110 13.1.2)."""
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or tag in tags


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range `header` asks for, as (first, last) inclusive; None for the whole. Raises
    `ValueError` for a range that starts past the end (416)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:  # several ranges, another unit, junk: the whole
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("an empty suffix")
        return max(size - n, 0), size - 1
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or (last and int(last) < start):
        raise ValueError(f"bytes {start}- of {size}")
    return start, end


def headers(artifact_id: str, media_type: str) -> dict[str, str]:
    hexdigest = artifact_id.removeprefix("sha256:")
    return {
        "Content-Type": served_type(media_type),
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="{hexdigest}"',
        "ETag": etag(artifact_id),
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",  # a status change must be seen
    }


async def send(
    request: web.Request, blobs: Blobs, artifact_id: str, media_type: str
) -> tuple[str, web.StreamResponse]:
    """The artifact's bytes (or the part asked for), and the outcome: "ok", or
    "integrity-mismatch" when the file changed while it was sent (the connection is cut). Raises
    `ArtifactNotFound`, `IntegrityError` or `StorageUnavailable` before anything is sent."""
    base = headers(artifact_id, media_type)
    if not_modified(request.headers.get("If-None-Match"), base["ETag"]):
        return "ok", web.Response(status=304, headers={k: base[k] for k in ("ETag", "Cache-Control")})
    size = await asyncio.to_thread(blobs.size, artifact_id)
    try:
        wanted = byte_range(request.headers.get("Range"), size)
    except ValueError:
        detail = f"the artifact has {size} bytes: the range asked for starts past its end"
        return "ok", problems.response(
            416, "range-not-satisfiable", detail, {"Content-Range": f"bytes */{size}"}
        )
    first, last = (0, size - 1) if wanted is None else wanted
    status = 200 if wanted is None else 206
    if wanted is not None:
        base["Content-Range"] = f"bytes {first}-{last}/{size}"
    if size <= WHOLE:
        data = await asyncio.to_thread(blobs.read_checked, artifact_id)
        return "ok", web.Response(body=data[first : last + 1], status=status, headers=base)
    await asyncio.to_thread(blobs.verify, artifact_id)
    response = web.StreamResponse(status=status, headers=base)
    response.content_length = last - first + 1
    await response.prepare(request)
    if not await _stream(response, blobs, artifact_id, first, last):
        log.error("blob changed while it was sent; connection cut", artifact_id=artifact_id)
        if request.transport is not None:
            request.transport.close()
        return "integrity-mismatch", response
    await response.write_eof()
    return "ok", response


async def _stream(
    response: web.StreamResponse, blobs: Blobs, artifact_id: str, first: int, last: int
) -> bool:
    """Write bytes `first`..`last` of the file while hashing all of it; the last part goes out only
    if the whole hashes to `artifact_id`. False if it does not (that part is held back)."""
    hasher = hashlib.sha256()
    held = b""  # the latest part: sent once the next one, or the whole file's hash, is known
    offset = 0
    with await asyncio.to_thread(blobs.open, artifact_id) as blob:
        while chunk := await asyncio.to_thread(blob.read, CHUNK):
            hasher.update(chunk)
            part = chunk[max(first - offset, 0) : max(last + 1 - offset, 0)]
            offset += len(chunk)
            if part:
                if held:
                    await response.write(held)
                held = part
    if "sha256:" + hasher.hexdigest() != artifact_id:
        return False
    await response.write(held)
    return True
