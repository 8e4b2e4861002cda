"""The verify loop's handler on real RocksDB and real blob files (the hashing pool replaced by the
same check run in this process)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from locker.cas import BlobStore
from locker.events import ArtifactRecovered, ArtifactVerificationFailed, decode
from locker.verification import Found, Task, encode, outcome_decoder
from projections.verify_store import VerifyStore
from streams.kafka import Record
from streams.runtime import Outbox
from streams.topics import Topics
from streams.verify import Verifying, handle

T0 = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


def here(v: Verifying) -> Callable[[list[tuple[str, int]]], list[Found]]:
    """The checker pool's work, done here: the store's own check of each (artifact id, size)."""
    return lambda items: [v.blobs.check(artifact_id, size) for artifact_id, size in items]


def setup(tmp_path: Path, contents: list[bytes]) -> tuple[Verifying, list[str]]:
    blobs = BlobStore(tmp_path / "evidence")
    blobs.ensure()
    ids = []
    for data in contents:
        artifact_id = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs.put(artifact_id, data)
        ids.append(artifact_id)
    plans = tmp_path / "plans"
    plans.mkdir()
    v = Verifying(Topics("t."), blobs, VerifyStore(tmp_path / "store"), plans)
    return v, ids


def task_record(offset: int, run_id: str, artifacts: list[tuple[str, int]], planned: int) -> Record:
    task = Task(run_id=run_id, mode="full", planned=planned, artifacts=tuple(artifacts), started_at=T0)
    return Record("t.evidence.verify-tasks", 0, offset, b"k", encode(task))


def run_writes(out: Outbox) -> None:
    for write in out.writes:
        write()


def test_each_artifact_is_checked_once_per_run_and_failures_reach_the_log(tmp_path: Path) -> None:
    v, ids = setup(tmp_path, [b"one", b"two", b"three"])
    (v.plans / "r1.json").write_bytes(b"{}")
    v.blobs.path(ids[1]).chmod(0o644)
    v.blobs.path(ids[1]).write_bytes(b"TWO")
    records = [
        task_record(0, "r1", [(ids[0], 3), (ids[1], 3)], 3),
        task_record(1, "r1", [(ids[1], 3), (ids[2], 5), (ids[2], 5)], 3),  # repeats within the batch
    ]
    out = handle(v, here(v), records)
    outcomes = [outcome_decoder.decode(m.value) for m in out.messages if m.topic.endswith("verifications")]
    assert sorted((o.artifact_id, o.outcome) for o in outcomes) == sorted(
        [(ids[0], "ok"), (ids[1], "mismatch"), (ids[2], "ok")]
    )
    [failure] = [decode(m.value) for m in out.messages if m.topic.endswith("events")]
    assert isinstance(failure, ArtifactVerificationFailed) and failure.artifact_id == ids[1]
    run_writes(out)
    run = v.store.run("r1")
    assert run is not None and (run.ok, run.mismatch, run.finished) == (2, 1, True)
    # The same records again (a redelivery): already applied, nothing new.
    again = handle(v, here(v), records)
    assert again.messages == [] and again.dead == []


def test_a_task_of_a_run_not_planned_here_is_dead_lettered(tmp_path: Path) -> None:
    v, ids = setup(tmp_path, [b"one"])
    out = handle(v, here(v), [task_record(0, "made-up", [(ids[0], 3)], 1)])
    assert [letter.reason for _, letter in out.dead] == ["unknown-run"] and out.messages == []
    run_writes(out)
    assert v.store.run("made-up") is None and v.store.resume_at(0) == 1


def test_auto_recover_restores_from_a_good_replica_only(tmp_path: Path) -> None:
    v, ids = setup(tmp_path, [b"one", b"two"])
    replica = BlobStore(tmp_path / "replica")
    replica.ensure()
    replica.put(ids[0], b"one")
    replica.put(ids[1], b"two")
    replica.path(ids[1]).chmod(0o644)
    replica.path(ids[1]).write_bytes(b"bad")
    v.replica, v.auto_recover = replica, True
    (v.plans / "r1.json").write_bytes(b"{}")
    for artifact_id in ids:
        v.blobs.path(artifact_id).unlink()
    out = handle(v, here(v), [task_record(0, "r1", [(ids[0], 3), (ids[1], 3)], 2)])
    assert out.blobs == [(ids[0], b"one")]  # made durable by the runtime before publishing
    recovered = [e for e in (decode(m.value) for m in out.messages if m.topic.endswith("events"))]
    assert [type(e).__name__ for e in recovered].count("ArtifactVerificationFailed") == 2
    [event] = [e for e in recovered if isinstance(e, ArtifactRecovered)]
    assert event.artifact_id == ids[0]
