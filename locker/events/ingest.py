"""Ingest events: what became of a submission.

Tags are explicit and stable: renaming a class never changes the log.
New fields get defaults; a breaking change bumps `schema_version` and adds an upcast step
in `locker.events.codec`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

Kind = Literal["attestation", "sbom", "vex", "scan", "signature", "other"]
KINDS: tuple[str, ...] = ("attestation", "sbom", "vex", "scan", "signature", "other")


class ArtifactIngested(msgspec.Struct, frozen=True, kw_only=True, tag="artifact.ingested", tag_field="type"):
    """An artifact's blob is durable in storage under `artifact_id`."""

    artifact_id: str
    size: int
    kind: Kind
    subjects: tuple[str, ...] = ()
    producer: str = ""
    media_type: str = ""
    ingested_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactResubmitted(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.resubmitted", tag_field="type"
):
    """Content already in the locker was submitted again; nothing changed."""

    artifact_id: str
    producer: str = ""
    submitted_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class IngestRejected(msgspec.Struct, frozen=True, kw_only=True, tag="ingest.rejected", tag_field="type"):
    """A submission was refused; its bytes went to the dead-letter topic with `reason`."""

    reason: str
    detail: str
    claimed_digest: str = ""
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    rejected_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class ArtifactDescribed(
    msgspec.Struct, frozen=True, kw_only=True, tag="artifact.described", tag_field="type"
):
    """What the describe loop found in an ingested artifact's bytes (`locker.formats`): its
    format, the digests it is about and those it depends on, and its signature checked against the
    trust store. A later description of the same artifact replaces an earlier one."""

    artifact_id: str
    format: str
    format_version: str = ""
    subjects: tuple[str, ...] = ()
    predicate_type: str = ""
    dependencies: tuple[str, ...] = ()
    signature: str = "none"  # none | verified | unverified | failed
    signed_by: str = ""
    transparency_log: str = ""
    detail: str = ""
    described_at: datetime
    correlation_id: str = ""
    schema_version: int = 1
