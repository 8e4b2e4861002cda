"""An artifact's chain of custody, from the log: `stella evidence provenance show <id>` and
`GET /artifacts/{id}/provenance`.

Every event about an artifact is keyed by its id, so all of them are in one partition of
`evidence.events`: that partition is read to its end and the artifact's events kept (ingest,
resubmissions, verification failures, corruption, replication, recovery), O(records in that
partition). The runs that checked it and found it good are on `evidence.verifications` (same key,
within that topic's retention). Each step names its log position and, for events, the first
anchor whose signed tree covers it: the proof that the step is in the log as anchored
(`stella evidence proof`, `anchor verify`). A step a point-in-time restore voided says so; an
artifact whose ingest was voided (no longer indexed) still has its provenance, with status "voided".
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from contextlib import AbstractContextManager

import msgspec

from locker.config import Settings
from locker.errors import ArtifactNotFound, InvalidInput
from locker.events import decode
from locker.times import iso_utc
from locker.verification import outcome_decoder
from projections.anchor_chain import GOOD
from projections.anchor_store import AnchorStore
from projections.provenance import step as provenance_step
from projections.store import IndexStore
from streams.kafka import end_offsets
from streams.partitioning import partitions_for
from streams.reader import read_batches
from streams.topics import Topics


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One step of custody: when, what, by whom, and where it is on the log. `anchor`: the first
    anchor covering it (null: not anchored yet, or a record of the outcomes topic, which is not
    anchored)."""

    at: str
    what: str
    actor: str
    detail: str
    topic: str
    partition: int
    offset: int
    anchor: str | None


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """An artifact's chain of custody; `status` is "voided" for an artifact no longer indexed."""

    artifact_id: str
    status: str
    producer: str
    subjects: list[str]
    steps: list[Step]


def provenance(
    settings: Settings,
    index: IndexStore,
    chain_view: Callable[[], AbstractContextManager[AnchorStore]],
    artifact_id: str,
) -> Provenance:
    """The artifact's steps in time order. Raises `ArtifactNotFound` for an artifact the index has
    never held (before `chain_view` is opened); callers check that `artifact_id` is well formed."""
    record = index.get(artifact_id)
    voided = {(v.partition, v.offset): v for v in index.voided() if v.artifact_id == artifact_id}
    if record is None and not voided:
        raise ArtifactNotFound(artifact_id)
    topics = Topics(settings.topic_prefix)
    key = artifact_id.encode()
    steps: list[Step] = []
    with chain_view() as chain:
        covering = _anchors(chain)
    for partition, offset, value in _keyed(settings, topics.events, key):
        try:
            event = decode(value)
        except InvalidInput:
            continue
        step = provenance_step(event)
        if step is None:
            continue
        what = step["what"]
        void = voided.get((partition, offset))
        if void is not None:  # still in the log, and anchored; it no longer counts
            what += f" (voided by the restore to anchor {void.anchor_id})"
        steps.append(
            Step(
                at=step["at"],
                what=what,
                actor=step["actor"],
                detail=step["detail"],
                topic=topics.events,
                partition=partition,
                offset=offset,
                anchor=covering(partition, offset),
            )
        )
    for partition, offset, value in _keyed(settings, topics.verifications, key):
        try:
            outcome = outcome_decoder.decode(value)
        except InvalidInput:
            continue
        if outcome.artifact_id != artifact_id or outcome.outcome != "ok":
            continue  # a failure is on the log itself, as artifact.verification_failed
        steps.append(
            Step(
                at=iso_utc(outcome.verified_at),
                what="verified ok",
                actor=f"verification run {outcome.run_id} ({outcome.mode})",
                detail=f"{outcome.actual_size} bytes hash to the id",
                topic=topics.verifications,
                partition=partition,
                offset=offset,
                anchor=None,  # the outcomes topic is not anchored; the run's completion event is
            )
        )
    steps.sort(key=lambda s: (s.at, s.topic, s.offset))
    return Provenance(
        artifact_id=artifact_id,
        status="voided" if record is None else record.status,
        producer="" if record is None else record.producer,
        subjects=[] if record is None else list(record.subjects),
        steps=steps,
    )


def _keyed(settings: Settings, topic: str, key: bytes) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of the records of `topic` with `key`, from its key's partition."""
    ends = asyncio.run(end_offsets(settings, topic))
    if not ends:
        return []
    [partition] = partitions_for([key], sorted(ends))
    found = []
    for batch in read_batches(settings, topic, partitions=[partition]):
        found += [(p, o, v) for p, o, v in batch if key in v]  # a cheap filter before decoding
    return found


def _anchors(chain: AnchorStore) -> Callable[[int, int], str | None]:
    """(partition, offset) -> id of the first anchor whose signed tree covers it, or None."""
    by_partition: dict[int, tuple[list[int], list[str]]] = {}
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
