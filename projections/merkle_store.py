"""Per-partition Merkle trees of `evidence.events` in RocksDB.

Each partition's records, in offset order, are the leaves of an RFC 6962 tree (leaf =
SHA-256(0x00 || record value), whatever the value holds). The store keeps every perfect subtree
node that `Frontier.append` completes, the frontier itself, and which leaf each offset became,
all in one write batch with the applied position, so proofs take O(log n) reads and never a
rescan of the log. Tree sizes, not offsets, are the positions anchors record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
from rocksdict import AccessType, Options, Rdict, WriteBatch

from locker import merkle
from locker.errors import StorageUnavailable
from locker.merkle import Frontier

NODE = b"n/"
FRONTIER = b"f/"
LEAF = b"l/"
POSITION = b"~pos/"

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


def _position_key(partition: int) -> bytes:
    return POSITION + b"%05d" % partition


class PartitionNodes:
    """A `merkle.NodeReader` over one partition's stored nodes."""

    def __init__(self, db: Rdict, partition: int) -> None:
        self._db = db
        self._partition = partition

    def node(self, level: int, index: int) -> bytes:
        value = self._db.get(_node_key(self._partition, level, index))
        if value is None:
            raise KeyError((self._partition, level, index))
        return bytes(value)


class MerkleStore:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        options = Options(raw_mode=True)
        try:
            if readonly:
                self._db: Rdict | None = None
                if (path / "CURRENT").exists():
                    self._db = Rdict(str(path), options, access_type=AccessType.read_only())
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                options.create_if_missing(True)
                self._db = Rdict(str(path), options)
        except Exception as exc:  # rocksdict raises plain Exception on lock/IO errors
            raise StorageUnavailable(f"cannot open Merkle store at {path}: {exc}") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> MerkleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Queries.
    def applied(self) -> dict[int, int]:
        """partition -> last applied offset."""
        if self._db is None:
            return {}
        out: dict[int, int] = {}
        it = self._db.iter()
        it.seek(POSITION)
        while it.valid() and it.key().startswith(POSITION):
            out[int(it.key()[len(POSITION) :])] = int(it.value())
            it.next()
        return out

    def frontier(self, partition: int) -> Frontier:
        raw = None if self._db is None else self._db.get(_frontier_key(partition))
        if raw is None:
            return Frontier()
        row = _frontier_decoder.decode(raw)
        return Frontier(row.size, tuple(row.hashes))

    def tree_size(self, partition: int) -> int:
        return self.frontier(partition).size

    def root(self, partition: int) -> bytes:
        return self.frontier(partition).root()

    def leaf_index(self, partition: int, offset: int) -> int | None:
        raw = None if self._db is None else self._db.get(_leaf_key(partition, offset))
        return None if raw is None else int(raw)

    def nodes(self, partition: int) -> PartitionNodes:
        if self._db is None:
            raise StorageUnavailable(f"Merkle store at {self.path} does not exist")
        return PartitionNodes(self._db, partition)

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
        if self._db is None or self.readonly:
            raise StorageUnavailable("Merkle store is open read-only")
        positions = self.applied()
        frontiers: dict[int, Frontier] = {}
        wb = WriteBatch(raw_mode=True)
        done = 0
        for partition, offset, value in batch:
            if offset <= positions.get(partition, -1):
                continue  # already a leaf: replay is a no-op
            frontier = frontiers.get(partition) or self.frontier(partition)
            wb.put(_leaf_key(partition, offset), b"%d" % frontier.size)
            frontier, completed = frontier.append(merkle.leaf_hash(value))
            for level, index, digest in completed:
                wb.put(_node_key(partition, level, index), digest)
            frontiers[partition] = frontier
            positions[partition] = offset
            done += 1
        for partition, frontier in frontiers.items():
            wb.put(
                _frontier_key(partition),
                _frontier_encoder.encode(_FrontierRow(frontier.size, list(frontier.hashes))),
            )
            wb.put(_position_key(partition), b"%d" % positions[partition])
        if done:
            self._db.write(wb)
        return done
