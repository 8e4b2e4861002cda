"""Proofs from the Merkle projection, in the fixed shape auditors' tools read.

Hashes and bytes are standard base64, as in C2SP notes and Sigstore bundles. Shared by the API
(in the worker) and the CLI (reading the store read-only).
"""

from __future__ import annotations

import base64
from typing import Any

from locker import merkle
from locker.anchors import AnchorCreated, StoredAnchor
from locker.errors import NotFound, UsageError
from projections.merkle_store import MerkleStore


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def inclusion(
    trees: MerkleStore, item: StoredAnchor, anchor: AnchorCreated, partition: int, offset: int, value: bytes
) -> dict[str, Any]:
    """The inclusion proof of the record at (partition, offset), whose value is `value`, in `anchor`.

    The proof is checked against the anchor's root before it is returned.
    """
    heads = {h.partition: (i, h) for i, h in enumerate(anchor.body.partitions)}
    index = trees.leaf_index(partition, offset)
    if index is None:
        raise NotFound(f"record {partition}/{offset} is not in the Merkle store yet")
    if partition not in heads or index >= heads[partition][1].tree_size:
        raise NotFound(f"anchor {item.id} does not cover record {partition}/{offset}; create a newer anchor")
    position, head = heads[partition]
    path = trees.inclusion_proof(partition, index, head.tree_size)
    leaf = merkle.leaf_hash(value)
    merkle.verify_inclusion(index, head.tree_size, leaf, path, head.root)
    return {
        "anchor_id": item.id,
        "partition": partition,
        "offset": offset,
        "leaf_index": index,
        "tree_size": head.tree_size,
        "leaf_value": b64(value),
        "leaf_hash": b64(leaf),
        "proof": [b64(p) for p in path],
        "root": b64(head.root),
        "checkpoint": anchor.checkpoints[position],
    }


def consistency(
    trees: MerkleStore, old: tuple[StoredAnchor, AnchorCreated], new: tuple[StoredAnchor, AnchorCreated]
) -> dict[str, Any]:
    """Per-partition consistency proofs from anchor `old` to anchor `new`, each checked."""
    (old_item, old_anchor), (new_item, new_anchor) = old, new
    if old_item.offset > new_item.offset:
        raise UsageError("the first anchor must be the older one")
    before = {h.partition: h for h in old_anchor.body.partitions}
    partitions: list[dict[str, Any]] = []
    ok = True
    for head in new_anchor.body.partitions:
        was = before.get(head.partition)
        if was is None or was.tree_size == 0:
            continue
        verdict = "consistent"
        try:
            proof = trees.consistency_proof(head.partition, was.tree_size, head.tree_size)
            merkle.verify_consistency(was.tree_size, head.tree_size, was.root, head.root, proof)
        except (merkle.RootMismatch, merkle.ProofError) as exc:
            ok, verdict, proof = False, str(exc), []
        partitions.append(
            {
                "partition": head.partition,
                "old_size": was.tree_size,
                "new_size": head.tree_size,
                "old_root": b64(was.root),
                "new_root": b64(head.root),
                "proof": [b64(p) for p in proof],
                "verdict": verdict,
            }
        )
    return {"old_anchor": old_item.id, "new_anchor": new_item.id, "consistent": ok, "partitions": partitions}
