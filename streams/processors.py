"""What the worker does with each batch of records, apart from faust itself.

`IngestProcessor` turns submissions into events: check, store the blob durably, and only then
hand back the events to produce. `IndexProcessor` folds events into the index store. Both get
plain `Record`s so that the faust glue in `streams.app` stays thin.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from locker import submissions
from locker.cas import BlobStore
from locker.dlq import DeadLetter
from locker.errors import InvalidInput, StorageUnavailable
from locker.events import ArtifactIngested, ArtifactResubmitted, Event, IngestRejected, decode
from projections.store import Applied, IndexStore

log = structlog.get_logger("stella.worker")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Outbox:
    """What a batch produces: events keyed by artifact id, and dead letters."""

    events: list[tuple[bytes, Event]] = field(default_factory=list)
    dead: list[tuple[Record, DeadLetter]] = field(default_factory=list)


def now() -> datetime:
    return datetime.now(UTC)


def dead_letter(record: Record, error: InvalidInput) -> DeadLetter:
    return DeadLetter(
        reason=error.reason,
        detail=error.detail,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        rejected_at=now(),
    )


class IngestProcessor:
    """Submissions -> durable blobs -> `ArtifactIngested` / `ArtifactResubmitted` / `IngestRejected`."""

    def __init__(
        self, blobs: BlobStore, index: IndexStore, max_content_bytes: int, recent: int = 100_000
    ) -> None:
        self.blobs = blobs
        self.index = index
        self.max_content_bytes = max_content_bytes
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_max = recent

    def _known(self, artifact_id: str) -> bool:
        return artifact_id in self._recent or self.index.get(artifact_id) is not None

    def _remember(self, artifact_id: str) -> None:
        self._recent[artifact_id] = None
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    async def process(self, batch: Sequence[Record]) -> Outbox:
        """Decide every record and make new blobs durable. Returns the events to produce.

        The caller must produce them (and wait for the broker's acks) before committing.
        """
        out = Outbox()
        fresh: dict[str, bytes] = {}
        for record in batch:
            try:
                accepted = submissions.check(
                    record.value, record.key, max_content_bytes=self.max_content_bytes
                )
            except InvalidInput as error:
                letter = dead_letter(record, error)
                out.dead.append((record, letter))
                out.events.append((record.key or b"", _rejection(record, letter)))
                continue
            sub = accepted.submission
            artifact_id = accepted.artifact_id
            if artifact_id in fresh or self._known(artifact_id):
                event: Event = ArtifactResubmitted(
                    artifact_id=artifact_id,
                    producer=sub.producer,
                    submitted_at=now(),
                    correlation_id=sub.submission_id,
                )
            else:
                fresh[artifact_id] = sub.content
                event = ArtifactIngested(
                    artifact_id=artifact_id,
                    size=len(sub.content),
                    kind=sub.kind,
                    subjects=sub.subjects,
                    producer=sub.producer,
                    media_type=sub.media_type,
                    ingested_at=now(),
                    correlation_id=sub.submission_id,
                )
            out.events.append((artifact_id.encode(), event))
        await self._store(list(fresh.items()))
        return out

    def delivered(self, out: Outbox) -> None:
        """Call once the outbox's events are acknowledged by the broker."""
        for _, event in out.events:
            if isinstance(event, ArtifactIngested):
                self._remember(event.artifact_id)

    async def _store(self, items: list[tuple[str, bytes]]) -> None:
        """Durable or nothing: a storage outage is retried, never turned into a rejection."""
        delay = 0.5
        while items:
            try:
                await asyncio.to_thread(self.blobs.put_many, items)
                return
            except StorageUnavailable as exc:
                log.error("storage unavailable, retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


def _rejection(record: Record, letter: DeadLetter) -> IngestRejected:
    return IngestRejected(
        reason=letter.reason,
        detail=letter.detail,
        claimed_digest=submissions.claimed_digest(record.value),
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        rejected_at=letter.rejected_at,
        correlation_id=submissions.correlation_of(record.value),
    )


class IndexProcessor:
    """Events -> index rows, applied with their positions in one write batch."""

    def __init__(self, index: IndexStore) -> None:
        self.index = index

    def decode(self, batch: Sequence[Record]) -> tuple[list[Applied], list[tuple[Record, DeadLetter]]]:
        """Decode the records not applied yet; invalid ones become dead letters (once)."""
        done = self.index.applied()
        applied: list[Applied] = []
        dead: list[tuple[Record, DeadLetter]] = []
        for record in batch:
            if record.offset <= done.get(record.partition, -1):
                continue  # redelivered after a restart: applied (or dead-lettered) already
            event: Event | None
            try:
                event = decode(record.value)
            except InvalidInput as error:
                event = None
                dead.append((record, dead_letter(record, error)))
            applied.append((record.partition, record.offset, event))
        return applied, dead

    def apply(self, applied: list[Applied]) -> int:
        return self.index.apply(applied)
