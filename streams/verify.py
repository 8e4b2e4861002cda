"""Verification runs: planning (a command), checking (a batch loop), completing (after a batch).

1. `start_run`, in the commands agent: the run's artifacts (every indexed one, or a quick run's
   sample) are written to a plan file in the worker's state, then `verification.started` goes to
   `evidence.events` and the plan, cut into `Task`s, to `evidence.verify-tasks`; a `.sent` file
   marks it sent. A command delivered again before that re-sends the same plan (the loop skips
   what the run has counted); after it, it does nothing.
   The tasks name their planner: with several workers, the worker that planned a run (the
   leader then) checks and completes it; the others pass over its tasks.
2. The verify loop (`handle`): each task's artifacts that the run has not counted yet are read
   and hashed by `Checker`, a pool of processes (one per core, each blob read once). Every
   outcome goes to `evidence.verifications`, every failure also to `evidence.events` as
   `artifact.verification_failed`, and the verification store counts them with the tasks'
   positions in one write batch.
3. `complete_finished`, after each batch and every 5 s: a run with every outcome counted gets its
   digest, `verification.completed` is published, the store marks it complete and its plan files
   are deleted. A crash between publishing and marking repeats the completion event once; a
   report reads the store, which holds one completion.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import msgspec
import structlog
from mode import Service

from locker import verification
from locker.cas import Blobs
from locker.config import Settings
from locker.errors import InvalidInput, LockerError
from locker.events import (
    ArtifactRecovered,
    ArtifactVerificationFailed,
    VerificationCompleted,
    VerificationStarted,
    encode,
)
from locker.events.integrity import Mode
from locker.files import write_durably
from locker.requests import StartVerification
from locker.verification import Found, Outcome, Task
from projections.store import IndexStore
from projections.verification import RunState, chunks, plan_sample, sample_size
from projections.verify_store import Checked, VerifyStore
from streams.children import SPAWN, exit_with
from streams.kafka import Record, end_offsets
from streams.runtime import Headers, Message, Outbox, Publisher, dead_letter
from streams.topics import Topics

log = structlog.get_logger("stella.verify")

TASK_SIZE = 64  # artifacts a task


_store: Blobs | None = None  # in a checker process: the store it reads


def _start(parent: int, store: Blobs) -> None:
    global _store
    exit_with(parent)
    _store = store


def _check(item: tuple[str, int]) -> Found:
    assert _store is not None
    return _store.check(*item)


class Checker(Service):  # type: ignore[misc]  # mode is untyped here
    """The processes that read and hash blobs, one per core; started and stopped with the app."""

    def __init__(self, blobs: Blobs, workers: int | None = None) -> None:
        super().__init__()
        self.blobs = blobs
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    async def on_start(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=SPAWN, initializer=_start, initargs=(os.getpid(), self.blobs)
        )
        # The pool spawns its processes on first use: now, not in the first run (~1 s).
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, os.getpid) for _ in range(self.workers)))

    async def on_stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def check_all(self, items: list[tuple[str, int]]) -> list[Found]:
        """Judge every (artifact id, expected size), in order. Called from a thread."""
        assert self._pool is not None
        chunk = max(1, len(items) // (4 * self.workers))
        return list(self._pool.map(_check, items, chunksize=chunk))


CheckAll = Callable[[list[tuple[str, int]]], list[Found]]


@dataclass
class Verifying:
    """What the verify loop's handler and the completion step use."""

    topics: Topics
    blobs: Blobs
    store: VerifyStore
    plans: Path
    replica: Blobs | None = None
    auto_recover: bool = False  # Verification:AutoRecover, with a replica
    worker: str = ""  # this worker's id: the planner named in the tasks of runs planned here


def handle(v: Verifying, check_all: CheckAll, records: list[Record]) -> Outbox:
    """Check the artifacts of a batch of tasks that their runs have not counted yet."""
    out = Outbox()
    items = _to_check(v, records, out)
    work = [(a, size) for _, _, todo in items for a, size in todo]
    found = iter(check_all(work) if work else [])
    now = datetime.now(UTC)
    checked = [
        Checked(record.partition, record.offset, task, _judged(v, task, todo, found, now, out))
        for record, task, todo in items
    ]
    out.writes.append(partial(v.store.apply, checked))
    return out


ToCheck = list[tuple[Record, Task | None, list[tuple[str, int]]]]


