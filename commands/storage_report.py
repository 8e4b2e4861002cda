"""`stella evidence storage stats|analyze|test` (runbook SP-003/SP-004, INC-004): what the locker
stores, where its room goes, and whether every storage root still writes, syncs and reads.

`stats` and `analyze` read the index (read-only; one pass over its artifact rows) and the file
systems' free space; they never walk the blob folders. `test` writes a probe of `PROBE_BYTES` into
each storage root's temp folder, fsyncs it, drops it from the page cache, reads it back, hashes it
and deletes it, timing each step; a root that fails any step fails the command (exit 1).
"""

from __future__ import annotations

import hashlib
import heapq
import os
import secrets
import time
from pathlib import Path
from typing import Any

from commands import queries
from locker.config import Settings
from locker.errors import IntegrityError, StorageUnavailable, UsageError
from locker.times import iso_utc
from projections import storage_stats
from projections.index import ArtifactRecord
from projections.storage_stats import StorageStats

PROBE_BYTES = 4 * 1024 * 1024
SORTS = ("size", "age")


def stats(settings: Settings) -> StorageStats:
    """`projections.storage_stats.stats` (shared with the API) on the index, read-only."""
    with queries.index_store(settings) as index:
        return storage_stats.stats(settings, index)


def analyze(settings: Settings, *, sort: str = "size", limit: int = 20) -> list[dict[str, Any]]:
    """The `limit` largest artifacts (`size`) or the oldest (`age`)."""
    if sort not in SORTS:
        raise UsageError(f"--sort {sort!r}: size or age")
    if limit < 1:
        raise UsageError("--limit: 1 or more")
    with queries.index_store(settings) as index:
        records = index.records()
        if sort == "size":
            chosen = heapq.nlargest(limit, records, key=lambda r: (r.size, r.artifact_id))
        else:
            chosen = heapq.nsmallest(limit, records, key=lambda r: (r.ingested_at, r.artifact_id))
    return [_row(r) for r in chosen]


def _row(record: ArtifactRecord) -> dict[str, Any]:
    return {
        "artifact_id": record.artifact_id,
        "kind": record.kind,
        "size": record.size,
        "ingested_at": iso_utc(record.ingested_at),
        "status": record.status,
        "producer": record.producer,
    }


def probe(settings: Settings) -> dict[str, Any]:
    """Write, fsync, read back (past the page cache), hash and delete a probe in every root; in an
    S3 blob store, PUT, GET and DELETE a small object."""
    results = [_probe_s3(settings)] if settings.backend == "s3" else []
    results += [_probe(role, path) for role, path in storage_stats.roots(settings)]
    failed = [r for r in results if not r["ok"]]
    if failed:
        detail = "; ".join(f"{r['role']} ({r['path']}): {r['error']}" for r in failed)
        raise IntegrityError("storage probe", "write, sync, read and delete in every root", detail)
    return {"ok": True, "probe_bytes": PROBE_BYTES, "roots": results}


def _probe_s3(settings: Settings) -> dict[str, Any]:
    from locker.s3store import S3BlobStore

    store = S3BlobStore.from_settings(settings)
    result: dict[str, Any] = {"role": "evidence", "path": store.location, "ok": False}
    try:
        result.update(ok=True, round_trip_ms=round(store.probe() * 1000, 3))
    except StorageUnavailable as exc:
        result["error"] = str(exc)
    return result


def _probe(role: str, root: Path) -> dict[str, Any]:
    folder = root / "tmp" if (root / "tmp").is_dir() else root
    path = folder / f"probe-{secrets.token_hex(8)}.tmp"  # a name no writer of the locker uses
    data = os.urandom(PROBE_BYTES)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"role": role, "path": str(root), "ok": False}
    mark = time.perf_counter()

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round((now - mark) * 1000, 3)
        mark = now

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            step("write_ms")
            os.fsync(fd)
            step("fsync_ms")
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read the disk, not the cache
        finally:
            os.close(fd)
        back = path.read_bytes()
        step("read_ms")
        same = hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
        step("hash_ms")
        path.unlink()
        step("delete_ms")
        result.update(ok=same, **timings)
        if not same:
            result["error"] = "the probe read back differs from what was written"
    except OSError as exc:
        result["error"] = exc.strerror or str(exc)
        path.unlink(missing_ok=True)
    return result
