"""Which artifacts a retention policy expires, and a summary of them. Pure.

An artifact is due when it is older than its kind's maximum age (`locker.retention.Policy`), is
not under legal hold, and is not expired or archived already (an archive is kept by whoever holds
the file; the locker has nothing left of it to delete). The CLI's dry run and (later) the service's
cleanup decide with this one function, from the same index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from locker.retention import Policy
from locker.times import iso_utc
from projections.index import GONE, ArtifactRecord


def due(record: ArtifactRecord, policy: Policy, now: datetime, *, aggressive: bool = False) -> bool:
    if record.hold or record.status in GONE:
        return False
    age = policy.max_age(record.kind, aggressive=aggressive)
    return age is not None and now - record.ingested_at > age


def summary(records: Iterable[ArtifactRecord]) -> dict[str, Any]:
    """Count, bytes, oldest and newest, overall and per kind."""
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    oldest = newest = None
    for r in records:
        kinds[r.kind][0] += 1
        kinds[r.kind][1] += r.size
        oldest = r.ingested_at if oldest is None else min(oldest, r.ingested_at)
        newest = r.ingested_at if newest is None else max(newest, r.ingested_at)
    return {
        "artifacts": sum(n for n, _ in kinds.values()),
        "bytes": sum(b for _, b in kinds.values()),
        "oldest": None if oldest is None else iso_utc(oldest),
        "newest": None if newest is None else iso_utc(newest),
        "by_kind": [{"kind": k, "artifacts": n, "bytes": b} for k, (n, b) in sorted(kinds.items())],
    }
