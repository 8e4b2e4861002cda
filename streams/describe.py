"""The describe loop: what each ingested artifact's bytes say, as `artifact.described` events.

It reads `evidence.events` in its own consumer group. For each `artifact.ingested` it reads the
blob, checks it against the artifact id, and describes it (`locker.formats`: format, subjects,
predicate type, dependencies, its signature against the trust store `Formats:TrustStore` or a
Sigstore bundle's against `Formats:SigstoreTrustedRoot`); the
index folds the description into the artifact's record and its subject and dependency rows. Off
the ingest path, so parsing never slows ingest down; at-least-once, and a repeated description
replaces the earlier one with the same content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sigstore.models import TrustedRoot

from locker import formats
from locker.cas import Blobs
from locker.errors import ArtifactNotFound, IntegrityError, InvalidInput, StorageUnavailable, StoreUnreachable
from locker.events import ArtifactDescribed, ArtifactIngested, decode, encode
from streams.kafka import Record
from streams.runtime import Message, Outbox
from streams.topics import Topics

log = structlog.get_logger("stella.describe")


@dataclass(frozen=True)
class Describing:
    topics: Topics
    blobs: Blobs
    trusted: tuple[formats.TrustedKey, ...] = ()
    sigstore_root: TrustedRoot | None = None


def handle(d: Describing, records: list[Record]) -> Outbox:
    out = Outbox()
    seen: set[str] = set()
    for record in records:
        try:
            event = decode(record.value)
        except InvalidInput:
            continue  # the projection loop dead-letters it
        if not isinstance(event, ArtifactIngested) or event.artifact_id in seen:
            continue
        artifact_id = event.artifact_id
        seen.add(artifact_id)
        try:
            data = d.blobs.read_checked(artifact_id)
        except StoreUnreachable:
            raise  # an outage (S3): the batch is retried, nothing skipped
        except (ArtifactNotFound, StorageUnavailable, IntegrityError) as exc:
            log.warning("not described: no good blob", artifact_id=artifact_id, error=str(exc))
            continue
        found = formats.describe(data, d.trusted, d.sigstore_root)
        described = ArtifactDescribed(
            artifact_id=artifact_id,
            format=found.format,
            format_version=found.format_version,
            subjects=found.subjects,
            predicate_type=found.predicate_type,
            dependencies=found.dependencies,
            signature=found.signature,
            signed_by=found.signed_by,
            transparency_log=found.transparency_log,
            detail=found.detail,
            described_at=datetime.now(UTC),
            correlation_id=event.correlation_id,
        )
        out.messages.append(Message(d.topics.events, artifact_id.encode(), encode(described)))
    return out