def _to_check(v: Verifying, records: list[Record], out: Outbox) -> ToCheck:
    """Each new task record with the (artifact id, size) its run has not counted yet, neither in
    the store nor earlier in this batch; a record that is not a task of a run planned here is
    dead-lettered (task None)."""
    items: ToCheck = []
    runs: dict[str, RunState | None] = {}
    taken: dict[str, set[str]] = {}  # per run: artifacts counted or already in this batch
    for record in records:
        if record.offset < v.store.resume_at(record.partition):
            continue  # applied already
        try:
            task = verification.task_decoder.decode(record.value)
            if task.run_id not in runs:
                runs[task.run_id] = v.store.run(task.run_id)
            if runs[task.run_id] is None and not _planned_here(v.plans, task.run_id):
                if task.planner and task.planner != v.worker:
                    items.append((record, None, []))  # another worker's run: that worker checks it
                    continue
                raise InvalidInput("unknown-run", f"no run {task.run_id[:80]} was planned by this locker")
        except InvalidInput as error:
            out.dead.append((record, dead_letter(record, error)))
            items.append((record, None, []))
            continue
        run = runs[task.run_id]
        if run is not None and run.completed_at is not None:
            items.append((record, task, []))  # a task delivered again after its run completed
            continue
        seen = taken.setdefault(task.run_id, set())
        seen |= v.store.counted(task.run_id, [artifact_id for artifact_id, _ in task.artifacts])
        todo = []
        for artifact_id, size in task.artifacts:
            if artifact_id not in seen:  # counted, or twice in this batch (or task)
                seen.add(artifact_id)
                todo.append((artifact_id, size))
        items.append((record, task, todo))
    return items


def _judged(
    v: Verifying,
    task: Task | None,
    todo: list[tuple[str, int]],
    found: Iterator[Found],
    now: datetime,
    out: Outbox,
) -> list[Outcome]:
    """The outcomes of a task's artifacts (`found`, in order), each into the outbox: to
    `evidence.verifications`, a failure also to `evidence.events`, with its automatic recovery."""
    if task is None:
        return []
    outcomes = []
    for artifact_id, size in todo:
        outcome = _outcome(task, artifact_id, size, next(found), now)
        outcomes.append(outcome)
        out.counts["verifications", outcome.outcome] += 1
        key = artifact_id.encode()
        out.messages.append(Message(v.topics.verifications, key, verification.encode(outcome)))
        if outcome.outcome == "ok":
            continue
        out.messages.append(Message(v.topics.events, key, encode(_failure(outcome))))
        if v.auto_recover and (recovered := _recovered(v, outcome)) is not None:
            out.blobs.append((artifact_id, recovered[0]))  # restored before anything is published
            out.messages.append(Message(v.topics.events, key, encode(recovered[1])))
    return outcomes


def _recovered(v: Verifying, outcome: Outcome) -> tuple[bytes, ArtifactRecovered] | None:
    """The replica's copy of a failed artifact and the event that records its recovery, if the
    copy hashes to the artifact id; None otherwise (the failure stands)."""
    if v.replica is None:
        return None
    try:
        data = v.replica.read(outcome.artifact_id)
    except LockerError:  # not there, or unreadable
        return None
    if "sha256:" + hashlib.sha256(data).hexdigest() != outcome.artifact_id:
        log.warning("no automatic recovery: the replica's copy is bad too", artifact_id=outcome.artifact_id)
        return None
    event = ArtifactRecovered(
        artifact_id=outcome.artifact_id,
        source="replica",
        actor=f"auto-recover (verification run {outcome.run_id})",
        recovered_at=datetime.now(UTC),
        correlation_id=outcome.run_id,
    )
    return data, event


async def restore_all(blobs: Blobs, items: list[tuple[str, bytes]]) -> None:
    """The verify loop's blob stage: automatic recoveries, made durable before they are recorded."""
    for artifact_id, data in items:
        await asyncio.to_thread(blobs.restore, artifact_id, data)


def _planned_here(plans: Path, run_id: str) -> bool:
    """A task names a run this worker planned (its plan file is there until the run completes)."""
    try:
        return _plan_file(plans, run_id).exists()
    except InvalidInput:
        return False


def _outcome(task: Task, artifact_id: str, size: int, found: Found, now: datetime) -> Outcome:
    return Outcome(
        run_id=task.run_id,
        mode=task.mode,
        artifact_id=artifact_id,
        outcome=found.outcome,
        expected_digest=artifact_id,
        actual_digest=found.actual_digest,
        expected_size=size,
        actual_size=found.actual_size,
        detail=found.detail,
        verified_at=now,
    )


def _failure(outcome: Outcome) -> ArtifactVerificationFailed:
    assert outcome.outcome != "ok"
    return ArtifactVerificationFailed(
        artifact_id=outcome.artifact_id,
        run_id=outcome.run_id,
        outcome=outcome.outcome,
        actual_digest=outcome.actual_digest,
        actual_size=outcome.actual_size,
        detail=outcome.detail,
        verified_at=outcome.verified_at,
        correlation_id=outcome.run_id,
    )


# Completing.
async def complete_finished(v: Verifying, publisher: Publisher) -> None:
    """Complete every run whose outcomes are all counted."""
    for run in await asyncio.to_thread(v.store.open_runs):
        if not run.finished:
            continue
        digest = await asyncio.to_thread(v.store.outcomes_digest, run.run_id)
        done = msgspec.structs.replace(run, completed_at=datetime.now(UTC), outcomes_digest=digest)
        event = VerificationCompleted(
            run_id=run.run_id,
            mode=run.mode,
            planned=run.planned,
            ok=run.ok,
            mismatch=run.mismatch,
            missing=run.missing,
            unreadable=run.unreadable,
            bytes_read=run.bytes_read,
            started_at=run.started_at,
            completed_at=done.completed_at or run.started_at,
            outcomes_digest=digest,
            correlation_id=run.run_id,
        )
        await publisher.publish(v.topics.events, [(run.run_id.encode(), encode(event), [])])
        await asyncio.to_thread(v.store.complete, done)
        plan = _plan_file(v.plans, run.run_id)
        plan.unlink(missing_ok=True)
        plan.with_suffix(".sent").unlink(missing_ok=True)
        log.info("verification run completed", run_id=run.run_id, ok=run.ok, failed=run.failed)


