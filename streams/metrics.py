"""Prometheus text exposition (format 0.0.4) of the locker's gauges. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from projections.verification import RunState


def exposition(
    *,
    artifacts: int,
    stored_bytes: int,
    tree_sizes: Mapping[int, int],
    anchor_age: float | None,
    loops: Mapping[str, Mapping[str, float]] | None = None,
    integrity_failures: int = 0,
    last_run: RunState | None = None,
    free_bytes: int | None = None,
    reserve_bytes: int = 0,
) -> str:
    lines = [
        "# HELP stella_evidence_artifacts_total Artifacts in the index.",
        "# TYPE stella_evidence_artifacts_total gauge",
        f"stella_evidence_artifacts_total {artifacts}",
        "# HELP stella_evidence_storage_bytes Bytes of the indexed artifacts.",
        "# TYPE stella_evidence_storage_bytes gauge",
        f"stella_evidence_storage_bytes {stored_bytes}",
        "# HELP stella_evidence_storage_free_bytes Free bytes on the blob store's file system.",
        "# TYPE stella_evidence_storage_free_bytes gauge",
        *([] if free_bytes is None else [f"stella_evidence_storage_free_bytes {free_bytes}"]),
        "# HELP stella_evidence_storage_reserve_bytes Free bytes ingest keeps (storage-full below them).",
        "# TYPE stella_evidence_storage_reserve_bytes gauge",
        f"stella_evidence_storage_reserve_bytes {reserve_bytes}",
        "# HELP stella_merkle_tree_size Leaves in each events partition's Merkle tree.",
        "# TYPE stella_merkle_tree_size gauge",
        *(f'stella_merkle_tree_size{{partition="{p}"}} {size}' for p, size in sorted(tree_sizes.items())),
        "# HELP stella_merkle_anchor_age_seconds Seconds since the latest anchor was created.",
        "# TYPE stella_merkle_anchor_age_seconds gauge",
    ]
    if anchor_age is not None:
        lines.append(f"stella_merkle_anchor_age_seconds {anchor_age:.3f}")
    lines += [
        "# HELP stella_evidence_integrity_failures_total Failed artifact checks, all verification runs.",
        "# TYPE stella_evidence_integrity_failures_total counter",
        f"stella_evidence_integrity_failures_total {integrity_failures}",
        *_last_run(last_run),
    ]
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


def _last_run(run: RunState | None) -> list[str]:
    """When the last verification run completed, and its artifacts by outcome."""
    last = "stella_evidence_verification_last_run"
    lines = [
        f"# HELP {last}_timestamp_seconds When the last run completed.",
        f"# TYPE {last}_timestamp_seconds gauge",
    ]
    if run is None or run.completed_at is None:
        return lines
    mode = f'mode="{run.mode}"'
    counts = {"ok": run.ok, "mismatch": run.mismatch, "missing": run.missing, "unreadable": run.unreadable}
    return [
        *lines,
        f"{last}_timestamp_seconds{{{mode}}} {run.completed_at.timestamp():.3f}",
        f"# HELP {last}_artifacts Artifacts of the last completed run, by outcome.",
        f"# TYPE {last}_artifacts gauge",
        *(f'{last}_artifacts{{{mode},outcome="{k}"}} {n}' for k, n in counts.items()),
    ]
