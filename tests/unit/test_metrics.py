from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from locker.dlq import DeadLetter
from projections.verification import RunState
from streams.kafka import Record
from streams.metrics import Metrics, Snapshot
from streams.runtime import Outbox


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by the Prometheus client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_the_runbooks_gauges_and_an_unknown_anchor_age() -> None:
    got = samples(
        Metrics().render(Snapshot(artifacts=3, stored_bytes=120, tree_sizes={1: 4, 0: 2}, anchor_age=None))
    )
    assert got["stella_evidence_artifacts_total", ()] == 3
    assert got["stella_evidence_storage_bytes", ()] == 120
    assert got["stella_merkle_tree_size", (("partition", "1"),)] == 4
    assert not any(name == "stella_merkle_anchor_age_seconds" for name, _ in got)
    aged = samples(Metrics().render(Snapshot(artifacts=0, stored_bytes=0, tree_sizes={}, anchor_age=12.5)))
    assert aged["stella_merkle_anchor_age_seconds", ()] == 12.5


def test_integrity_metrics_count_failures_and_show_the_last_run() -> None:
    none = samples(Metrics().render(Snapshot(artifacts=0, stored_bytes=0, tree_sizes={}, anchor_age=None)))
    assert none["stella_evidence_integrity_failures_total", ()] == 0
    assert not any(name.startswith("stella_evidence_verification_last_run") for name, _ in none)
    run = RunState(
        run_id="r", mode="full", planned=5, started_at=datetime(2026, 1, 1, tzinfo=UTC), ok=3, missing=2,
        completed_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
    )  # fmt: skip
    got = samples(
        Metrics().render(
            Snapshot(
                artifacts=5,
                stored_bytes=9,
                tree_sizes={},
                anchor_age=None,
                integrity_failures=7,
                last_run=run,
            )
        )
    )
    assert got["stella_evidence_integrity_failures_total", ()] == 7
    assert got["stella_evidence_verification_last_run_timestamp_seconds", (("mode", "full"),)] == 1767225660
    assert (
        got["stella_evidence_verification_last_run_artifacts", (("mode", "full"), ("outcome", "missing"))]
        == 2
    )


def test_loops_count_what_they_carried_out_and_the_lag_is_per_loop_and_partition() -> None:
    metrics = Metrics()
    out = Outbox()
    out.counts["ingested", "sbom"] += 2
    out.counts["verifications", "mismatch"] += 1
    letter = DeadLetter(
        reason="bad-digest",
        detail="",
        source_topic="t",
        source_partition=0,
        source_offset=1,
        rejected_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    out.dead.append((Record("t", 0, 1, None, b""), letter))
    metrics.carried_out("ingest", out)
    metrics.carried_out("ingest", out)
    metrics.retrievals.labels("ok").inc()
    metrics.retrieval_latency.observe(0.003)
    snapshot = Snapshot(
        artifacts=0,
        stored_bytes=0,
        tree_sizes={},
        anchor_age=None,
        broken_links=1,
        free_bytes=10,
        capacity_bytes=100,
        lag={"projections": {0: 5, 1: 0}},
        loop_seconds={"ingest": {"decide": 1.5}},
    )
    got = samples(metrics.render(snapshot))
    assert got["stella_evidence_ingested_total", (("kind", "sbom"),)] == 4
    assert got["stella_evidence_verifications_total", (("outcome", "mismatch"),)] == 2
    assert got["stella_evidence_rejected_total", (("loop", "ingest"), ("reason", "bad-digest"))] == 2
    assert got["stella_evidence_retrievals_total", (("outcome", "ok"),)] == 1
    assert (
        got["stella_evidence_retrievals_total", (("outcome", "blob-missing"),)] == 0
    )  # there from the start
    assert got["stella_evidence_retrieval_latency_seconds_bucket", (("le", "0.005"),)] == 1
    assert got["stella_evidence_retrieval_latency_seconds_bucket", (("le", "0.0025"),)] == 0
    assert got["stella_evidence_retrieval_latency_seconds_count", ()] == 1
    assert got["stella_projection_lag_records", (("loop", "projections"), ("partition", "0"))] == 5
    assert got["stella_merkle_anchor_chain_broken_links", ()] == 1
    assert got["stella_evidence_storage_capacity_bytes", ()] == 100
    assert got["stella_loop_stage_seconds_total", (("loop", "ingest"), ("stage", "decide"))] == 1.5