# Planning.
class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A run's artifacts, kept until the run completes, so that a command delivered again after a
    crash re-sends the same plan (or nothing, once a `.sent` file says it was sent whole)."""

    mode: Mode
    sample: str
    seed: int
    artifacts: list[tuple[str, int]]
    started_at: datetime
    outcomes_from: tuple[int, ...]  # evidence.verifications' end offsets, by partition
    to_anchor: str = ""


async def start_run(
    v: Verifying,
    publisher: Publisher,
    settings: Settings,
    index: IndexStore,
    command: StartVerification,
    as_of: Mapping[int, int] | None = None,
) -> None:
    """Plan the run of `command` (once), then send it (once, unless a crash cut the sending
    short); `as_of`: the last offsets of the anchor `command.to_anchor`. Raises `InvalidInput`
    for a command id that cannot name a run, `UsageError` for a bad sample."""
    path = _plan_file(v.plans, command.command_id)
    sent = path.with_suffix(".sent")
    done = v.store.run(command.command_id)
    if sent.exists() or (done is not None and done.completed_at is not None):
        return  # delivered again: the run goes on, or is complete
    if path.exists():
        plan = msgspec.json.decode(path.read_bytes(), type=Plan)
    else:
        ends = await end_offsets(settings, v.topics.verifications)
        outcomes_from = tuple(ends.get(p, 0) for p in range(max(ends, default=-1) + 1))
        plan = await asyncio.to_thread(
            make_plan, command, index, v.store, settings.quick_sample, outcomes_from, as_of
        )
        await asyncio.to_thread(write_durably, path, msgspec.json.encode(plan))
    await send_plan(v, publisher, command, plan)
    await asyncio.to_thread(write_durably, sent, b"")


def make_plan(
    command: StartVerification,
    index: IndexStore,
    store: VerifyStore,
    default_sample: str,
    outcomes_from: tuple[int, ...],
    as_of: Mapping[int, int] | None = None,
) -> Plan:
    """Every indexed artifact (as of an anchor: those its trees cover), or a quick run's sample
    (`projections.verification.plan_sample`). Raises `UsageError` for a bad sample."""
    seed = command.seed if command.seed is not None else random.SystemRandom().randrange(2**62)
    candidates = list(index.ids_and_sizes(as_of))
    sample = ""
    if command.mode == "full":
        artifacts = sorted(candidates)
    else:
        sample = command.sample or default_sample
        size = sample_size(sample, len(candidates))
        last = store.last_checked()
        artifacts = plan_sample(((i, s, last.get(i)) for i, s in candidates), size, seed)
    return Plan(
        mode=command.mode,
        sample=sample,
        seed=seed,
        artifacts=artifacts,
        started_at=datetime.now(UTC),
        outcomes_from=outcomes_from,
        to_anchor=command.to_anchor,
    )


async def send_plan(v: Verifying, publisher: Publisher, command: StartVerification, plan: Plan) -> None:
    """`verification.started`, then the plan's tasks."""
    run_id = command.command_id
    mode = plan.mode
    started = VerificationStarted(
        run_id=run_id,
        mode=mode,
        planned=len(plan.artifacts),
        sample=plan.sample,
        seed=plan.seed if mode == "quick" else 0,
        to_anchor=plan.to_anchor,
        requested_by=command.requested_by,
        started_at=plan.started_at,
        correlation_id=run_id,
    )
    await publisher.publish(v.topics.events, [(run_id.encode(), encode(started), [])])
    tasks = [
        Task(
            run_id=run_id,
            mode=mode,
            planned=len(plan.artifacts),
            artifacts=chunk,
            started_at=plan.started_at,
            sample=plan.sample,
            seed=plan.seed if mode == "quick" else 0,
            outcomes_from=plan.outcomes_from,
            to_anchor=plan.to_anchor,
            planner=v.worker,
        )
        for chunk in chunks(plan.artifacts, TASK_SIZE)
    ]
    records: list[tuple[bytes | None, bytes, Headers]] = [
        (f"{run_id}/{i}".encode(), verification.encode(t), []) for i, t in enumerate(tasks)
    ]
    for start in range(0, len(records), 1000):
        await publisher.publish(v.topics.verify_tasks, records[start : start + 1000])
    log.info("verification run started", run_id=run_id, mode=mode, planned=len(plan.artifacts))


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def _plan_file(plans: Path, run_id: str) -> Path:
    if not RUN_ID.match(run_id):  # refused before planning (`plan_run`); never a path outside
        raise InvalidInput("schema-invalid", f"run id {run_id[:80]!r} is not letters, digits and -")
    return plans / f"{run_id}.json"
