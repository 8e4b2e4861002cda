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
