from streams.metrics import exposition


def test_exposition_lists_every_gauge_and_omits_an_unknown_anchor_age() -> None:
    text = exposition(artifacts=3, stored_bytes=120, tree_sizes={1: 4, 0: 2}, anchor_age=None)
    assert "stella_evidence_artifacts_total 3\n" in text
    assert "stella_evidence_storage_bytes 120\n" in text
    assert text.index('partition="0"} 2') < text.index('partition="1"} 4')
    assert "\nstella_merkle_anchor_age_seconds " not in text
    assert "stella_merkle_anchor_age_seconds 12.500" in exposition(
        artifacts=0, stored_bytes=0, tree_sizes={}, anchor_age=12.5
    )


def test_integrity_metrics_count_failures_and_show_the_last_run() -> None:
    from datetime import UTC, datetime

    from projections.verification import RunState

    none = exposition(artifacts=0, stored_bytes=0, tree_sizes={}, anchor_age=None)
    assert "stella_evidence_integrity_failures_total 0\n" in none
    assert "last_run_timestamp_seconds{" not in none
    run = RunState(
        run_id="r", mode="full", planned=5, started_at=datetime(2026, 1, 1, tzinfo=UTC), ok=3, missing=2,
        completed_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
    )  # fmt: skip
    text = exposition(
        artifacts=5, stored_bytes=9, tree_sizes={}, anchor_age=None, integrity_failures=7, last_run=run
    )
    assert "stella_evidence_integrity_failures_total 7\n" in text
    assert 'stella_evidence_verification_last_run_timestamp_seconds{mode="full"} 1767225660.000\n' in text
    assert 'stella_evidence_verification_last_run_artifacts{mode="full",outcome="missing"} 2\n' in text
