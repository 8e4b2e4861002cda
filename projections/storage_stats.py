"""What the locker stores and where its room goes: `stella evidence storage stats` and
`GET /storage/stats`. One pass over the index's artifact rows, and the storage roots' free space;
the blob folders are never walked."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from locker.config import Settings
from locker.times import iso_utc
from projections.store import IndexStore

GROWTH_DAYS = 7


class KindCount(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    artifacts: int
    bytes: int


class DayCount(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    artifacts: int
    bytes: int


class Growth(msgspec.Struct, frozen=True, kw_only=True):
    """Artifacts ingested on each of the last `GROWTH_DAYS` days (UTC) and the mean a day."""

    days: list[DayCount]
    artifacts: float
    bytes: int


class ReplicaCount(msgspec.Struct, frozen=True, kw_only=True):
    """`not_replicated` is null when no replica is configured."""

    configured: bool
    replicated: int
    not_replicated: int | None


class RootSpace(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A storage root's file system: its room, or `error` when it cannot be read."""

    role: str
    path: str
    total_bytes: int | None = None
    free_bytes: int | None = None
    free_percent: float | None = None
    error: str | None = None


class StorageStats(msgspec.Struct, frozen=True, kw_only=True):
    artifacts: int
    bytes: int
    by_kind: list[KindCount]
    by_status: dict[str, int]
    oldest: str | None
    newest: str | None
    growth_per_day: Growth
    replica: ReplicaCount
    index_bytes: int
    roots: list[RootSpace]


def roots(settings: Settings) -> list[tuple[str, Path]]:
    """Every storage root on a file system the locker writes: blobs (unless they are in S3), the
    replica if set, backups if they exist."""
    out = [("evidence", settings.evidence_path.expanduser())] if settings.backend == "filesystem" else []
    if settings.replica_path is not None:
        out.append(("replica", settings.replica_path.expanduser()))
    if settings.backups_path.expanduser().is_dir():
        out.append(("backups", settings.backups_path.expanduser()))
    return out


def stats(settings: Settings, index: IndexStore, *, now: datetime | None = None) -> StorageStats:
    now = now or datetime.now(UTC)
    since = (now - timedelta(days=GROWTH_DAYS - 1)).date()
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    statuses: Counter[str] = Counter()
    days: dict[str, list[int]] = {str(since + timedelta(days=d)): [0, 0] for d in range(GROWTH_DAYS)}
    count = size = replicated = 0
    oldest = newest = None
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
    configured = settings.replica_path is not None
    return StorageStats(
        artifacts=count,
        bytes=size,
        by_kind=[KindCount(kind=k, artifacts=n, bytes=b) for k, (n, b) in sorted(kinds.items())],
        by_status=dict(sorted(statuses.items())),
        oldest=None if oldest is None else iso_utc(oldest),
        newest=None if newest is None else iso_utc(newest),
        growth_per_day=Growth(
            days=[DayCount(date=d, artifacts=n, bytes=b) for d, (n, b) in days.items()],
            artifacts=round(sum(n for n, _ in days.values()) / GROWTH_DAYS, 1),
            bytes=round(sum(b for _, b in days.values()) / GROWTH_DAYS),
        ),
        replica=ReplicaCount(
            configured=configured,
            replicated=replicated,
            not_replicated=count - replicated if configured else None,
        ),
        index_bytes=index.size_bytes(),
        roots=[_space(role, path) for role, path in roots(settings)],
    )


def _space(role: str, path: Path) -> RootSpace:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return RootSpace(role=role, path=str(path), error=exc.strerror or str(exc))
    return RootSpace(
        role=role,
        path=str(path),
        total_bytes=usage.total,
        free_bytes=usage.free,
        free_percent=round(100 * usage.free / usage.total, 1) if usage.total else 0.0,
    )
