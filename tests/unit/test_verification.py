"""Verification runs without a broker: judging a blob, sampling, tallying, and the store."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from locker.errors import UsageError
from locker.verification import Outcome, Task, check
from projections.verification import RunState, chunks, plan_sample, sample_size, tally
from projections.verify_store import Checked, VerifyStore

T0 = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Judging one blob.
def test_check_tells_every_outcome_apart(tmp_path: Path) -> None:
    good, other = b"good bytes", b"other bytes"
    (tmp_path / "good").write_bytes(good)
    (tmp_path / "flipped").write_bytes(b"gooe bytes")
    (tmp_path / "truncated").write_bytes(good[:4])
    (tmp_path / "swapped").write_bytes(other)
    (tmp_path / "a-folder").mkdir()
    assert check(tmp_path / "good", digest(good), len(good)).outcome == "ok"
    flipped = check(tmp_path / "flipped", digest(good), len(good))
    assert (flipped.outcome, flipped.actual_digest) == ("mismatch", digest(b"gooe bytes"))
    assert check(tmp_path / "truncated", digest(good), len(good)).actual_size == 4
    assert check(tmp_path / "swapped", digest(good), len(good)).actual_digest == digest(other)
    assert check(tmp_path / "gone", digest(good), len(good)).outcome == "missing"
    assert check(tmp_path / "a-folder", digest(good), len(good)).outcome == "unreadable"


def test_check_reads_a_large_blob_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "big").write_bytes(data)
    found = check(tmp_path / "big", digest(data), len(data))
    assert (found.outcome, found.actual_size) == ("ok", len(data))


def test_a_right_digest_with_a_wrong_recorded_size_is_a_mismatch(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"abc")
    found = check(tmp_path / "b", digest(b"abc"), 4)
    assert found.outcome == "mismatch" and "3 bytes, not 4" in found.detail


# Quick runs' samples.
@pytest.mark.parametrize(
    ("spec", "total", "size"),
    [("500", 1000, 500), ("500", 10, 10), ("1%", 1000, 10), ("1%", 5, 1), ("100%", 7, 7), ("3%", 0, 0)],
)
def test_sample_size(spec: str, total: int, size: int) -> None:
    assert sample_size(spec, total) == size


@pytest.mark.parametrize("spec", ["", "0", "0%", "101%", "-5", "1.5%", "ten", "5 %%"])
def test_a_bad_sample_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="--sample"):
        sample_size(spec, 100)


def test_never_verified_first_then_the_longest_unverified() -> None:
    candidates = [("sha256:a", 1, 300), ("sha256:b", 1, None), ("sha256:c", 1, 100), ("sha256:d", 1, 200)]
    assert plan_sample(candidates, 1, seed=7) == [("sha256:b", 1)]
    assert plan_sample(candidates, 3, seed=7) == [("sha256:b", 1), ("sha256:c", 1), ("sha256:d", 1)]


def test_the_seed_fixes_the_order_of_ties() -> None:
    candidates = [(f"sha256:{i:03d}", i, None) for i in range(200)]
    first = plan_sample(candidates, 20, seed=42)
    assert plan_sample(list(reversed(candidates)), 20, seed=42) == first
    assert plan_sample(candidates, 20, seed=43) != first
    assert first == sorted(first)


def test_an_empty_plan_is_one_empty_task() -> None:
    assert chunks([], 64) == [()]
    assert [len(c) for c in chunks([("x", 1)] * 130, 64)] == [64, 64, 2]


# Tallies and the store.
def outcome(artifact_id: str, result: str = "ok", run_id: str = "r1", size: int = 10) -> Outcome:
    return Outcome(
        run_id=run_id,
        mode="full",
        artifact_id=artifact_id,
        outcome=result,  # type: ignore[arg-type]
        expected_digest=artifact_id,
        actual_digest="" if result in ("missing", "unreadable") else artifact_id,
        expected_size=size,
        actual_size=-1 if result in ("missing", "unreadable") else size,
        verified_at=T0,
    )


def task(run_id: str, ids: list[str], planned: int) -> Task:
    return Task(
        run_id=run_id, mode="full", planned=planned, artifacts=tuple((i, 10) for i in ids), started_at=T0
    )


def test_tally_counts_each_outcome_and_the_bytes_read() -> None:
    run = RunState(run_id="r1", mode="full", planned=4, started_at=T0)
    after = tally(run, [outcome("a"), outcome("b", "mismatch"), outcome("c", "missing"), outcome("d", "ok")])
    assert (after.ok, after.mismatch, after.missing, after.unreadable) == (2, 1, 1, 0)
    assert after.bytes_read == 30 and after.finished and after.failed == 2


def test_the_store_counts_once_and_completes_with_a_digest(tmp_path: Path) -> None:
    with VerifyStore(tmp_path / "v") as store:
        store.apply([Checked(0, 0, task("r1", ["a", "b"], 3), [outcome("a"), outcome("b", "mismatch")])])
        store.apply([Checked(0, 0, task("r1", ["a", "b"], 3), [outcome("a"), outcome("b", "mismatch")])])
        run = store.run("r1")
        assert run is not None and (run.done, run.finished) == (2, False)  # the replay was a no-op
        assert store.counted("r1", ["a", "b", "c"]) == {"a", "b"}
        store.apply([Checked(1, 0, task("r1", ["c"], 3), [outcome("c")])])
        [open_run] = store.open_runs()
        assert open_run.finished
        digest_before = store.outcomes_digest("r1")
        store.complete(msgspec.structs.replace(open_run, completed_at=T0, outcomes_digest=digest_before))
        assert store.open_runs() == [] and store.counted("r1", ["a", "b", "c"]) == set()
        latest = store.latest()
        assert latest is not None and latest.outcomes_digest == digest_before and latest.completed_at == T0
        assert [f.artifact_id for f in store.failures("r1")] == ["b"]
        assert set(store.last_checked()) == {"a", "b", "c"}
        # A task delivered again after completion changes nothing.
        store.apply([Checked(2, 0, task("r1", ["a"], 3), [])])
        assert store.run("r1") == latest


def test_the_digest_is_over_sorted_outcome_lines(tmp_path: Path) -> None:
    with VerifyStore(tmp_path / "v") as store:
        store.apply([Checked(0, 0, task("r1", ["z", "a"], 2), [outcome("z"), outcome("a", "missing")])])
        expected = hashlib.sha256(b"a missing \nz ok z\n").hexdigest()
        assert store.outcomes_digest("r1") == "sha256:" + expected


def test_an_empty_run_is_finished_at_once(tmp_path: Path) -> None:
    with VerifyStore(tmp_path / "v") as store:
        store.apply([Checked(0, 0, task("empty", [], 0), [])])
        [run] = store.open_runs()
        assert run.finished and run.done == 0


def test_the_summary_is_read_again_after_each_write(tmp_path: Path) -> None:
    with VerifyStore(tmp_path / "v") as store:
        assert store.summary() == (0, None)
        store.apply([Checked(0, 0, task("r1", ["a", "b"], 2), [outcome("a"), outcome("b", "missing")])])
        assert store.summary() == (1, None)
        [run] = store.open_runs()
        store.complete(msgspec.structs.replace(run, completed_at=T0, outcomes_digest="sha256:x"))
        failures, latest = store.summary()
        assert failures == 1 and latest is not None and latest.run_id == "r1"
