"""The small services object every loop handler takes: stores, storage, topics, limits."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from locker import signing
from locker.cas import Blobs
from projections.anchor_store import AnchorStore
from projections.merkle_store import MerkleStore
from projections.store import IndexStore, LogRange
from streams.topics import Topics


class RecentIds:
    """Artifact ids this worker ingested lately, bounded: the index may not have applied their
    events yet when the same content comes again."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, artifact_id: object) -> bool:
        return artifact_id in self._ids

    def clear(self) -> None:
        """Forget them all: a point-in-time restore may have voided their ingests."""
        self._ids.clear()

    def add_all(self, artifact_ids: Iterable[str]) -> None:
        for artifact_id in artifact_ids:
            self._ids[artifact_id] = None
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


@dataclass
class Services:
    topics: Topics
    blobs: Blobs
    index: IndexStore
    trees: MerkleStore
    chain: AnchorStore
    verifier: signing.Verifier | None
    max_content_bytes: int
    log: LogRange | None = None  # reads `evidence.events` back for a `state.restored` (`IndexStore`)
    reserve: int = 0  # bytes ingest leaves free on the blob store's file system
    free_bytes: Callable[[], int | None] | None = None  # free bytes there now (None: unknown)
    recent: RecentIds = field(default_factory=RecentIds)
    replica: Blobs | None = None

    def delete_blobs(self, artifact_ids: list[str]) -> None:
        """The blobs of expired artifacts, and their replica copies."""
        self.blobs.delete_many(artifact_ids)
        if self.replica is not None:
            self.replica.delete_many(artifact_ids)
