"""`stella evidence provenance show <id>`: an artifact's chain of custody, from the log.

Every event about an artifact is keyed by its id, so all of them are in one partition of
`evidence.events`: that partition is read to its end and the artifact's events kept (ingest,
resubmissions, verification failures, corruption, replication, recovery). The runs that checked it
and found it good are on `evidence.verifications` (same key, within that topic's retention).
Each step names its log position and, for events, the first anchor whose signed tree covers it:
the proof that the step is in the log as anchored (`stella evidence proof`, `anchor verify`).
A step a point-in-time restore voided says so; an artifact whose ingest was voided (no longer
indexed) still has its provenance, with status "voided".
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from typing import Any

from commands import queries
from commands.anchors import chain_view
from locker.config import Settings
from locker.digests import parse_digest
from locker.errors import ArtifactNotFound, InvalidInput
from locker.events import decode
from locker.times import iso_utc
from locker.verification import outcome_decoder
from projections.anchor_chain import GOOD
from projections.provenance import step as provenance_step
from streams.kafka import end_offsets
from streams.partitioning import partitions_for
from streams.reader import read_batches
from streams.topics import Topics


def show(settings: Settings, artifact_id: str) -> dict[str, Any]:
    parse_digest(artifact_id, what="artifact id")
    with queries.index_store(settings) as index:
        record = index.get(artifact_id)
        voided = {(v.partition, v.offset): v for v in index.voided() if v.artifact_id == artifact_id}
    if record is None and not voided:
        raise ArtifactNotFound(artifact_id)
    topics = Topics(settings.topic_prefix)
    key = artifact_id.encode()
    steps: list[dict[str, Any]] = []
    covering = _anchors(settings)
    for partition, offset, value in _keyed(settings, topics.events, key):
        try:
            event = decode(value)
        except InvalidInput:
            continue
        step = provenance_step(event)
        if step is not None:
            anchor = covering(partition, offset)
            void = voided.get((partition, offset))
            if void is not None:  # still in the log, and anchored; it no longer counts
                step["what"] += f" (voided by the restore to anchor {void.anchor_id})"
            steps.append(
                {**step, "topic": topics.events, "partition": partition, "offset": offset, "anchor": anchor}
            )
    for partition, offset, value in _keyed(settings, topics.verifications, key):
        try:
            outcome = outcome_decoder.decode(value)
        except InvalidInput:
            continue
        if outcome.artifact_id != artifact_id or outcome.outcome != "ok":
            continue  # a failure is on the log itself, as artifact.verification_failed
        steps.append(
            {
                "at": iso_utc(outcome.verified_at),
                "what": "verified ok",
                "actor": f"verification run {outcome.run_id} ({outcome.mode})",
                "detail": f"{outcome.actual_size} bytes hash to the id",
                "topic": topics.verifications,
                "partition": partition,
                "offset": offset,
                "anchor": None,  # the outcomes topic is not anchored; the run's completion event is
            }
        )
    steps.sort(key=lambda s: (s["at"], s["topic"], s["offset"]))
    return {
        "artifact_id": artifact_id,
        "status": "voided" if record is None else record.status,
        "producer": "" if record is None else record.producer,
        "subjects": [] if record is None else list(record.subjects),
        "steps": steps,
    }


def _keyed(settings: Settings, topic: str, key: bytes) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of the records of `topic` with `key`, from its key's partition."""
    ends = asyncio.run(end_offsets(settings, topic))
    if not ends:
        return []
    [partition] = partitions_for([key], sorted(ends))
    found = []
    for batch in read_batches(settings, topic, partitions=[partition]):
        found += [(p, o, v) for p, o, v in batch if _key_of(v, key)]
    return found


def _key_of(value: bytes, key: bytes) -> bool:
    """A cheap filter before decoding: the record names the artifact id."""
    return key in value


def _anchors(settings: Settings) -> Callable[[int, int], str | None]:
    """(partition, offset) -> id of the first anchor whose signed tree covers it, or None."""
    by_partition: dict[int, tuple[list[int], list[str]]] = {}
    with chain_view(settings) as chain:
        for entry in chain.anchors():
            if entry.status not in GOOD:
                continue  # a broken anchor covers nothing
            anchor = entry.anchor()
            for head in anchor.body.partitions:
                lasts, ids = by_partition.setdefault(head.partition, ([], []))
                if not lasts or head.last_offset > lasts[-1]:
                    lasts.append(head.last_offset)
                    ids.append(entry.anchor_id)

    def covering(partition: int, offset: int) -> str | None:
        lasts, ids = by_partition.get(partition, ([], []))
        i = bisect.bisect_left(lasts, offset)
        return ids[i] if i < len(ids) else None

    return covering
