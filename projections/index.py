"""The artifact index as a pure fold over events. No I/O here.

`apply(record, event, position)` is the one state transition; the live processor, a rebuild
from offset 0 and a point-in-time replay all call it. `rows(record)` is the record's layout in
the key-value store, so that the store never decides anything itself.

A `state.restored` record voids the records of its partition from its `voided_from` up to itself
(`voided_range`). What they did is undone by folding again, with `as_of`, the artifacts they
touched from the records of the partition that still count (`counts`) before the voided range:
every event of an artifact is on its key's partition, so that is the artifact's whole history.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from functools import singledispatch

import msgspec

from locker.events import (
    ArtifactArchived,
    ArtifactDescribed,
    ArtifactExpired,
    ArtifactHoldReleased,
    ArtifactHoldSet,
    ArtifactIngested,
    ArtifactMarkedCorrupted,
    ArtifactRecovered,
    ArtifactReplicated,
    ArtifactResubmitted,
    ArtifactVerificationFailed,
    Event,
    IngestRejected,
    StateRestored,
    VerificationCompleted,
    VerificationStarted,
)
from locker.times import iso_utc

# An artifact's status. Only an "ingested" artifact is served; the others answer 409 with
# the record's `status_reason`.
INGESTED = "ingested"
VERIFICATION_FAILED = "verification-failed"  # a run found it missing, unreadable or not matching
CORRUPTED = "corrupted"  # an operator marked it (`stella evidence mark-corrupted`)
EXPIRED = "expired"  # past the retention policy: its blob is deleted, its events and proofs stay
ARCHIVED = "archived"  # moved to an archive (`archive`): the local blob is deleted, events and proofs stay
GONE = (EXPIRED, ARCHIVED)  # statuses whose blob the locker deleted on purpose


class Position(msgspec.Struct, frozen=True):
    partition: int
    offset: int


class ArchiveRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where an archived artifact went: the archive's id, file and SHA-256 (`artifact.archived`)."""

    archive_id: str
    location: str
    sha256: str


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
    hold: str = ""  # a legal hold's reason: held, exempt from every deletion path; "" = not held
    held_since: datetime | None = None
    archive: ArchiveRef | None = None  # the latest archive that holds a copy of its blob
    # What its bytes say (`artifact.described`): format, predicate type, the digests it depends on,
    # its signature checked against the trust store. The subjects found are in `subjects`.
    format: str = ""
    predicate_type: str = ""
    dependencies: tuple[str, ...] = ()
    signature: str = ""
    signed_by: str = ""
    transparency_log: str = ""  # a Sigstore bundle's log entry
    declared: tuple[str, ...] | None = None  # the producer's own subjects, once a description added some

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
            "hold": None
            if not self.hold
            else {
                "reason": self.hold,
                "since": None if self.held_since is None else iso_utc(self.held_since),
            },
            "archive": None if self.archive is None else msgspec.structs.asdict(self.archive),
            "format": self.format or None,
            "predicate_type": self.predicate_type or None,
            "dependencies": list(self.dependencies),
            "signature": None
            if not self.format
            else {
                "status": self.signature,
                "signed_by": self.signed_by,
                "transparency_log": self.transparency_log or None,
            },
        }


def artifact_of(event: Event) -> str | None:
    """The artifact an event is about, if it touches the index at all."""
    if isinstance(event, _TOUCHING):
        return event.artifact_id
    return None


