"""Prometheus text exposition (format 0.0.4) of the locker's gauges. Pure."""

from __future__ import annotations

from collections.abc import Mapping


def exposition(
    *,
    artifacts: int,
    stored_bytes: int,
    tree_sizes: Mapping[int, int],
    anchor_age: float | None,
    loops: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    lines = [
        "# HELP stella_evidence_artifacts_total Artifacts in the index.",
        "# TYPE stella_evidence_artifacts_total gauge",
        f"stella_evidence_artifacts_total {artifacts}",
        "# HELP stella_evidence_storage_bytes Bytes of the indexed artifacts.",
        "# TYPE stella_evidence_storage_bytes gauge",
        f"stella_evidence_storage_bytes {stored_bytes}",
        "# HELP stella_merkle_tree_size Leaves in each events partition's Merkle tree.",
        "# TYPE stella_merkle_tree_size gauge",
        *(f'stella_merkle_tree_size{{partition="{p}"}} {size}' for p, size in sorted(tree_sizes.items())),
        "# HELP stella_merkle_anchor_age_seconds Seconds since the latest anchor was created.",
        "# TYPE stella_merkle_anchor_age_seconds gauge",
    ]
    if anchor_age is not None:
        lines.append(f"stella_merkle_anchor_age_seconds {anchor_age:.3f}")
    lines += [
        "# HELP stella_loop_stage_seconds_total Wall seconds each batch loop spent in each stage.",
        "# TYPE stella_loop_stage_seconds_total counter",
        *(
            f'stella_loop_stage_seconds_total{{loop="{loop}",stage="{stage}"}} {seconds:.3f}'
            for loop, stages in sorted((loops or {}).items())
            for stage, seconds in stages.items()
        ),
    ]
    return "\n".join(lines) + "\n"
