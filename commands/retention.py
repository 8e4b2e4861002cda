"""`stella evidence cleanup --apply-retention [--dry-run] [--aggressive]` (runbook SP-004).

`--dry-run`: exactly what the retention policy would expire now, from the index (read-only),
changing nothing. Without it, the service decides from its index with the same function
(`projections.retention.due`, holds exempt), records `artifact.expired` for each artifact and then
`retention.applied`; the projection deletes each blob once its event is on the log. The CLI waits
for `retention.applied` and then for the deletions.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from commands import queries
from commands.sending import send_and_await_event
from locker import requests
from locker.config import Settings
from locker.events import RetentionApplied
from locker.events.ingest import KINDS
from projections.retention import due, summary
from projections.store import IndexStore
from streams.kafka import end_offsets
from streams.topics import Topics

LISTED = 1000


def dry_run(settings: Settings, *, aggressive: bool = False, now: datetime | None = None) -> dict[str, Any]:
    policy = settings.retention_policy()
    now = now or datetime.now(UTC)
    held = 0
    with queries.index_store(settings) as index:
        expiring = []
        for record in index.records():
            if record.hold:
                held += 1
            elif due(record, policy, now, aggressive=aggressive):
                expiring.append(record)
    return {
        "dry_run": True,
        "aggressive": aggressive,
        "at": now.isoformat(),
        "policy": policy.describe(KINDS, aggressive=aggressive),
        **summary(expiring),
        "held_skipped": held,
        "artifacts_listed": [
            {
                "artifact_id": r.artifact_id,
                "kind": r.kind,
                "size": r.size,
                "ingested_at": r.ingested_at.isoformat(),
            }
            for r in sorted(expiring, key=lambda r: (r.ingested_at, r.artifact_id))[:LISTED]
        ],
    }


def apply(settings: Settings, *, aggressive: bool = False) -> dict[str, Any]:
    policy = settings.retention_policy()  # a bad policy is a usage error here
    command = requests.apply_retention(policy.describe(KINDS, aggressive=aggressive), aggressive=aggressive)
    started = time.monotonic()
    partition, offset, event = send_and_await_event(
        settings, command, command.command_id.encode(), "retention cleanup"
    )
    assert isinstance(event, RetentionApplied)
    recorded = time.monotonic()
    pending = wait_for_deletions(settings)
    return {
        "dry_run": False,
        "aggressive": aggressive,
        "expired": event.expired,
        "bytes": event.bytes,
        "policy": event.policy,
        "recorded_at": f"evidence.events[{partition}]@{offset}",
        "deletions_pending": pending,
        "phases": {  # seconds: until retention.applied was on the log; then until the blobs were gone
            "recorded": round(recorded - started, 3),
            "deleted": round(time.monotonic() - recorded, 3),
        },
    }


def wait_for_deletions(settings: Settings) -> int | None:
    """Until the index has folded the whole run and deleted its blobs; how many deletions are still
    pending then; None if the index had not folded the run by `Commands:Timeout`. Every expiry of
    the run is on the log before `retention.applied`, so below the end offsets read now."""
    ends = asyncio.run(end_offsets(settings, Topics(settings.topic_prefix).events))
    deadline = time.monotonic() + settings.timeout
    # Followed, not reopened at each poll: a reopen replays the write-ahead log, CPU the service
    # needs for the very work awaited.
    with IndexStore.followed(settings.index_path) as index:
        while True:
            index.catch_up()
            applied = index.applied()
            caught_up = all(applied.get(p, -1) >= end - 1 for p, end in ends.items() if end)
            pending = len(index.pending_deletions())
            if (caught_up and not pending) or time.monotonic() > deadline:
                return pending if caught_up else None
            time.sleep(0.1)
