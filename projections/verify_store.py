"""The verification store in RocksDB: runs, their outcomes, and when each artifact was last checked.

Written by the verify loop (one writer), read by the CLI (`verify`, `verify-report`) and the API.
Its applied positions are those of `evidence.verify-tasks`. Rows:

    r/<run id>                   the run's `RunState` (msgspec JSON)
    p/<run id>                   a run not completed yet
    o/<run id>/<artifact id>     outcome line of an artifact the open run has counted; dropped
                                 when the run completes, after its digest is taken
    f/<run id>/<artifact id>     an `Outcome` that failed (kept: `verify-report --filter failed`)
    l/<artifact id>              "<epoch ms> <outcome>": the artifact's last check (quick runs)
    t/<completed at>/<run id>    completed runs in time order (`--latest`)
    ~failures                    failed checks counted so far, all runs (for /metrics)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec

from locker.verification import Outcome, Task, outcome_decoder, outcome_line
from projections.tracking import TrackedStore
from projections.verification import RunState, tally

RUN, PENDING, OPEN, FAILED, LAST, DONE = b"r/", b"p/", b"o/", b"f/", b"l/", b"t/"
FAILURES_TOTAL = b"~failures"

_encoder = msgspec.json.Encoder(order="deterministic")
_run_decoder = msgspec.json.Decoder(RunState)


@dataclass(frozen=True)
class Checked:
    """One applied task record: its position, and its task with the outcomes of the artifacts
    the run had not counted yet (None: the record was not a task)."""

    partition: int
    offset: int
    task: Task | None
    outcomes: Sequence[Outcome] = ()


class VerifyStore(TrackedStore):
    what = "verification store"

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        super().__init__(path, readonly=readonly)
        self._version = 0  # bumped by every write of this (the writer's) object
        self._summary: tuple[int, tuple[int, RunState | None]] | None = None

    # Queries.
    def run(self, run_id: str) -> RunState | None:
        raw = self.get_raw(RUN + run_id.encode())
        if raw is None:
            return None
        try:
            return _run_decoder.decode(raw)
        except msgspec.DecodeError:
            raise self.damaged(f"the row of run {run_id} is unreadable") from None

    def counted(self, run_id: str, artifact_ids: Sequence[str]) -> set[str]:
        """Those of `artifact_ids` whose outcome the open run `run_id` has counted."""
        prefix = OPEN + run_id.encode() + b"/"
        values = self.get_many([prefix + artifact_id.encode() for artifact_id in artifact_ids])
        return {artifact_id for artifact_id, v in zip(artifact_ids, values, strict=True) if v is not None}

    def failures(self, run_id: str) -> Iterator[Outcome]:
        prefix = FAILED + run_id.encode() + b"/"
        for key, value in self.scan(prefix):
            try:
                yield outcome_decoder.decode(value)
            except Exception:  # noqa: BLE001 - InvalidInput: a row this store never writes
                raise self.damaged(f"the failure row {key!r} is unreadable") from None

    def last_check(self, artifact_id: str) -> tuple[int, str] | None:
        """(epoch ms, outcome) of the artifact's last check, if it had one."""
        raw = self.get_raw(LAST + artifact_id.encode())
        if raw is None:
            return None
        ms, _, outcome = raw.partition(b" ")
        try:
            return int(ms), outcome.decode()
        except ValueError:
            raise self.damaged(f"the last-check row of {artifact_id} is unreadable") from None

    def last_checked(self) -> dict[str, int]:
        """artifact id -> when it was last checked (epoch ms)."""
        out: dict[str, int] = {}
        for key, value in self.scan(LAST):
            try:
                out[key[len(LAST) :].decode()] = int(value.split(b" ", 1)[0])
            except ValueError:
                raise self.damaged(f"the row {key!r} is unreadable") from None
        return out

    def failures_total(self) -> int:
        raw = self.get_raw(FAILURES_TOTAL)
        return 0 if raw is None else int(raw)

    def summary(self) -> tuple[int, RunState | None]:
        """(`failures_total`, `latest`), read again only after this object wrote: `/metrics` asks
        for it on every scrape, and an iterator per request cost ~0.2 ms of the service's CPU."""
        version, cached = self._version, self._summary
        if cached is not None and cached[0] == version:
            return cached[1]
        found = (self.failures_total(), self.latest())
        self._summary = (version, found)
        return found

    def latest(self) -> RunState | None:
        """The run that completed last."""
        for key, _ in self.scan(DONE, reverse=True):
            return self.run(key.rsplit(b"/", 1)[1].decode())
        return None

    def open_runs(self) -> list[RunState]:
        """Runs without a completion: still running, or finished and waiting to be completed."""
        runs = [self.run(key[len(PENDING) :].decode()) for key, _ in self.scan(PENDING)]
        return [run for run in runs if run is not None and run.completed_at is None]

    def outcomes_digest(self, run_id: str) -> str:
        """SHA-256 over the open run's outcome lines, in artifact-id order (key order)."""
        hasher = hashlib.sha256()
        for _, line in self.scan(OPEN + run_id.encode() + b"/"):
            hasher.update(line)
        return "sha256:" + hasher.hexdigest()

    # The one writer.
    def apply(self, checked: Sequence[Checked]) -> None:
        """Count the outcomes of a batch of task records, with the records' positions."""
        wb = self.new_batch()
        positions: dict[int, int] = {}
        runs: dict[str, RunState] = {}
        failed = 0
        for item in checked:
            if item.offset <= positions.get(item.partition, self._applied.get(item.partition, -1)):
                continue  # applied already
            positions[item.partition] = item.offset
            task = item.task
            if task is None:
                continue
            run = runs.get(task.run_id) or self.run(task.run_id)
            if run is None:  # the run's first task; its row is written even for an empty plan
                run = RunState(
                    run_id=task.run_id,
                    mode=task.mode,
                    planned=task.planned,
                    started_at=task.started_at,
                    sample=task.sample,
                    seed=task.seed,
                    outcomes_from=task.outcomes_from,
                    to_anchor=task.to_anchor,
                )
                wb.put(PENDING + task.run_id.encode(), b"")
            elif not item.outcomes or run.completed_at is not None:
                continue  # nothing new (the completion step may be writing the run's row: leave it)
            runs[task.run_id] = tally(run, item.outcomes)
            run_key = task.run_id.encode() + b"/"
            for outcome in item.outcomes:
                artifact = outcome.artifact_id.encode()
                line = outcome_line(outcome.artifact_id, outcome.outcome, outcome.actual_digest)
                wb.put(OPEN + run_key + artifact, line)
                wb.put(LAST + artifact, b"%d %s" % (_ms(outcome.verified_at), outcome.outcome.encode()))
                if outcome.outcome != "ok":
                    wb.put(FAILED + run_key + artifact, _encoder.encode(outcome))
                    failed += 1
        for run_id, run in runs.items():
            wb.put(RUN + run_id.encode(), _encoder.encode(run))
        if failed:
            wb.put(FAILURES_TOTAL, b"%d" % (self.failures_total() + failed))
        if positions:
            self.commit(wb, positions)
            self._version += 1

    def complete(self, run: RunState) -> None:
        """Record that `run` (with its digest and completion time) is complete; drop its outcome
        lines."""
        wb = self.new_batch()
        wb.put(RUN + run.run_id.encode(), _encoder.encode(run))
        assert run.completed_at is not None
        wb.put(DONE + run.completed_at.isoformat().encode() + b"/" + run.run_id.encode(), b"")
        prefix = OPEN + run.run_id.encode() + b"/"
        wb.delete_range(prefix, prefix[:-1] + b"0")  # "0" is "/" + 1: every key under the prefix
        wb.delete(PENDING + run.run_id.encode())
        self.commit(wb, {})
        self._version += 1


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
