"""The schema of `evidence.verifications` is a contract with streaming consumers: a record's
bytes (README, "Verification outcomes") must not change without a schema version bump."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from locker.verification import Outcome, encode, outcome_decoder
from tests.contract.goldens import golden, golden_bytes

OUTCOME = Outcome(
    run_id="6a1f3c9e-2b7d-4e58-9f01-c3d4e5f6a7b8",
    mode="full",
    artifact_id="sha256:4a5d0c8e2b6f9d1370e1c5a9b2f4d6e8a0c2e4f6081a3b5c7d9e1f20436587a9",
    outcome="mismatch",
    expected_digest="sha256:4a5d0c8e2b6f9d1370e1c5a9b2f4d6e8a0c2e4f6081a3b5c7d9e1f20436587a9",
    actual_digest="sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    expected_size=1843,
    actual_size=1843,
    detail="the blob hashes to sha256:ffff…",
    verified_at=datetime(2026, 11, 29, 4, 0, 41, 999999, tzinfo=UTC),
)


def test_the_golden_outcome_is_self_consistent() -> None:
    assert (
        hashlib.sha256(golden_bytes("verification.outcome")).hexdigest()
        == golden("verification.outcome")["sha256"]
    )


def test_encode_produces_the_golden_bytes() -> None:
    assert encode(OUTCOME) == golden_bytes("verification.outcome")


def test_decode_reads_the_golden_bytes() -> None:
    assert outcome_decoder.decode(golden_bytes("verification.outcome")) == OUTCOME


def test_a_consumer_without_this_code_reads_plain_json() -> None:
    fields = json.loads(golden_bytes("verification.outcome"))
    assert fields["type"] == "verification.outcome" and fields["schema_version"] == 1
    assert set(fields) == {
        "type", "schema_version", "run_id", "mode", "artifact_id", "outcome", "expected_digest",
        "actual_digest", "expected_size", "actual_size", "detail", "verified_at",
    }  # fmt: skip
