"""The one check after every fault trial. It counts rather than asserts, so the report can say what
a trial found; the test then asserts that nothing was lost or applied twice.

- lost: an accepted artifact (its submission acknowledged by the broker) that is not in the index,
  or is indexed as ingested but has no blob, or a blob that does not hash to its id. An artifact
  the locker deleted on purpose (expired, archived) is accounted for.
- duplicated: an artifact applied twice: an index whose count is not its number of distinct ids
  (or whose rows by kind do not add up to it), an index record not made by its artifact's first
  `artifact.ingested` on the log, and each events partition whose Merkle tree has not exactly one
  leaf a record (size and RFC 6962 root recomputed from the log).
- repeated: artifacts with more than one `artifact.ingested` on the log. Not a loss or a double
  application (the index keeps the first, the Merkle tree holds each record once), but what a
  redelivery after a crash costs; counted for the report.
- the live index equals one rebuilt from offset 0 (`stella evidence index rebuild`'s replay into a
  fresh store: same checksum, same applied positions);
- a new anchor is made after the fault and the whole chain verifies against the log
  (`stella evidence anchor verify --all`): one chain, no fork, no gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commands import anchors as anchor_ops
from commands import service
from commands.index import replay
from locker.cas import Blobs, BlobStore, open_store
from locker.config import Settings
from locker.errors import ArtifactNotFound, InvalidInput, LockerError
from locker.events import ArtifactIngested, decode
from projections.index import GONE
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from streams.kafka import end_offsets, read_to_end
from streams.topics import Topics
from tests.unit.merkle_reference import mth


@dataclass
class Verdict:
    accepted: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    repeated: int = 0
    rebuild_matches: bool = False
    anchors: dict[str, Any] = field(default_factory=dict)
    chains: int = 0
    leftovers: list[str] = field(default_factory=list)  # temp files of writes cut short
    leader_after: float = 0.0  # seconds until the (only) worker led again and could anchor

    @property
    def anchors_verify(self) -> bool:
        return bool(self.anchors.get("verified")) and self.chains == 1

    @property
    def sound(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and self.rebuild_matches
            and self.anchors_verify
            and not self.leftovers
        )

    def summary(self) -> str:
        return json.dumps(
            {
                "accepted": self.accepted,
                "lost": self.lost[:10],
                "duplicated": self.duplicated[:10],
                "repeated": self.repeated,
                "rebuild_matches": self.rebuild_matches,
                "anchors": self.anchors,
                "chains": self.chains,
                "leftovers": self.leftovers[:10],
            },
            indent=2,
            default=str,
        )


def caught_up(settings: Settings, timeout: float = 300) -> None:
    """Wait until the index and the Merkle store hold every record now on the events topic."""
    ends = asyncio.run(end_offsets(settings, Topics(settings.topic_prefix).events))
    deadline = time.monotonic() + timeout
    while True:
        with (
            IndexStore(settings.index_path, readonly=True) as index,
            MerkleStore(settings.merkle_path, readonly=True) as trees,
        ):
            if all(min(index.resume_at(p), trees.resume_at(p)) >= end for p, end in ends.items()):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"the projections did not catch up with the events topic ({ends})")
        time.sleep(0.25)


def wait_indexed(settings: Settings, ids: set[str], timeout: float = 300) -> None:
    """Wait until every id of `ids` is in the index (or time out: the checker counts what is lost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with IndexStore(settings.index_path, readonly=True) as index:
            if index.count() >= len(ids) and all(index.get(i) is not None for i in ids):
                return
        time.sleep(0.5)


def check(settings: Settings, accepted: set[str], scratch: Path) -> Verdict:
    """Everything this module's docstring lists, for a locker whose service runs (it is stopped
    here: the rebuild compares stores at rest) and whose every accepted id is `accepted`."""
    verdict = Verdict(accepted=len(accepted))
    wait_indexed(settings, accepted)
    caught_up(settings)
    verdict.leader_after = _leading(settings)
    try:
        anchor_ops.create(settings)
    except LockerError as exc:  # say what the service was doing
        raise AssertionError(
            f"no anchor after the fault: {exc}; /healthz: {service.health(settings)}"
        ) from exc
    verdict.anchors = anchor_ops.verify(settings, latest=False)
    verdict.chains = len({a["chain_id"] for a in anchor_ops.listing(settings)})
    service.stop(settings)

    log = asyncio.run(_read_events(settings))
    first_ingest: dict[str, tuple[int, int]] = {}
    ingests: Counter[str] = Counter()
    for partition, offset, value in log:
        try:
            event = decode(value)
        except InvalidInput:
            continue
        if isinstance(event, ArtifactIngested):
            ingests[event.artifact_id] += 1
            first_ingest.setdefault(event.artifact_id, (partition, offset))
    verdict.repeated = sum(1 for n in ingests.values() if n > 1)

    blobs = open_store(settings)  # a folder or an S3 bucket
    with IndexStore(settings.index_path, readonly=True) as index:
        records = {r.artifact_id: r for r in index.records()}
        count, checksum, applied = index.count(), index.checksum(), index.applied()
        by_kind = sum(len(index.by_kind(k)) for k in {r.kind for r in records.values()})
    if count != len(records):
        verdict.duplicated.append(f"index count {count} != {len(records)} distinct ids")
    if by_kind != len(records):
        verdict.duplicated.append(f"rows by kind {by_kind} != {len(records)} distinct ids")
    for artifact_id, record in records.items():
        if first_ingest.get(artifact_id) != (record.partition, record.offset):
            verdict.duplicated.append(f"{artifact_id}: indexed from {record.partition}/{record.offset}")
    for artifact_id in sorted(accepted):
        record = records.get(artifact_id)
        if record is None:
            verdict.lost.append(f"{artifact_id}: not indexed")
        elif record.status not in GONE and _hash(blobs, artifact_id) != artifact_id:
            verdict.lost.append(f"{artifact_id}: no blob that hashes right")
    verdict.leftovers = [str(p) for p in blobs.tmp_files()] if isinstance(blobs, BlobStore) else []

    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for partition, _, value in log:
        by_partition[partition].append(value)
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        for partition in range(settings.partitions):
            values = by_partition.get(partition, [])
            if trees.tree_size(partition) != len(values) or trees.root(partition) != mth(values):
                verdict.duplicated.append(
                    f"partition {partition}: Merkle tree of {trees.tree_size(partition)} leaves, "
                    f"{len(values)} records"
                )

    fresh = scratch / "index.rebuild"
    with IndexStore(fresh, bulk=True) as rebuilt:
        replay(settings, rebuilt)
    with IndexStore(fresh, readonly=True) as rebuilt:
        verdict.rebuild_matches = (rebuilt.checksum(), rebuilt.applied()) == (checksum, applied)
    return verdict


def _leading(settings: Settings, timeout: float = 90) -> float:
    """Seconds until /healthz says this worker leads (it alone writes anchors); fails after
    `timeout`: a locker of one worker must lead again after any fault."""
    began = time.monotonic()
    while not (service.health(settings) or {}).get("leader"):
        if time.monotonic() - began > timeout:
            raise AssertionError(f"the only worker is not the leader {timeout:.0f} s after the fault")
        time.sleep(0.25)
    return time.monotonic() - began


def _hash(blobs: Blobs, artifact_id: str) -> str | None:
    try:
        return blobs.hash_of(artifact_id)
    except ArtifactNotFound:
        return None


async def _read_events(settings: Settings) -> list[tuple[int, int, bytes]]:
    """Every record of the events topic from offset 0: (partition, offset, value), in offset order."""
    out: list[tuple[int, int, bytes]] = []
    async for records in read_to_end(settings, Topics(settings.topic_prefix).events, max_records=10_000):
        out += [(r.partition, r.offset, r.value) for r in records]
    return sorted(out)
