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
import shutil
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from commands import queries
from locker.config import Settings
from locker.errors import IntegrityError, UsageError
from locker.times import iso_utc
from projections.index import ArtifactRecord

GROWTH_DAYS = 7
PROBE_BYTES = 4 * 1024 * 1024
SORTS = ("size", "age")


def roots(settings: Settings) -> list[tuple[str, Path]]:
    """Every storage root the locker writes: blobs, the replica if set, backups if they exist."""
    out = [("evidence", settings.evidence_path.expanduser())]
    if settings.replica_path is not None:
        out.append(("replica", settings.replica_path.expanduser()))
    if settings.backups_path.expanduser().is_dir():
        out.append(("backups", settings.backups_path.expanduser()))
    return out


def stats(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = (now - timedelta(days=GROWTH_DAYS - 1)).date()
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    statuses: Counter[str] = Counter()
    days: dict[str, list[int]] = {str(since + timedelta(days=d)): [0, 0] for d in range(GROWTH_DAYS)}
    count = size = replicated = 0
    oldest = newest = None
    with queries.index_store(settings) as index:
        for record in index.records():
            count, size = count + 1, size + record.size
            kinds[record.kind][0] += 1
            kinds[record.kind][1] += record.size
            statuses[record.status] += 1
            replicated += record.replicated_at is not None
            day = days.get(str(record.ingested_at.date()))
            if day is not None:
                day[0] += 1
                day[1] += record.size
            oldest = record.ingested_at if oldest is None else min(oldest, record.ingested_at)
            newest = record.ingested_at if newest is None else max(newest, record.ingested_at)
        index_bytes = index.size_bytes()
    return {
        "artifacts": count,
        "bytes": size,
        "by_kind": [{"kind": k, "artifacts": n, "bytes": b} for k, (n, b) in sorted(kinds.items())],
        "by_status": dict(sorted(statuses.items())),
        "oldest": None if oldest is None else iso_utc(oldest),
        "newest": None if newest is None else iso_utc(newest),
        "growth_per_day": {
            "days": [{"date": d, "artifacts": n, "bytes": b} for d, (n, b) in days.items()],
            "artifacts": round(sum(n for n, _ in days.values()) / GROWTH_DAYS, 1),
            "bytes": round(sum(b for _, b in days.values()) / GROWTH_DAYS),
        },
        "replica": {
            "configured": settings.replica_path is not None,
            "replicated": replicated,
            "not_replicated": count - replicated if settings.replica_path is not None else None,
        },
        "index_bytes": index_bytes,
        "roots": [_space(role, path) for role, path in roots(settings)],
    }


def _space(role: str, path: Path) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"role": role, "path": str(path), "error": exc.strerror or str(exc)}
    return {
        "role": role,
        "path": str(path),
        "total_bytes": usage.total,
        "free_bytes": usage.free,
        "free_percent": round(100 * usage.free / usage.total, 1) if usage.total else 0.0,
    }


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
    """Write, fsync, read back (past the page cache), hash and delete a probe in every root."""
    results = [_probe(role, path) for role, path in roots(settings)]
    failed = [r for r in results if not r["ok"]]
    if failed:
        detail = "; ".join(f"{r['role']} ({r['path']}): {r['error']}" for r in failed)
        raise IntegrityError("storage probe", "write, sync, read and delete in every root", detail)
    return {"ok": True, "probe_bytes": PROBE_BYTES, "roots": results}


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
