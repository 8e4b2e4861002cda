"""Merkle costs at scale, against bare SHA-256 measured in the same run.

    python bench/anchor.py [--leaves 1000000]

(1) the root over N leaves vs the bare cost of the same number of SHA-256 calls on inputs of the
    same sizes (target <= 2x): by `merkle.root_of` (leaf hashes, then level by level), and by the
    frontier the projection uses (which also collects every node it stores);
(2) inclusion and consistency proof generation at N leaves from an in-memory node map
    (median and p99 latency; target < 1 ms median).

(3) the production path: `MerkleStore.apply` of the same N leaves in the projection loop's
    batches (leaf hashes, `Frontier.extend`, every node, leaf index and the frontier written to
    RocksDB with the applied positions), against the same bare SHA-256;
    anchor creation after 10k, 100k and 1M events: the writer's own work (partition heads from
    the RocksDB Merkle store, Ed25519 signatures of the body and of one checkpoint per
    partition), which must stay flat as history grows; the Kafka round trip is left out;
(4) inclusion proof latency at 1M leaves read from the RocksDB Merkle store.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from locker import anchors, merkle, signing
from locker.anchors import AnchorBody
from locker.merkle import Frontier
from projections.merkle_store import MerkleStore
from streams.anchoring import partition_heads


class DictNodes:
    def __init__(self, nodes: list[merkle.Node]) -> None:
        self.map = {(level, index): h for level, index, h in nodes}

    def node(self, level: int, index: int) -> bytes:
        return self.map[(level, index)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=300, help="size of an event record value")
    args = parser.parse_args()
    n = args.leaves
    values = [os.urandom(args.value_bytes) for _ in range(n)]

    t0 = time.perf_counter()
    root = merkle.root_of(merkle.leaf_hashes(values))
    root_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    frontier, nodes = Frontier().extend(merkle.leaf_hashes(values))
    assert frontier.root() == root
    tree_s = time.perf_counter() - t0

    sha256, inner = hashlib.sha256, bytes(64)
    t0 = time.perf_counter()
    for v in values:
        sha256(b"\x00" + v).digest()
    for _ in range(n - 1):
        sha256(b"\x01" + inner).digest()
    bare_s = time.perf_counter() - t0

    tree = DictNodes(nodes)
    rng = random.Random(7)
    inclusion, consistency = [], []
    for _ in range(2000):
        index = rng.randrange(n)
        t0 = time.perf_counter()
        proof = merkle.inclusion_proof(tree, index, n)
        inclusion.append(time.perf_counter() - t0)
        merkle.verify_inclusion(index, n, merkle.leaf_hash(values[index]), proof, root)
        old = rng.randrange(1, n + 1)
        t0 = time.perf_counter()
        merkle.consistency_proof(tree, old, n)
        consistency.append(time.perf_counter() - t0)

    # (3) and (4): the real stores on disk.
    with tempfile.TemporaryDirectory(prefix="stella-anchor-bench-") as tmp:
        trees = MerkleStore(Path(tmp) / "merkle")
        signer = signing.Signer("bench.local/anchors", Ed25519PrivateKey.generate())
        partitions = list(range(4))
        creation_ms: dict[str, float] = {}
        done, store_s = 0, 0.0
        for target in (10_000, 100_000, n):
            while done < target:
                step = min(5_000, target - done)  # the projection loop's batch size
                batch = [((done + i) % 4, (done + i) // 4, values[(done + i) % n]) for i in range(step)]
                t0 = time.perf_counter()
                trees.apply(batch)
                store_s += time.perf_counter() - t0
                done += step
            samples = []
            for _ in range(50):
                t0 = time.perf_counter()
                heads = partition_heads(trees, partitions)
                body = AnchorBody(
                    chain_id="bench",
                    sequence=0,
                    created_at=datetime.now(UTC),
                    origin="bench.local/events",
                    partitions=heads,
                )
                anchors.encode(anchors.sign(body, signer))
                samples.append(time.perf_counter() - t0)
            creation_ms[str(target)] = 1000 * statistics.median(samples)
        size = trees.tree_size(0)
        stored_inclusion = []
        for _ in range(2000):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            trees.inclusion_proof(0, index, size)
            stored_inclusion.append(time.perf_counter() - t0)
        trees.close()

    def ms(samples: list[float], q: float) -> float:
        return 1000 * statistics.quantiles(samples, n=100)[int(q) - 1] if q < 100 else 1000 * max(samples)

    result = {
        "when": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "leaves": n,
        "root_s": root_s,
        "bare_sha256_s": bare_s,
        "root_vs_bare_sha256": root_s / bare_s,
        "frontier_with_nodes_s": tree_s,
        "frontier_with_nodes_vs_bare_sha256": tree_s / bare_s,
        "merkle_store_apply_s": store_s,
        "merkle_store_apply_vs_bare_sha256": store_s / bare_s,
        "inclusion_proof_ms_median": 1000 * statistics.median(inclusion),
        "inclusion_proof_ms_p99": ms(inclusion, 99),
        "consistency_proof_ms_median": 1000 * statistics.median(consistency),
        "consistency_proof_ms_p99": ms(consistency, 99),
        "anchor_creation_ms_median_by_events": creation_ms,
        "stored_inclusion_proof_ms_median": 1000 * statistics.median(stored_inclusion),
        "stored_inclusion_proof_ms_p99": ms(stored_inclusion, 99),
        "stored_tree_size_per_partition": size,
    }
    out = Path(__file__).parent / "results" / f"anchor-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cores: {os.cpu_count()}   leaves: {n}")
    print(
        f"root: {root_s:.2f}s   bare SHA-256 of the same hashes: {bare_s:.2f}s   ratio {root_s / bare_s:.2f}"
        f"   (frontier collecting nodes: {tree_s:.2f}s, ratio {tree_s / bare_s:.2f})"
    )
    print(
        f"the production path, MerkleStore.apply in batches of 5,000 (RocksDB writes included): "
        f"{store_s:.2f}s, ratio {store_s / bare_s:.2f}"
    )
    print(
        f"inclusion proof: median {result['inclusion_proof_ms_median']:.3f} ms, "
        f"p99 {result['inclusion_proof_ms_p99']:.3f} ms; consistency proof: median "
        f"{result['consistency_proof_ms_median']:.3f} ms, p99 {result['consistency_proof_ms_p99']:.3f} ms"
    )
    print(
        "anchor creation (heads + signatures), median ms by events: "
        + ", ".join(f"{k}: {v:.2f}" for k, v in creation_ms.items())
    )
    median, p99 = result["stored_inclusion_proof_ms_median"], result["stored_inclusion_proof_ms_p99"]
    print(
        f"inclusion proof from RocksDB ({size} leaves per partition): "
        f"median {median:.3f} ms, p99 {p99:.3f} ms"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
