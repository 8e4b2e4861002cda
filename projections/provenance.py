"""An artifact's chain of custody: the step each event about it is. Pure; `stella evidence
provenance show` reads the events from the log, `stella replay` from an evidence pack."""

from __future__ import annotations

from datetime import datetime

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
)
from locker.times import iso_utc


def step(event: Event) -> dict[str, str] | None:
    """The step `event` is in its artifact's custody (when, what, who, detail); None if it is none."""
    match event:
        case ArtifactIngested():
            subjects = ", ".join(event.subjects) or "no subjects"
            detail = f"{event.kind}, {event.size} bytes, {event.media_type or 'no media type'}; {subjects}"
            return row(event.ingested_at, "ingested", event.producer, detail)
        case ArtifactResubmitted():
            return row(event.submitted_at, "submitted again", event.producer, "same content; nothing changed")
        case ArtifactVerificationFailed():
            actor = f"verification run {event.run_id}"
            return row(event.verified_at, f"verification failed: {event.outcome}", actor, event.detail)
        case ArtifactMarkedCorrupted():
            return row(event.marked_at, "marked corrupted", event.actor, event.reason)
        case ArtifactReplicated():
            return row(event.replicated_at, "replicated", "replication", event.replica)
        case ArtifactRecovered():
            return row(event.recovered_at, "recovered", event.actor, f"from the {event.source}")
        case ArtifactHoldSet():
            return row(event.set_at, "legal hold set", event.actor, event.reason)
        case ArtifactHoldReleased():
            return row(event.released_at, "legal hold released", event.actor, event.reason)
        case ArtifactDescribed():
            what = f"described as {event.format} {event.format_version}".rstrip()
            signed = f"signature {event.signature}" + (f" by {event.signed_by}" if event.signed_by else "")
            return row(event.described_at, what, "describe", f"{signed}; {event.detail}")
        case ArtifactExpired():
            tier = " (aggressive tier)" if event.aggressive else ""
            return row(
                event.expired_at, "expired", event.actor, f"older than its kind's {event.max_age}{tier}"
            )
        case ArtifactArchived():
            return row(
                event.archived_at, "archived", event.actor, f"to {event.location} ({event.archive_sha256})"
            )
    return None


def row(at: datetime, what: str, actor: str, detail: str) -> dict[str, str]:
    return {"at": iso_utc(at), "what": what, "actor": actor, "detail": detail}
