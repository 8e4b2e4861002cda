"""The ingest handler: submissions -> durable blobs -> events.

For each submission: check it (`locker.submissions.check`); a new artifact's blob goes into the
outbox (the runtime makes it durable before anything is published) with an `artifact.ingested`
event; content already stored becomes `artifact.resubmitted`; content that is indexed but whose
blob is gone is stored again and recorded as ingested once more (the index keeps its first
record). A refused submission becomes an
`ingest.rejected` event and a dead letter; so does a new artifact that would leave less free space
on the blob store's file system than `EvidenceLocker:FreeSpaceReserve` (reason `storage-full`,
checked once a batch: nothing half-written, and resubmissions, reads, verification and cleanup go
on). At-least-once: the batch is committed only after its
blobs are durable and its events acknowledged, and a redelivered submission is a resubmission.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from locker import submissions
from locker.dlq import DeadLetter
from locker.errors import InvalidInput
from locker.events import ArtifactIngested, ArtifactResubmitted, Event, IngestRejected, encode
from locker.sizes import human
from streams.kafka import Record
from streams.runtime import Message, Outbox, dead_letter
from streams.services import Services


def handle(services: Services, records: list[Record]) -> Outbox:
    """Decide every submission of a batch."""
    out = Outbox()
    fresh: dict[str, bytes] = {}
    events = services.topics.events
    free = None if services.free_bytes is None else services.free_bytes()
    room = None if free is None else free - services.reserve  # unknown: the blob write will tell
    for record in records:
        try:
            accepted = submissions.check(
                record.value, record.key, max_content_bytes=services.max_content_bytes
            )
        except InvalidInput as error:
            letter = dead_letter(record, error)
            out.dead.append((record, letter))
            out.messages.append(Message(events, record.key, encode(_rejection(record, letter))))
            continue
        sub, artifact_id = accepted.submission, accepted.artifact_id
        event: Event
        known = artifact_id in fresh or _stored(services, artifact_id)
        if not known and room is not None:
            needed = len(sub.content) + BLOCK  # a file takes at least a block
            if needed > room:
                letter = dead_letter(record, _full(free or 0, services.reserve))
                out.dead.append((record, letter))
                out.messages.append(Message(events, record.key, encode(_rejection(record, letter))))
                continue
            room -= needed
        if known:
            event = ArtifactResubmitted(
                artifact_id=artifact_id,
                producer=sub.producer,
                submitted_at=datetime.now(UTC),
                correlation_id=sub.submission_id,
            )
        else:  # new, or indexed but its blob is gone: (re)stored, then recorded as ingested
            fresh[artifact_id] = sub.content
            out.counts["ingested", sub.kind] += 1
            event = ArtifactIngested(
                artifact_id=artifact_id,
                size=len(sub.content),
                kind=sub.kind,
                subjects=sub.subjects,
                producer=sub.producer,
                media_type=sub.media_type,
                ingested_at=datetime.now(UTC),
                correlation_id=sub.submission_id,
            )
        out.messages.append(Message(events, artifact_id.encode(), encode(event)))
    out.blobs = list(fresh.items())
    out.writes.append(partial(services.recent.add_all, list(fresh)))
    return out


BLOCK = 4096


def _full(free: int, reserve: int) -> InvalidInput:
    return InvalidInput(
        "storage-full",
        f"the blob store has {human(free)} free and keeps {human(reserve)} in reserve "
        "(EvidenceLocker:FreeSpaceReserve): free room (stella evidence cleanup, storage analyze) "
        "and submit again",
    )


def _stored(services: Services, artifact_id: str) -> bool:
    """Known to the locker (lately ingested here, or indexed) and its blob is on disk."""
    known = artifact_id in services.recent or services.index.get(artifact_id) is not None
    return known and services.blobs.exists(artifact_id)


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
