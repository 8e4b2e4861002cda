"""Retention events: legal holds, and artifacts expired under the retention policy.

A held artifact is exempt from every deletion path: the service never expires one, and the index
ignores an expiry of an artifact held when it arrives. Setting and releasing a hold are facts on
the log, each with the operator's reason. An expiry deletes the blob (after the event is on the
log), never the log records: the artifact's events stay leaves of the Merkle trees, so its proofs
still verify, and its status says expired.
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
