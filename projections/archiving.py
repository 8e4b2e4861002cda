"""Which artifacts of an `archive.record` command the service records as archived. Pure.

The CLI chose the artifacts and checked the archive it wrote; the service decides again from its
own index, at the moment it records: an artifact is archived only if it is indexed, not under
legal hold and still `ingested` (its blob good as far as the locker knows). The others keep their
blobs, each listed with why in `archive.recorded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from locker.digests import is_digest
from locker.events import ArchiveRecorded, ArtifactArchived
from locker.requests import RecordArchive
from projections.index import INGESTED, ArtifactRecord


def decide(
    command: RecordArchive, records: Mapping[str, ArtifactRecord | None], now: datetime
) -> tuple[list[ArtifactArchived], ArchiveRecorded]:
    """The `artifact.archived` events of `command` and the `archive.recorded` that closes them;
    `records` holds the index's record of each of its artifact ids."""
    archived: list[ArtifactArchived] = []
    skipped: dict[str, str] = {}
    for artifact_id in dict.fromkeys(command.artifact_ids):
        record = records.get(artifact_id) if is_digest(artifact_id) else None
        if record is None:
            skipped[artifact_id[:80]] = "not in the index"
        elif record.hold:
            skipped[artifact_id] = f"under legal hold ({record.hold})"
        elif record.status != INGESTED:
            skipped[artifact_id] = f"its status is {record.status}"
        else:
            archived.append(
                ArtifactArchived(
                    artifact_id=artifact_id,
                    kind=record.kind,
                    size=record.size,
                    archive_id=command.archive_id,
                    location=command.location,
                    archive_sha256=command.archive_sha256,
                    anchor_id=command.anchor_id,
                    actor=command.requested_by,
                    archived_at=now,
                    correlation_id=command.command_id,
                )
            )
    done = ArchiveRecorded(
        archive_id=command.archive_id,
        part=command.part,
        parts=command.parts,
        archived=len(archived),
        bytes=sum(e.size for e in archived),
        skipped=skipped,
        actor=command.requested_by,
        recorded_at=now,
        correlation_id=command.command_id,
    )
    return archived, done
