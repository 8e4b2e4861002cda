"""Integrity events: verification runs, artifacts that failed one, and operators' findings.

A run is two facts on the forever log, `verification.started` and `verification.completed`, plus
one `artifact.verification_failed` per artifact that did not verify. Every artifact's outcome,
good or bad, goes to `evidence.verifications` (`locker.verification.Outcome`), a topic with finite
retention: the log does not grow by one record per artifact per run. The completion event keeps
the run's coverage provable without them: `outcomes_digest` is the SHA-256 of the run's outcome
lines (`locker.verification.outcome_line`) in artifact-id order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

Mode = Literal["quick", "full"]
FailedOutcome = Literal["mismatch", "missing", "unreadable"]


class VerificationStarted(
    msgspec.Struct, frozen=True, kw_only=True, tag="verification.started", tag_field="type"
):
    """A run began: `planned` artifacts chosen (`mode`, and for quick runs `sample` and `seed`;
    for a run as of an anchor, `to_anchor`: the artifacts that anchor's trees cover).

    Version 2 added `to_anchor`; a version-1 record reads as a run of the whole index.
    """

    run_id: str
    mode: Mode
    planned: int
    sample: str = ""  # quick runs: as asked ("500", "2%")
    seed: int = 0  # quick runs: the tie-break of the sample's order; the same seed, the same order
    to_anchor: str = ""  # `verify --to-anchor`: the id of the anchor the run is as of
    requested_by: str = ""
    started_at: datetime
    correlation_id: str = ""
    schema_version: int = 2


class VerificationCompleted(
    msgspec.Struct, frozen=True, kw_only=True, tag="verification.completed", tag_field="type"
):
    """A run ended: how many artifacts had each outcome, and a digest over every outcome."""

    run_id: str
    mode: Mode
    planned: int
    ok: int
    mismatch: int
    missing: int
    unreadable: int
    bytes_read: int
    started_at: datetime
    completed_at: datetime
    outcomes_digest: str
    correlation_id: str = ""
    schema_version: int = 1

    @property
    def failed(self) -> int:
        return self.mismatch + self.missing + self.unreadable


class ArtifactVerificationFailed(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.verification_failed", tag_field="type"
):
    """A run found an artifact's blob missing, unreadable, or not matching its digest."""

    artifact_id: str
    run_id: str
    outcome: FailedOutcome
    actual_digest: str = ""  # mismatch: what the blob hashes to now
    actual_size: int = -1
    detail: str = ""
    verified_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactMarkedCorrupted(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.marked_corrupted", tag_field="type"
):
    """An operator declared an artifact corrupted (`stella evidence mark-corrupted`)."""

    artifact_id: str
    reason: str
    actor: str = ""
    marked_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactReplicated(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.replicated", tag_field="type"
):
    """The artifact's blob, checked against its id, is durable in the replica store."""

    artifact_id: str
    replica: str  # the replica root it went to
    replicated_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactRecovered(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.recovered", tag_field="type"
):
    """The artifact's blob was restored from `source`, whose copy hashed to the artifact id."""

    artifact_id: str
    source: Literal["replica", "archive"]
    actor: str = ""
    recovered_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class BackupCreated(msgspec.Struct, frozen=True, kw_only=True, tag="backup.created", tag_field="type"):
    """An operator's backup (`stella backup create`) is complete; `manifest_sha256` names its
    signed manifest, which lists every file with its SHA-256."""

    backup_id: str
    backup_type: str
    manifest_sha256: str
    events: int  # records of evidence.events in it
    anchors: int  # records of evidence.anchors in it
    artifacts: int  # blobs it holds
    blobs_copied: int  # of those, new to the backup folder (the rest were there from earlier backups)
    latest_anchor: str = ""
    actor: str = ""
    created_at: datetime
    correlation_id: str = ""
    schema_version: int = 1
