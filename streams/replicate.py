"""The replication loop: every ingested artifact's blob, checked, into the replica store.

It reads `evidence.events` in its own consumer group. For each `artifact.ingested` it reads the
blob from the primary store and checks it against the artifact id; the outbox carries the blob,
which the runtime makes durable in the replica before `artifact.replicated` is published. A blob
that is missing or damaged in the primary store is not copied (a verification run reports it);
a blob already in the replica is left alone and the event is published again (at-least-once: the
index keeps the first time).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from locker.cas import Blobs
from locker.errors import ArtifactNotFound, InvalidInput, StorageUnavailable, StoreUnreachable
from locker.events import ArtifactIngested, ArtifactReplicated, decode, encode
from streams.kafka import Record
from streams.runtime import Message, Outbox
from streams.topics import Topics

log = structlog.get_logger("stella.replicate")


@dataclass(frozen=True)
class Replicating:
    topics: Topics
    primary: Blobs
    replica: Blobs


def handle(r: Replicating, records: list[Record]) -> Outbox:
    out = Outbox()
    chosen: set[str] = set()
    for record in records:
        try:
            event = decode(record.value)
        except InvalidInput:
            continue  # the projection loop dead-letters it
        if not isinstance(event, ArtifactIngested) or event.artifact_id in chosen:
            continue
        artifact_id = event.artifact_id
        try:
            data = r.primary.read(artifact_id)
        except ArtifactNotFound:
            log.warning("not replicated: no blob in the primary store", artifact_id=artifact_id)
            continue
        except StoreUnreachable:
            raise  # an outage (S3): the batch is retried, nothing skipped
        except StorageUnavailable as exc:
            log.warning(
                "not replicated: the primary blob is unreadable", artifact_id=artifact_id, error=str(exc)
            )
            continue
        if "sha256:" + hashlib.sha256(data).hexdigest() != artifact_id:
            log.warning("not replicated: the primary blob does not match its id", artifact_id=artifact_id)
            continue
        chosen.add(artifact_id)
        out.blobs.append((artifact_id, data))
        replicated = ArtifactReplicated(
            artifact_id=artifact_id,
            replica=r.replica.location,
            replicated_at=datetime.now(UTC),
            correlation_id=event.correlation_id,
        )
        out.messages.append(Message(r.topics.events, artifact_id.encode(), encode(replicated)))
    return out
