"""Merkle costs at scale, against bare SHA-256 measured in the same run.

    python bench/anchor.py [--leaves 1000000]

(1) the root over N leaves (leaf hashes + the frontier's node hashes, nodes collected as the
    projection stores them) vs the bare cost of the same number of SHA-256 calls on inputs of
    the same sizes (target <= 2x);
(2) inclusion and consistency proof generation at N leaves from an in-memory node map
    (median and p99 latency; target < 1 ms median).

Anchor creation time (issue #3) is not measured yet: anchors do not exist yet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locker import merkle
from locker.merkle import Frontier


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
    frontier, nodes = Frontier().extend(merkle.leaf_hashes(values))
    root = frontier.root()
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

    def ms(samples: list[float], q: float) -> float:
        return 1000 * statistics.quantiles(samples, n=100)[int(q) - 1] if q < 100 else 1000 * max(samples)

    result = {
        "when": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "leaves": n,
        "root_s": tree_s,
        "bare_sha256_s": bare_s,
        "root_vs_bare_sha256": tree_s / bare_s,
        "inclusion_proof_ms_median": 1000 * statistics.median(inclusion),
        "inclusion_proof_ms_p99": ms(inclusion, 99),
        "consistency_proof_ms_median": 1000 * statistics.median(consistency),
        "consistency_proof_ms_p99": ms(consistency, 99),
    }
    out = Path(__file__).parent / "results" / f"anchor-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cores: {os.cpu_count()}   leaves: {n}")
    print(
        f"root: {tree_s:.2f}s   bare SHA-256 of the same hashes: {bare_s:.2f}s   ratio {tree_s / bare_s:.2f}"
    )
    print(
        f"inclusion proof: median {result['inclusion_proof_ms_median']:.3f} ms, "
        f"p99 {result['inclusion_proof_ms_p99']:.3f} ms; consistency proof: median "
        f"{result['consistency_proof_ms_median']:.3f} ms, p99 {result['consistency_proof_ms_p99']:.3f} ms"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
