"""Event schemas (the facts on `evidence.events`) and their codec.

They live in the core package because both the stream processors and the projection folds
need them, and imports point one way: streams -> projections -> locker.
"""

from locker.events.codec import EVENT_TYPES, Event, decode, encode
from locker.events.ingest import (
    KINDS,
    ArtifactDescribed,
    ArtifactIngested,
    ArtifactResubmitted,
    IngestRejected,
    Kind,
)
from locker.events.integrity import (
    ArtifactMarkedCorrupted,
    ArtifactRecovered,
    ArtifactReplicated,
    ArtifactVerificationFailed,
    BackupCreated,
    VerificationCompleted,
    VerificationStarted,
)
from locker.events.recovery import BackupRestored, StateRestored
from locker.events.retention import (
    ArchiveRecorded,
    ArtifactArchived,
    ArtifactExpired,
    ArtifactHoldReleased,
    ArtifactHoldSet,
    RetentionApplied,
)

__all__ = [
    "EVENT_TYPES",
    "KINDS",
    "ArchiveRecorded",
    "ArtifactArchived",
    "ArtifactDescribed",
    "ArtifactExpired",
    "ArtifactHoldReleased",
    "ArtifactHoldSet",
    "ArtifactIngested",
    "ArtifactMarkedCorrupted",
    "ArtifactRecovered",
    "ArtifactReplicated",
    "ArtifactResubmitted",
    "ArtifactVerificationFailed",
    "BackupCreated",
    "BackupRestored",
    "Event",
    "IngestRejected",
    "Kind",
    "RetentionApplied",
    "StateRestored",
    "VerificationCompleted",
    "VerificationStarted",
    "decode",
    "encode",
]
