"""Verification runs as pure folds: a run's tally, and which artifacts a quick run samples. No I/O.

A run is planned once (`plan_sample` for a quick run, every indexed artifact for a full one) and
cut into `Task`s; each outcome is counted exactly once into the run's `RunState`
(`projections.verify_store` skips an artifact the run has already counted).
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from locker.errors import UsageError
from locker.events.integrity import Mode
from locker.times import iso_utc
from locker.verification import Outcome


class RunState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run as the verification store keeps it."""

    run_id: str
    mode: Mode
    planned: int
    started_at: datetime
    sample: str = ""  # quick runs
    seed: int = 0  # quick runs: `verify --mode quick --seed` with it picks the same sample again
    outcomes_from: tuple[int, ...] = ()  # evidence.verifications' offsets (by partition) before the run
    to_anchor: str = ""  # a full run of the artifacts this anchor covers
    ok: int = 0
    mismatch: int = 0
    missing: int = 0
    unreadable: int = 0
    bytes_read: int = 0
    completed_at: datetime | None = None
    outcomes_digest: str = ""

    @property
    def done(self) -> int:
        return self.ok + self.mismatch + self.missing + self.unreadable

    @property
    def failed(self) -> int:
        return self.mismatch + self.missing + self.unreadable

    @property
    def finished(self) -> bool:
        """Every planned artifact has its outcome (the completion event may still be on its way)."""
        return self.done >= self.planned

    def public(self) -> RunSummary:
        """The run as `verify`, `verify-report` and the API show it."""
        quick = self.mode == "quick"
        return RunSummary(
            run_id=self.run_id,
            mode=self.mode,
            sample=self.sample if quick else None,
            seed=self.seed if quick else None,
            to_anchor=self.to_anchor or None,
            planned=self.planned,
            done=self.done,
            ok=self.ok,
            mismatch=self.mismatch,
            missing=self.missing,
            unreadable=self.unreadable,
            failed=self.failed,
            bytes_read=self.bytes_read,
            started_at=iso_utc(self.started_at),
            completed_at=None if self.completed_at is None else iso_utc(self.completed_at),
            outcomes_digest=self.outcomes_digest,
        )


class RunSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run's counts as shown (`RunState.public`); `completed_at` is null while it runs."""

    run_id: str
    mode: Mode
    sample: str | None = None  # quick runs only
    seed: int | None = None  # quick runs only
    to_anchor: str | None = None  # a full run as of an anchor only
    planned: int
    done: int
    ok: int
    mismatch: int
    missing: int
    unreadable: int
    failed: int
    bytes_read: int
    started_at: str
    completed_at: str | None
    outcomes_digest: str


def tally(state: RunState, outcomes: Iterable[Outcome]) -> RunState:
    """`state` with `outcomes` counted (each must be new to the run)."""
    counts = {
        "ok": state.ok,
        "mismatch": state.mismatch,
        "missing": state.missing,
        "unreadable": state.unreadable,
    }
    read = state.bytes_read
    for outcome in outcomes:
        counts[outcome.outcome] += 1
        read += max(outcome.actual_size, 0)
    return msgspec.structs.replace(state, bytes_read=read, **counts)


# Quick runs.
_SAMPLE = re.compile(r"^(\d+)(%?)$")


def sample_size(spec: str, total: int) -> int:
    """How many of `total` artifacts a quick run checks: "500" (a count) or "2%" (at least one
    when there is any artifact at all); raises `UsageError` for anything else."""
    match = _SAMPLE.match(spec.strip())
    if match is None:
        raise UsageError(f"--sample {spec!r}: give a count (500) or a percentage (2%)")
    number, percent = int(match.group(1)), bool(match.group(2))
    if percent:
        if not 0 < number <= 100:
            raise UsageError(f"--sample {spec!r}: a percentage is 1% to 100%")
        return min(total, max(1, -(-total * number // 100))) if total else 0
    if number <= 0:
        raise UsageError(f"--sample {spec!r}: the count must be positive")
    return min(total, number)


def plan_sample(
    candidates: Iterable[tuple[str, int, int | None]], size: int, seed: int
) -> list[tuple[str, int]]:
    """The `size` artifacts a quick run checks, from (artifact id, size, last verified as epoch
    milliseconds or None): never-verified ones first, then the longest unverified; ties in a
    random order that `seed` fixes. The result is in artifact-id order."""
    salt = seed.to_bytes(8, "big", signed=True)

    def priority(candidate: tuple[str, int, int | None]) -> tuple[int, bytes]:
        artifact_id, _, last = candidate
        return (-1 if last is None else last, hashlib.sha256(salt + artifact_id.encode()).digest())

    chosen = heapq.nsmallest(size, candidates, key=priority)
    return sorted((artifact_id, blob_size) for artifact_id, blob_size, _ in chosen)


def chunks(artifacts: Sequence[tuple[str, int]], size: int) -> list[tuple[tuple[str, int], ...]]:
    """`artifacts` cut into tasks of at most `size`; one empty task for an empty plan (so that
    the run still reaches the loop that completes it)."""
    return [tuple(artifacts[i : i + size]) for i in range(0, len(artifacts), size)] or [()]
