"""Commands the CLI sends to the service on `evidence.commands`, each with a `command_id`.

Every event a command causes carries that id as `correlation_id`. Commands forbid unknown
fields (events do not).
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Literal, Union

import msgspec

from locker.decoding import Decoder
from locker.events.integrity import Mode


class CreateAnchor(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="anchor.create",
    tag_field="type",
    forbid_unknown_fields=True,
):
    command_id: str
    requested_at: datetime
    new_chain_reason: str = ""  # non-empty: start a new chain segment ...
    continue_from: str = ""  # ... continuing this anchor (the old chain's last good one)
    schema_version: int = 1


class RecoverAnchor(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="anchor.recover",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Replace the damaged anchor record at `replaces_offset` by `record`, a checked backup copy."""

    command_id: str
    requested_at: datetime
    record: bytes
    replaces_offset: int
    reason: str
    schema_version: int = 1


class StartVerification(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="verification.start",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Verify every artifact (`full`) or a sample (`quick`); the run's id is the command's.

    Version 2 added `to_anchor`: a full run of the artifacts that anchor's trees cover.
    """

    command_id: str
    requested_at: datetime
    mode: Mode
    sample: str = ""  # quick: "500" or "2%"; "" for the configured default
    seed: int | None = None  # quick: None for a random one
    to_anchor: str = ""  # full: only the artifacts ingested at or before this anchor
    requested_by: str = ""
    schema_version: int = 2


class MarkCorrupted(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="artifact.mark_corrupted",
    tag_field="type",
    forbid_unknown_fields=True,
):
    command_id: str
    requested_at: datetime
    artifact_id: str
    reason: str
    requested_by: str = ""
    schema_version: int = 1


class RecoverArtifact(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="artifact.recover",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Restore an artifact's blob from `source`, if the copy there hashes to the artifact id."""

    command_id: str
    requested_at: datetime
    artifact_id: str
    source: Literal["replica", "archive"]  # archive: the CLI restored the blob from a checked archive
    requested_by: str = ""
    schema_version: int = 1


class OptimizeIndex(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="index.optimize",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Compact the index store (the service holds it while it runs)."""

    command_id: str
    requested_at: datetime
    requested_by: str = ""
    schema_version: int = 1


class RecordBackup(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="backup.record",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Record a finished backup on the log (`backup.created`); the CLI made it."""

    command_id: str
    requested_at: datetime
    backup_id: str
    backup_type: str
    manifest_sha256: str
    events: int
    anchors: int
    artifacts: int
    blobs_copied: int
    latest_anchor: str = ""
    requested_by: str = ""
    schema_version: int = 1


class HoldArtifact(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="artifact.hold",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Set (`release` false) or release a legal hold on an artifact."""

    command_id: str
    requested_at: datetime
    artifact_id: str
    reason: str
    release: bool = False
    requested_by: str = ""
    schema_version: int = 1


class ApplyRetention(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="retention.apply",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Expire every artifact older than its kind's maximum age in `max_ages` (kind -> "365d" or
    "forever": the policy of the CLI's config, the aggressive tier applied if `aggressive`)."""

    command_id: str
    requested_at: datetime
    max_ages: dict[str, str]
    aggressive: bool = False
    requested_by: str = ""
    schema_version: int = 1


class RestoreToAnchor(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="state.restore",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Point-in-time recovery: every partition back to anchor `anchor_id` (`state.restored`)."""

    command_id: str
    requested_at: datetime
    anchor_id: str
    reason: str = ""
    requested_by: str = ""
    schema_version: int = 1


class RecordArchive(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="archive.record",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Record that `artifact_ids` are in the archive the CLI wrote, synced, read back and checked
    (`artifact.archived` each, then `archive.recorded`): part `part` of `parts` of one archive,
    so that no command outgrows a Kafka record."""

    command_id: str
    requested_at: datetime
    archive_id: str
    location: str
    archive_sha256: str
    anchor_id: str
    artifact_ids: list[str]
    part: int = 1
    parts: int = 1
    requested_by: str = ""
    schema_version: int = 1


Command = Union[  # noqa: UP007 - a runtime alias msgspec reads
    CreateAnchor,
    RecoverAnchor,
    StartVerification,
    MarkCorrupted,
    RecoverArtifact,
    OptimizeIndex,
    RecordBackup,
    RestoreToAnchor,
    HoldArtifact,
    ApplyRetention,
    RecordArchive,
]
_encoder = msgspec.json.Encoder(order="sorted")
_decoder: Decoder[Command] = Decoder(Command, "command")


def new_id() -> str:
    return str(uuid.uuid4())


def create_anchor(new_chain_reason: str = "", continue_from: str = "") -> CreateAnchor:
    return CreateAnchor(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        new_chain_reason=new_chain_reason,
        continue_from=continue_from,
    )


def recover_anchor(record: bytes, replaces_offset: int, reason: str) -> RecoverAnchor:
    return RecoverAnchor(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        record=record,
        replaces_offset=replaces_offset,
        reason=reason,
    )


def start_verification(
    mode: Mode, sample: str = "", seed: int | None = None, to_anchor: str = ""
) -> StartVerification:
    return StartVerification(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        mode=mode,
        sample=sample,
        seed=seed,
        to_anchor=to_anchor,
        requested_by=actor(),
    )


def hold_artifact(artifact_id: str, reason: str, *, release: bool) -> HoldArtifact:
    return HoldArtifact(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        artifact_id=artifact_id,
        reason=reason,
        release=release,
        requested_by=actor(),
    )


def apply_retention(max_ages: dict[str, str], *, aggressive: bool) -> ApplyRetention:
    return ApplyRetention(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        max_ages=max_ages,
        aggressive=aggressive,
        requested_by=actor(),
    )


def record_archive(
    archive_id: str,
    location: str,
    archive_sha256: str,
    anchor_id: str,
    artifact_ids: list[str],
    *,
    part: int = 1,
    parts: int = 1,
) -> RecordArchive:
    return RecordArchive(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        archive_id=archive_id,
        location=location,
        archive_sha256=archive_sha256,
        anchor_id=anchor_id,
        artifact_ids=artifact_ids,
        part=part,
        parts=parts,
        requested_by=actor(),
    )


def restore_to_anchor(anchor_id: str, reason: str) -> RestoreToAnchor:
    return RestoreToAnchor(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        anchor_id=anchor_id,
        reason=reason,
        requested_by=actor(),
    )


def mark_corrupted(artifact_id: str, reason: str) -> MarkCorrupted:
    return MarkCorrupted(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        artifact_id=artifact_id,
        reason=reason,
        requested_by=actor(),
    )


def recover_artifact(artifact_id: str, source: Literal["replica", "archive"]) -> RecoverArtifact:
    return RecoverArtifact(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        artifact_id=artifact_id,
        source=source,
        requested_by=actor(),
    )


def optimize_index() -> OptimizeIndex:
    return OptimizeIndex(command_id=new_id(), requested_at=datetime.now(UTC), requested_by=actor())


def actor() -> str:
    """Who asks: the operator's login name and host, as the log records them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def encode(command: Command) -> bytes:
    return _encoder.encode(command)


def decode(raw: bytes | None) -> Command:
    """A command record value (None for a null value).

    Raises `InvalidInput` with a reason from `locker.decoding.REASONS`.
    """
    return _decoder.decode(raw)
