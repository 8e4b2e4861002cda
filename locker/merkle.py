"""RFC 6962 / RFC 9162 Merkle trees: hashes, an append-only frontier, proofs, verification.

Pure functions, no I/O. A tree over leaves D[0:n] is addressed by perfect subtrees: node
(level, index) covers leaves [index * 2**level, (index + 1) * 2**level). Proof generation reads
such nodes through a `NodeReader` (a dict in tests, RocksDB in the projection) and touches
O(log n) of them; verification needs nothing but the proof.

Computing a root from a proof is kept apart from comparing it: `root_from_inclusion_proof` and
`roots_from_consistency_proof` compute, `verify_inclusion` and `verify_consistency` compare and
raise `RootMismatch` carrying the expected and the calculated hash. All four refuse a hash that
is not `HASH_SIZE` bytes with `ProofError` rather than hashing or comparing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from locker.errors import IntegrityError, InvalidInput

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(value: bytes) -> bytes:
    """SHA-256(0x00 || value)."""
    return hashlib.sha256(b"\x00" + value).digest()


def leaf_hashes(values: Iterable[bytes]) -> list[bytes]:
    """`leaf_hash` of each value (one loop, no call per value)."""
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + value).digest() for value in values]


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes, level by level.

    Pairing neighbours and carrying an odd last node up unchanged gives RFC 6962's tree: the
    carried node is the right edge that MTH's split at the largest power of two leaves alone.
    """
    if not leaves:
        return EMPTY_ROOT
    sha256, level = hashlib.sha256, list(leaves)
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class NodeReader(Protocol):
    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree (level, index); raises KeyError if unknown."""
        ...


class RootMismatch(IntegrityError):
    """A proof does not lead to the root it should."""

    def __init__(self, what: str, expected: bytes, calculated: bytes) -> None:
        super().__init__(what, expected.hex(), calculated.hex())
        self.expected_root = expected
        self.calculated_root = calculated


class ProofError(InvalidInput):
    """A proof that is malformed for the sizes it claims (wrong length, bad indices), or a hash
    given to a verifier that is not `HASH_SIZE` bytes."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid-proof", detail)


def require_hash(value: bytes, what: str) -> None:
    """Raise `ProofError` unless `value` is a SHA-256 hash (`HASH_SIZE` bytes); `what` names it."""
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, a SHA-256 hash is {HASH_SIZE}")


def _require_hashes(proof: Sequence[bytes], what: str) -> None:
    for position, value in enumerate(proof):
        require_hash(value, f"{what} element {position}")


def split_point(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2): RFC 6962's k."""
    return 1 << ((size - 1).bit_length() - 1)


def _is_perfect(begin: int, end: int) -> bool:
    size = end - begin
    return size & (size - 1) == 0 and begin % size == 0


def subtree_root(nodes: NodeReader, begin: int, end: int) -> bytes:
    """MTH(D[begin:end]) for a range of RFC 6962's decomposition (begin aligned to its split).

    Reads one node per set bit of the range size: O(log n).
    """
    if end <= begin:
        raise ValueError(f"empty range [{begin}, {end})")
    if _is_perfect(begin, end):
        level = (end - begin).bit_length() - 1
        return nodes.node(level, begin >> level)
    k = split_point(end - begin)
    return node_hash(subtree_root(nodes, begin, begin + k), subtree_root(nodes, begin + k, end))


def tree_root(nodes: NodeReader, size: int) -> bytes:
    """MTH(D[0:size])."""
    return EMPTY_ROOT if size == 0 else subtree_root(nodes, 0, size)