_TOUCHING = (
    ArtifactIngested,
    ArtifactDescribed,
    ArtifactExpired,
    ArtifactArchived,
    ArtifactHoldSet,
    ArtifactHoldReleased,
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
    if record is not None and record.status in GONE:  # the same content submitted again
        reason = f"ingested again at {iso_utc(event.ingested_at)} after it was {record.status}"
        return msgspec.structs.replace(
            record, status=INGESTED, status_reason=reason, changed_by=event.correlation_id
        )
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
def _expired(
    event: ArtifactExpired, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None or record.hold or record.status in GONE:  # a hold wins, whenever it came
        return record
    tier = " (aggressive tier)" if event.aggressive else ""
    reason = f"expired at {iso_utc(event.expired_at)}: older than its kind's {event.max_age}{tier}"
    return msgspec.structs.replace(
        record, status=EXPIRED, status_reason=reason, changed_by=event.correlation_id
    )


@apply.register
def _described(
    event: ArtifactDescribed, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    """The latest description replaces an earlier one; the producer's subjects always stay."""
    if record is None:
        return None
    declared = record.subjects if record.declared is None else record.declared
    return msgspec.structs.replace(
        record,
        format=event.format,
        predicate_type=event.predicate_type,
        dependencies=tuple(sorted(set(event.dependencies))),
        signature=event.signature,
        signed_by=event.signed_by,
        transparency_log=event.transparency_log,
        subjects=tuple(sorted(set(declared) | set(event.subjects))),
        declared=declared,
    )


@apply.register
def _archived(
    event: ArtifactArchived, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None or record.hold or record.status != INGESTED:  # only a good blob is archived
        return record
    return msgspec.structs.replace(
        record,
        status=ARCHIVED,
        status_reason=f"archived at {iso_utc(event.archived_at)} to {event.location}",
        archive=ArchiveRef(archive_id=event.archive_id, location=event.location, sha256=event.archive_sha256),
        changed_by=event.correlation_id,
    )


@apply.register
def _hold_set(
    event: ArtifactHoldSet, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None:
        return None
    return msgspec.structs.replace(
        record, hold=event.reason or "held", held_since=event.set_at, changed_by=event.correlation_id
    )


@apply.register
def _hold_released(
    event: ArtifactHoldReleased, record: ArtifactRecord | None, position: Position
) -> ArtifactRecord | None:
    if record is None:
        return None
    return msgspec.structs.replace(record, hold="", held_since=None, changed_by=event.correlation_id)


@apply.register
def _untouched(
    event: ArtifactResubmitted | IngestRejected | VerificationStarted | VerificationCompleted,
    record: ArtifactRecord | None,
    position: Position,
) -> ArtifactRecord | None:
    return record


class VoidedRange(msgspec.Struct, frozen=True, kw_only=True):
    """What one `state.restored` record voided on its partition: offsets `start` to `end`
    (the record's own offset, not included)."""

    restore_id: str
    anchor_id: str
    partition: int
    start: int
    end: int
    restored_at: datetime
    reason: str = ""
    actor: str = ""


class Voided(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One record a point-in-time restore voided: it stays in the log, and no longer counts."""

    partition: int
    offset: int
    type: str  # the event's type, or "not an event"
    artifact_id: str = ""
    run_id: str = ""  # a verification run's events
    restore_id: str
    anchor_id: str


def voided_range(event: StateRestored, position: Position) -> VoidedRange | None:
    """The range a `state.restored` record at `position` voids; None if it names another
    partition than its own (it voids nowhere: a record cannot void another partition's past)."""
    if event.partition != position.partition:
        return None
    return VoidedRange(
        restore_id=event.restore_id,
        anchor_id=event.anchor_id,
        partition=position.partition,
        start=min(max(event.voided_from, 0), position.offset),
        end=position.offset,
        restored_at=event.restored_at,
        reason=event.reason,
        actor=event.actor,
    )


def counts(offset: int, voided: Sequence[VoidedRange]) -> bool:
    """Whether the record at `offset` still counts, given its partition's earlier voided ranges."""
    return not any(r.start <= offset < r.end for r in voided)


def as_of(
    artifact_ids: Collection[str], history: Iterable[tuple[Position, Event]]
) -> dict[str, ArtifactRecord | None]:
    """The records of `artifact_ids` after `history` alone (their counting events, in order)."""
    records: dict[str, ArtifactRecord | None] = dict.fromkeys(artifact_ids)
    for position, event in history:
        artifact_id = artifact_of(event)
        if artifact_id in records:
            records[artifact_id] = apply(event, records[artifact_id], position)
    return records


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
DEPENDENCY = b"d/"  # d/<digest>/<artifact id>: the artifact depends on (has as material) that digest
KIND = b"k/"
COUNT = b"~count"
TOTAL_BYTES = b"~bytes"
CONTENT = (ARTIFACT, DEPENDENCY, KIND, SUBJECT, TOTAL_BYTES, COUNT)  # in key order: what the index holds
VOIDED = b"v/"  # v/<partition>/<offset>: a `Voided` record
UNLINK = b"x/"  # x/<artifact id>: an expired or archived artifact whose blob is still to be deleted
RANGES = b"~void/"  # ~void/<partition>/<end>: a `VoidedRange`

_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(ArtifactRecord)


def rows(record: ArtifactRecord) -> dict[bytes, bytes]:
    """Every row a record owns: itself plus one row per subject, one per dependency and one for
    its kind."""
    ident = record.artifact_id.encode()
    owned = {ARTIFACT + ident: _encoder.encode(record), KIND + record.kind.encode() + b"/" + ident: b""}
    for subject in record.subjects:
        owned[SUBJECT + subject.encode() + b"/" + ident] = b""
    for dependency in record.dependencies:
        owned[DEPENDENCY + dependency.encode() + b"/" + ident] = b""
    return owned


def decode_record(raw: bytes) -> ArtifactRecord:
    return _decoder.decode(raw)


def voided_key(partition: int, offset: int) -> bytes:
    return VOIDED + b"%05d/%020d" % (partition, offset)


def range_key(voided: VoidedRange) -> bytes:
    return RANGES + b"%05d/%020d" % (voided.partition, voided.end)


def encode_row(row: Voided | VoidedRange) -> bytes:
    return _encoder.encode(row)


_ranges = msgspec.json.Decoder(VoidedRange)
_voided = msgspec.json.Decoder(Voided)


def decode_range(raw: bytes) -> VoidedRange:
    return _ranges.decode(raw)


def decode_voided(raw: bytes) -> Voided:
    return _voided.decode(raw)
