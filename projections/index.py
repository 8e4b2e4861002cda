"""The artifact index as a pure fold over events. No I/O here.

`apply(record, event, position)` is the one state transition; the live processor, a rebuild
from offset 0 and a point-in-time replay all call it. `rows(record)` is the record's layout in
the key-value store, so that the store never decides anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import singledispatch

import msgspec

from locker.events import (
    ArtifactIngested,
    ArtifactMarkedCorrupted,
    ArtifactRecovered,
    ArtifactReplicated,
    ArtifactResubmitted,
    ArtifactVerificationFailed,
    Event,
    IngestRejected,
    VerificationCompleted,
    VerificationStarted,
)
from locker.times import iso_utc

# An artifact's status. Only an "ingested" artifact is served; the others answer 409 with
# the record's `status_reason`.
INGESTED = "ingested"
VERIFICATION_FAILED = "verification-failed"  # a run found it missing, unreadable or not matching
CORRUPTED = "corrupted"  # an operator marked it (`stella evidence mark-corrupted`)


class Position(msgspec.Struct, frozen=True):
    partition: int
    offset: int


class ArtifactRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One indexed artifact."""

    artifact_id: str
    size: int
    kind: str
    subjects: tuple[str, ...]
    producer: str
    media_type: str
    status: str
    ingested_at: datetime
    partition: int
    offset: int
    status_reason: str = ""
    replicated_at: datetime | None = None  # when the replica store received its blob
    changed_by: str = ""  # correlation id of the last event that changed the record (a command's id)

    @property
    def servable(self) -> bool:
        return self.status == INGESTED

    @property
    def digest(self) -> str:
        return self.artifact_id

    def public(self) -> dict[str, object]:
        """The record as the API and `--format json` show it."""
        return {
            "artifact_id": self.artifact_id,
            "digest": self.digest,
            "size": self.size,
            "kind": self.kind,
            "subjects": list(self.subjects),
            "producer": self.producer,
            "media_type": self.media_type,
            "status": self.status,
            "status_reason": self.status_reason,
            "replicated_at": None if self.replicated_at is None else iso_utc(self.replicated_at),
            "ingested_at": iso_utc(self.ingested_at),
        }


def artifact_of(event: Event) -> str | None:
    """The artifact an event is about, if it touches the index at all."""
    if isinstance(event, _TOUCHING):
        return event.artifact_id
    return None


_TOUCHING = (
    ArtifactIngested,
    ArtifactVerificationFailed,
    ArtifactMarkedCorrupted,
    ArtifactReplicated,
    ArtifactRecovered,
)


@singledispatch
def apply(event: Event, record: ArtifactRecord | None, position: Position) -> ArtifactRecord | None:
    """The record after `event`; events that do not concern the index leave it unchanged."""
    return record


@apply.register
def _ingested(
    event: ArtifactIngested, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is not None:  # first write wins: a redelivered or repeated ingest is a no-op
        return record
    return ArtifactRecord(
        artifact_id=event.artifact_id,
        size=event.size,
        kind=event.kind,
        subjects=tuple(sorted(set(event.subjects))),
        producer=event.producer,
        media_type=event.media_type,
        status=INGESTED,
        ingested_at=event.ingested_at,
        partition=position.partition,
        offset=position.offset,
    )


@apply.register
def _failed(
    event: ArtifactVerificationFailed, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None or record.status == CORRUPTED:  # an operator's finding stands
        return record
    reason = f"{event.outcome} in verification run {event.run_id}: {event.detail}".rstrip(": ")
    return msgspec.structs.replace(
        record, status=VERIFICATION_FAILED, status_reason=reason, changed_by=event.correlation_id
    )


@apply.register
def _marked(
    event: ArtifactMarkedCorrupted, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None:
        return None
    return msgspec.structs.replace(
        record, status=CORRUPTED, status_reason=event.reason, changed_by=event.correlation_id
    )


@apply.register
def _replicated(
    event: ArtifactReplicated, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None or record.replicated_at is not None:
        return record  # the first copy counts; a repeated event changes nothing
    return msgspec.structs.replace(record, replicated_at=event.replicated_at)


@apply.register
def _recovered(
    event: ArtifactRecovered, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None:
        return None
    reason = f"recovered from the {event.source} at {iso_utc(event.recovered_at)}"
    return msgspec.structs.replace(
        record, status=INGESTED, status_reason=reason, changed_by=event.correlation_id
    )


@apply.register
def _untouched(
    event: ArtifactResubmitted | IngestRejected | VerificationStarted | VerificationCompleted,
    record: ArtifactRecord | None,
    position: Position,
) -> ArtifactRecord | None:
    return record


def fold(events: Iterable[tuple[Position, Event]]) -> dict[str, ArtifactRecord]:
    """The whole index from a sequence of events: what a rebuild computes."""
    index: dict[str, ArtifactRecord] = {}
    for position, event in events:
        artifact_id = artifact_of(event)
        if artifact_id is None:
            continue
        new = apply(event, index.get(artifact_id), position)
        if new is not None:
            index[artifact_id] = new
    return index


# Row layout. Keys are bytes; values of index rows are empty.
ARTIFACT = b"a/"
SUBJECT = b"s/"
KIND = b"k/"
COUNT = b"~count"
TOTAL_BYTES = b"~bytes"

_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(ArtifactRecord)


def rows(record: ArtifactRecord) -> dict[bytes, bytes]:
    """Every row a record owns: itself plus one row per subject and one for its kind."""
    ident = record.artifact_id.encode()
    owned = {ARTIFACT + ident: _encoder.encode(record), KIND + record.kind.encode() + b"/" + ident: b""}
    for subject in record.subjects:
        owned[SUBJECT + subject.encode() + b"/" + ident] = b""
    return owned


def decode_record(raw: bytes) -> ArtifactRecord:
    return _decoder.decode(raw)
