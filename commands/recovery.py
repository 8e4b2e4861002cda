"""`stella evidence restore --to-anchor <anchor-id>`: point-in-time recovery (runbook DR-002).

The log is never truncated. The anchor is checked first (its signature, its link, its roots
against the Merkle trees: a restore goes back only to a state the locker signed), then the
service appends `state.restored` to every partition of `evidence.events`, voiding what came
after the anchor's tree of it. The CLI waits until the index has folded all of them and reports
what was voided; the index then holds what it held at the anchor (`projections.store`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from commands.integrity import checked_anchor
from commands.sending import send_and_wait
from locker import requests
from locker.config import Settings
from projections.index import Voided, VoidedRange
from projections.store import IndexStore
from streams.kafka import end_offsets
from streams.topics import Topics

LISTED = 1000  # voided records listed in the answer; `--format json` shows the count of all


def restore_to_anchor(settings: Settings, anchor_id: str, reason: str = "") -> dict[str, Any]:
    target = checked_anchor(settings, anchor_id).id
    partitions = len(asyncio.run(end_offsets(settings, Topics(settings.topic_prefix).events)))
    command = requests.restore_to_anchor(target, reason)

    def folded() -> list[VoidedRange] | None:
        with IndexStore(settings.index_path, readonly=True) as index:
            ranges = [r for r in index.voided_ranges() if r.restore_id == command.command_id]
        return ranges if len(ranges) >= partitions else None

    ranges = send_and_wait(settings, command, folded, "restore")
    with IndexStore(settings.index_path, readonly=True) as index:
        voided = list(index.voided(command.command_id))
        artifacts = index.count()
        # voided ingests whose artifact the index no longer holds (not also ingested before the anchor)
        removed = sorted(
            {
                v.artifact_id
                for v in voided
                if v.type == "artifact.ingested" and index.get(v.artifact_id) is None
            }
        )
    return {
        "restore_id": command.command_id,
        "anchor": target,
        "reason": reason,
        "partitions": [
            {"partition": r.partition, "voided_from": r.start, "voided_to": r.end, "records": r.end - r.start}
            for r in sorted(ranges, key=lambda r: r.partition)
        ],
        "voided_records": len(voided),
        "voided": [_public(v) for v in voided[:LISTED]],
        "artifacts_voided": removed,
        "artifacts": artifacts,
        "next": [
            "stella evidence index status --checksum  (the checksum the index had at the anchor)",
            f"stella evidence verify --mode full --to-anchor {target}",
        ],
    }


def _public(row: Voided) -> dict[str, Any]:
    return {
        "partition": row.partition,
        "offset": row.offset,
        "type": row.type,
        "artifact_id": row.artifact_id,
    }
