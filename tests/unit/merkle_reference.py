"""A naive Merkle reference written straight from RFC 6962 §2.1, for cross-checking only; and
`MemoryNodes`, the tree of a few leaves kept in memory, for tests that need proofs."""

from __future__ import annotations

import hashlib

from locker import merkle


class MemoryNodes:
    """A `merkle.NodeReader` over the tree of `leaves` (record values), held in a dict."""

    def __init__(self, leaves: list[bytes]) -> None:
        _, nodes = merkle.Frontier().extend(merkle.leaf_hashes(leaves))
        self.nodes = {(level, index): digest for level, index, digest in nodes}

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]


def mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def proof(m: int, leaves: list[bytes]) -> list[bytes]:
    return _subproof(m, leaves, True)


def _subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), mth(leaves[:k])]