def inclusion_proof(nodes: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf side first.

    Precondition: 0 <= index < size. O(log size) node reads.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    siblings: list[bytes] = []  # collected root side first
    begin, end = 0, size
    while end - begin > 1:
        k = split_point(end - begin)
        if index < begin + k:
            siblings.append(subtree_root(nodes, begin + k, end))
            end = begin + k
        else:
            siblings.append(subtree_root(nodes, begin, begin + k))
            begin = begin + k
    return siblings[::-1]


def consistency_proof(nodes: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 6962 §2.1.2.

    Precondition: 0 < old_size <= new_size. O(log new_size) node reads.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    hashes: list[bytes] = []  # collected root side first
    begin, end, m, complete = 0, new_size, old_size, True
    while m != end:
        k = split_point(end - begin)
        if m - begin <= k:
            hashes.append(subtree_root(nodes, begin + k, end))
            end = begin + k
        else:
            hashes.append(subtree_root(nodes, begin, begin + k))
            begin, complete = begin + k, False
    if not complete:
        hashes.append(subtree_root(nodes, begin, end))
    return hashes[::-1]


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for leaf hash `leaf` at `index` in a tree of `size`.

    RFC 9162 §2.1.3.2. Preconditions: 0 <= index < size, `leaf` and every proof element are
    `HASH_SIZE` bytes. Raises `ProofError` if they do not hold or the proof has the wrong shape.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    require_hash(leaf, "leaf hash")
    _require_hashes(proof, "inclusion proof")
    fn, sn, root = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            root = node_hash(sibling, root)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            root = node_hash(root, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return root


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise `RootMismatch` (or `ProofError`) unless `proof` proves `leaf` in `root`.

    Preconditions as `root_from_inclusion_proof`, and `root` is `HASH_SIZE` bytes.
    """
    require_hash(root, "root")
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    if calculated != root:
        raise RootMismatch(f"inclusion of leaf {index} in tree of size {size}", root, calculated)


def roots_from_consistency_proof(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """(old root, new root) as implied by `proof` (RFC 9162 §2.1.4.2).

    Preconditions: 0 < old_size <= new_size, `old_root` and every proof element are `HASH_SIZE`
    bytes. Raises `ProofError` if they do not hold or the proof has the wrong shape.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    require_hash(old_root, "old root")
    _require_hashes(proof, "consistency proof")
    if old_size == new_size:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        return old_root, old_root
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    return fr, sr


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise `RootMismatch` (or `ProofError`) unless the tree of `new_size` extends the old one.

    Preconditions as `roots_from_consistency_proof`, and `new_root` is `HASH_SIZE` bytes.
    """
    require_hash(new_root, "new root")
    calc_old, calc_new = roots_from_consistency_proof(old_size, new_size, old_root, proof)
    if calc_old != old_root:
        raise RootMismatch(f"old root of size {old_size}", old_root, calc_old)
    if calc_new != new_root:
        raise RootMismatch(f"new root of size {new_size}", new_root, calc_new)


# Node ids: where a projection stores the nodes that `Frontier.append` completes.
Node = tuple[int, int, bytes]  # (level, index, hash)


@dataclass(frozen=True)
class Frontier:
    """The right edge of a tree: one perfect-subtree hash per set bit of `size`, largest first.

    Appending a leaf is O(1) amortised and yields the perfect-subtree nodes it completes; the
    root is a fold of at most log2(size) hashes. Enough to extend a tree forever without
    reading any of it back.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def append(self, leaf: bytes) -> tuple[Frontier, list[Node]]:
        """The frontier after adding leaf hash `leaf`, and the nodes completed by it."""
        completed: list[Node] = [(0, self.size, leaf)]
        hashes = list(self.hashes)
        current, level = leaf, 0
        while (self.size >> level) & 1:
            current = node_hash(hashes.pop(), current)
            level += 1
            completed.append((level, self.size >> level, current))
        hashes.append(current)
        return Frontier(self.size + 1, tuple(hashes)), completed

    def extend(self, leaves: Iterable[bytes]) -> tuple[Frontier, list[Node]]:
        """`append` for many leaves at once (same result, one list instead of a frontier each)."""
        size, hashes, nodes = self.size, list(self.hashes), list[Node]()
        sha256, pop, push, emit = hashlib.sha256, hashes.pop, hashes.append, nodes.append
        for leaf in leaves:
            emit((0, size, leaf))
            current, rest, level = leaf, size, 0
            while rest & 1:  # each set low bit is a full left sibling to merge with
                current = sha256(b"\x01" + pop() + current).digest()
                rest >>= 1
                level += 1
                emit((level, rest, current))  # index at `level` is size >> level == rest
            push(current)
            size += 1
        return Frontier(size, tuple(hashes)), nodes

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            root = node_hash(left, root)
        return root
