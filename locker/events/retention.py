"""Retention events: legal holds, artifacts expired under the retention policy, and artifacts
moved to an archive.

A held artifact is exempt from every deletion path: the service never expires one, and the index
ignores an expiry of an artifact held when it arrives. Setting and releasing a hold are facts on
the log, each with the operator's reason. An expiry deletes the blob (after the event is on the
log), never the log records: the artifact's events stay leaves of the Merkle trees, so its proofs
still verify, and its status says expired. Archiving is the same with a copy kept: the blob
goes once `artifact.archived` is on the log, and the status says which archive holds it.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class ArtifactHoldSet(msgspec.Struct, frozen=True, kw_only=True, tag="artifact.hold_set", tag_field="type"):
    """`stella evidence hold set <id> --reason`: the artifact is under legal hold."""

    artifact_id: str
    reason: str
    actor: str = ""
    set_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactHoldReleased(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.hold_released", tag_field="type"
):
    """`stella evidence hold release <id> --reason`: the hold is lifted."""

    artifact_id: str
    reason: str
    actor: str = ""
    released_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactExpired(msgspec.Struct, frozen=True, kw_only=True, tag="artifact.expired", tag_field="type"):
    """`stella evidence cleanup --apply-retention`: the artifact outlived its kind's maximum age;
    its blob is deleted once this is on the log."""

    artifact_id: str
    kind: str
    size: int
    max_age: str  # the policy that expired it, as text ("365d")
    aggressive: bool = False
    actor: str = ""
    expired_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class RetentionApplied(msgspec.Struct, frozen=True, kw_only=True, tag="retention.applied", tag_field="type"):
    """A cleanup run is complete: every `artifact.expired` of it (same correlation id) is before it."""

    run_id: str
    expired: int
    bytes: int
    aggressive: bool = False
    policy: dict[str, str]
    actor: str = ""
    applied_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactArchived(msgspec.Struct, frozen=True, kw_only=True, tag="artifact.archived", tag_field="type"):
    """`stella evidence archive`: the artifact's blob, events and proofs are in an archive that
    was written, synced, read back and checked; its local blob is deleted once this is on the log."""

    artifact_id: str
    kind: str
    size: int
    archive_id: str
    location: str  # where the archive was written (an absolute path on the CLI's machine)
    archive_sha256: str  # of the whole archive file: `recover` checks a file against it
    anchor_id: str  # the anchor the archive's inclusion proofs are against
    actor: str = ""
    archived_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArchiveRecorded(msgspec.Struct, frozen=True, kw_only=True, tag="archive.recorded", tag_field="type"):
    """One `archive.record` command is done: its `artifact.archived` events are all before this.
    `skipped` are the artifacts of the command that were not archived (held, gone or changed
    since the CLI chose them), each with why; they keep their blobs."""

    archive_id: str
    part: int
    parts: int
    archived: int
    bytes: int
    skipped: dict[str, str] = {}
    actor: str = ""
    recorded_at: datetime
    correlation_id: str = ""
    schema_version: int = 1
