"""Read-only questions about the locker: they open the projections read-only, never write."""

from __future__ import annotations

from typing import Any

from locker.cas import BlobStore, open_store
from locker.config import Settings
from locker.digests import parse_digest
from locker.errors import ArtifactNotFound, LockerError, StorageUnavailable
from projections.index import GONE, ArtifactRecord
from projections.store import IndexStore
from projections.tracking import position_key
from streams.topics import Topics


def index_store(settings: Settings) -> IndexStore:
    return IndexStore(settings.index_path, readonly=True)


def find(settings: Settings, artifact_id: str) -> ArtifactRecord:
    parse_digest(artifact_id, what="artifact id")
    with index_store(settings) as index:
        record = index.get(artifact_id)
    if record is None:
        raise ArtifactNotFound(artifact_id)
    return record


def exists(settings: Settings, artifact_id: str) -> dict[str, Any]:
    """Is the artifact in the locker: indexed and its blob in storage? `state` says which:
    `present`, `not-found`, `blob-missing` (the log says it was ingested, storage does not have
    it: a lost blob, or a forged or misrouted event), or the status that took the blob away
    (`expired`, `archived`)."""
    parse_digest(artifact_id, what="artifact id")
    with index_store(settings) as index:
        record = index.get(artifact_id)
    blob = open_store(settings).exists(artifact_id)
    if record is None:
        state = "not-found"
    elif blob:
        state = "present"
    else:
        state = record.status if record.status in GONE else "blob-missing"
    return {
        "artifact_id": artifact_id,
        "exists": state == "present",
        "state": state,
        "indexed": record is not None,
        "blob_present": blob,
    }


def lookup(settings: Settings, artifact_id: str) -> dict[str, Any]:
    """The index rows for one artifact, with the event position they were built from."""
    record = find(settings, artifact_id)
    return {
        "artifact_id": record.artifact_id,
        "indexed": True,
        "kind": record.kind,
        "subjects": list(record.subjects),
        "status": record.status,
        "status_reason": record.status_reason,
        "hold": record.public()["hold"],
        "format": record.format or None,
        "predicate_type": record.predicate_type or None,
        "dependencies": list(record.dependencies),
        "signature": record.public()["signature"],
        "event_partition": record.partition,
        "event_offset": record.offset,
        "position_key": position_key(record.partition).decode(),
    }


def index_status(settings: Settings, *, checksum: bool = False) -> dict[str, Any]:
    import asyncio

    from projections.merkle_store import MerkleStore
    from streams.kafka import end_offsets

    with index_store(settings) as index:
        entries = index.count()
        applied = index.applied()
        digest = index.checksum() if checksum else None
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        tree_sizes = {p: trees.tree_size(p) for p in trees.applied()}
    topic = Topics(settings.topic_prefix).events
    try:
        ends: dict[int, int] | None = asyncio.run(end_offsets(settings, topic))
        broker_error = None
    except LockerError as exc:
        ends, broker_error = None, str(exc)
    partitions = []
    for partition in sorted(set(applied) | set(ends or {})):
        applied_next = applied.get(partition, -1) + 1
        end = None if ends is None else ends.get(partition, 0)
        partitions.append(
            {
                "partition": partition,
                "applied_offset": applied_next,
                "end_offset": end,
                "lag": None if end is None else max(end - applied_next, 0),
                "merkle_tree_size": tree_sizes.get(partition, 0),
            }
        )
    lags = [p["lag"] for p in partitions if p["lag"] is not None]
    out: dict[str, Any] = {
        "topic": topic,
        "entries": entries,
        "partitions": partitions,
        "lag": sum(lags) if ends is not None else None,
        "path": str(settings.index_path),
    }
    if digest is not None:
        out["checksum"] = digest
    if broker_error:
        out["broker_error"] = broker_error
    return out


def evidence_status(settings: Settings) -> dict[str, Any]:
    from commands import service

    blobs = open_store(settings)
    storage: dict[str, Any] = {"path": blobs.location}
    if not isinstance(blobs, BlobStore):
        try:
            count, size = blobs.usage()
            storage.update(accessible=True, blobs=count, bytes=size, temp_files=0)
        except StorageUnavailable as exc:
            storage.update(accessible=False, detail=str(exc))
    elif blobs.blobs.is_dir():
        count, size = blobs.usage()
        storage.update(
            accessible=True,
            blobs=count,
            bytes=size,
            temp_files=len(blobs.tmp_files()),
        )
    else:
        storage.update(accessible=False, detail="storage not initialised; run `stella init`")
    with index_store(settings) as index:
        entries = index.count()
    return {
        "storage": storage,
        "index": {"entries": entries},
        "service": service.status(settings),
    }
