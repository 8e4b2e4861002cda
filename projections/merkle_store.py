"""Per-partition Merkle trees of `evidence.events` in RocksDB.

Each partition's records, in offset order, are the leaves of an RFC 6962 tree (leaf =
SHA-256(0x00 || record value), whatever the value holds). The store keeps every perfect subtree
node that `Frontier.extend` completes, the frontier itself, and which leaf each offset became,
all in one write batch with the applied position (`projections.tracking`), so proofs take
O(log n) reads and never a rescan of the log. Tree sizes, not offsets, are the positions
anchors record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import msgspec

from locker import merkle
from locker.errors import StorageUnavailable
from locker.merkle import Frontier
from projections.tracking import TrackedStore

NODE = b"n/"
FRONTIER = b"f/"
LEAF = b"l/"

# (partition, offset, record value)
Leaf = tuple[int, int, bytes]


class _FrontierRow(msgspec.Struct, array_like=True):
    size: int
    hashes: list[bytes]


_frontier_encoder = msgspec.msgpack.Encoder()
_frontier_decoder = msgspec.msgpack.Decoder(_FrontierRow)


def _node_key(partition: int, level: int, index: int) -> bytes:
    return NODE + b"%05d/%02d/%012d" % (partition, level, index)


def _leaf_key(partition: int, offset: int) -> bytes:
    return LEAF + b"%05d/%020d" % (partition, offset)


def _frontier_key(partition: int) -> bytes:
    return FRONTIER + b"%05d" % partition


class PartitionNodes:
    """A `merkle.NodeReader` over one partition's stored nodes.

    A node a proof needs is always stored (the frontier says which exist), so a missing one means
    a damaged store: `StoreDamaged`, not the `KeyError` of an incomplete reader.
    """

    def __init__(self, store: MerkleStore, partition: int) -> None:
        self._store = store
        self._partition = partition

    def node(self, level: int, index: int) -> bytes:
        value = self._store.get_raw(_node_key(self._partition, level, index))
        if value is None:
            where = f"node {index} at level {level} of partition {self._partition} is missing"
            raise self._store.damaged(where)
        return value


class CachedNodes:
    """A `merkle.NodeReader` that keeps every node it read: proofs of many leaves of one tree
    (an archive's) share most of their nodes."""

    def __init__(self, nodes: PartitionNodes) -> None:
        self._nodes = nodes
        self._seen: dict[tuple[int, int], bytes] = {}

    def node(self, level: int, index: int) -> bytes:
        key = (level, index)
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = self._nodes.node(level, index)
        return found


class MerkleStore(TrackedStore):
    what = "Merkle store"

    # Queries.
    def frontier(self, partition: int) -> Frontier:
        raw = self.get_raw(_frontier_key(partition))
        if raw is None:
            return Frontier()
        try:
            row = _frontier_decoder.decode(raw)
        except msgspec.DecodeError:  # ValidationError included
            raise self.damaged(f"the frontier row of partition {partition} is unreadable") from None
        return Frontier(row.size, tuple(row.hashes))

    def tree_size(self, partition: int) -> int:
        return self.frontier(partition).size

    def root(self, partition: int) -> bytes:
        return self.frontier(partition).root()

    def leaf_index(self, partition: int, offset: int) -> int | None:
        raw = self.get_raw(_leaf_key(partition, offset))
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise self.damaged(f"the leaf row of {partition}/{offset} is not a number") from None

    def leaf_indices(self, partition: int, offsets: list[int]) -> list[int | None]:
        """`leaf_index` of many offsets of one partition, in one read."""
        out: list[int | None] = []
        for offset, raw in zip(
            offsets, self.get_many([_leaf_key(partition, o) for o in offsets]), strict=True
        ):
            try:
                out.append(None if raw is None else int(raw))
            except ValueError:
                raise self.damaged(f"the leaf row of {partition}/{offset} is not a number") from None
        return out

    def nodes(self, partition: int) -> PartitionNodes:
        if self._db is None:
            raise StorageUnavailable(f"Merkle store at {self.path} does not exist")
        return PartitionNodes(self, partition)

    def root_at(self, partition: int, size: int) -> bytes:
        """The root the partition's tree had at `size` leaves (size <= current size)."""
        return merkle.tree_root(self.nodes(partition), size)

    def inclusion_proof(self, partition: int, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(self.nodes(partition), index, size)

    def consistency_proof(self, partition: int, old_size: int, new_size: int) -> list[bytes]:
        return merkle.consistency_proof(self.nodes(partition), old_size, new_size)

    # The one writer.
    def apply(self, batch: Sequence[Leaf]) -> int:
        """Append the batch's records as leaves, in one write batch; returns leaves appended."""
        wb = self.new_batch()
        fresh: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for partition, offset, value in batch:
            last = fresh[partition][-1][0] if fresh[partition] else self._applied.get(partition, -1)
            if offset > last:  # at or below: already a leaf, replay is a no-op
                fresh[partition].append((offset, value))
        positions: dict[int, int] = {}
        for partition, items in fresh.items():
            if not items:
                continue
            frontier = self.frontier(partition)
            for index, (offset, _) in enumerate(items, start=frontier.size):
                wb.put(_leaf_key(partition, offset), b"%d" % index)
            frontier, completed = frontier.extend(merkle.leaf_hashes(value for _, value in items))
            for level, index, digest in completed:
                wb.put(_node_key(partition, level, index), digest)
            wb.put(
                _frontier_key(partition),
                _frontier_encoder.encode(_FrontierRow(frontier.size, list(frontier.hashes))),
            )
            positions[partition] = items[-1][0]
        if positions:
            self.commit(wb, positions)
        return sum(len(items) for items in fresh.values())
