"""A verification run's report: its counts and its artifacts (the failed ones, or those with one
outcome). One function for `stella evidence verify-report` and `GET /verifications/...`.

The run and its failures come from the verification store; `only="ok"` reads the run's outcomes
on `evidence.verifications` (from where that topic stood when the run began, so O(outcomes since)).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from locker.config import Settings
from locker.errors import InvalidInput, NotFound, UsageError
from locker.times import iso_utc
from locker.verification import Outcome, OutcomeName, outcome_decoder
from projections.store import IndexStore
from projections.verification import RunState, RunSummary
from projections.verify_store import VerifyStore
from streams.reader import read_batches
from streams.topics import Topics

Filter = Literal["failed", "ok", "mismatch", "missing", "unreadable"]
FILTERS: tuple[Filter, ...] = ("failed", "ok", "mismatch", "missing", "unreadable")


class ArtifactOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the run found for one artifact; `actual_size` is -1 when there was no blob to measure."""

    artifact_id: str
    outcome: OutcomeName
    expected_digest: str
    actual_digest: str
    expected_size: int
    actual_size: int
    detail: str
    verified_at: str


class AnchorRoot(msgspec.Struct, frozen=True, kw_only=True):
    partition: int
    tree_size: int


class CheckedAnchor(msgspec.Struct, frozen=True, kw_only=True):
    """An anchor checked before a run as of it (`verify --to-anchor`): its id and tree sizes."""

    id: str
    verified: bool
    roots: list[AnchorRoot]


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run and its artifacts with outcome `filter` ("failed": every outcome but ok).
    `outcomes_expired`: some of the run's outcomes are past `evidence.verifications`' retention
    (`filter` "ok" only). `voided_by_restore_to`: the anchor of a point-in-time restore that
    voided the run's events. `anchor`: only from `verify --to-anchor`."""

    run: RunSummary
    filter: Filter
    artifacts: list[ArtifactOutcome]
    outcomes_expired: bool
    voided_by_restore_to: str | None
    anchor: CheckedAnchor | None = None


def report(
    settings: Settings,
    store: VerifyStore,
    index: IndexStore,
    *,
    run_id: str | None = None,
    only: str | None = None,
) -> VerifyReport:
    """Run `run_id` (completed or running), or the latest completed one, and its artifacts: the
    failed ones, or those with outcome `only` (`FILTERS`). Raises `NotFound` without a run."""
    chosen = only or "failed"
    if chosen not in FILTERS:
        raise UsageError(f"--filter {only!r}: one of {', '.join(FILTERS)}")
    run = store.run(run_id) if run_id else store.latest()
    if run is None:
        raise NotFound(f"no verification run {run_id}" if run_id else "no verification run has completed")
    expired = False
    if only == "ok":
        listed, expired = _outcomes(settings, run, "ok")
    else:
        listed = [f for f in store.failures(run.run_id) if only in (None, "failed", f.outcome)]
    return VerifyReport(
        run=run.public(),
        filter=chosen,
        artifacts=[_public(o) for o in sorted(listed, key=lambda o: o.artifact_id)],
        outcomes_expired=expired,
        voided_by_restore_to=_voided_by(index, run.run_id),
    )


def _voided_by(index: IndexStore, run_id: str) -> str | None:
    """The anchor a point-in-time restore went back to, if it voided this run's events (the run's
    failures then no longer count in the index; the report stays what the run found)."""
    for row in index.voided():
        if row.run_id == run_id and row.type.startswith("verification."):
            return row.anchor_id
    return None


def _outcomes(settings: Settings, run: RunState, wanted: str) -> tuple[list[Outcome], bool]:
    """The run's outcomes `wanted` from `evidence.verifications`, and whether some of the run's
    records are past the topic's retention."""
    found: dict[str, Outcome] = {}
    topic = Topics(settings.topic_prefix).verifications
    first: dict[int, int] = {}
    starts = dict(enumerate(run.outcomes_from))
    for batch in read_batches(settings, topic, starts=starts):
        for partition, offset, value in batch:
            first.setdefault(partition, offset)
            try:
                outcome = outcome_decoder.decode(value)
            except InvalidInput:
                continue
            if outcome.run_id == run.run_id and outcome.outcome == wanted:
                found.setdefault(outcome.artifact_id, outcome)  # the first, if a crash repeated one
    expired = any(first.get(p, start) > start for p, start in starts.items())
    return list(found.values()), expired


def _public(outcome: Outcome) -> ArtifactOutcome:
    return ArtifactOutcome(
        artifact_id=outcome.artifact_id,
        outcome=outcome.outcome,
        expected_digest=outcome.expected_digest,
        actual_digest=outcome.actual_digest,
        expected_size=outcome.expected_size,
        actual_size=outcome.actual_size,
        detail=outcome.detail,
        verified_at=iso_utc(outcome.verified_at),
    )
