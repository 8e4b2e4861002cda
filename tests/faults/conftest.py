"""The fault suite's fixtures (the integration tests' locker, with a signing key) and its report:
each trial's row (fault, trials, lost, duplicated, detected) is kept, printed at the end of the
run, and written to `STELLA_FAULT_REPORT` (`make test-faults`: tests/faults/REPORT.md) when set."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commands import anchors as anchor_ops
from commands import service
from locker.config import Settings
from tests.faults.lab import ANCHOR_KILLS, KILLS, PAUSE, Lab
from tests.integration.conftest import settings  # noqa: F401  (a fixture, used by `lab`)


@dataclass(frozen=True)
class Row:
    fault: str
    trials: int
    lost: int | None
    duplicated: int | None
    detected: int | None
    repeated: int | None
    seconds: float
    result: str
    note: str = ""


ROWS = pytest.StashKey[list[Row]]()


@pytest.fixture
def lab(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:  # noqa: F811
    """A fresh locker for one trial, with an anchor signing key; its service stopped after."""
    anchor_ops.ensure_key(settings)
    try:
        yield Lab(settings, tmp_path, monkeypatch)
    finally:
        service.stop(settings)


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> list[Row]:
    """The rows of this run's report; a trial appends its own."""
    return request.config.stash.setdefault(ROWS, [])


DEFINITIONS = """\
- **trials**: faults injected (kill -9s, outages, full or read-only disks).
- **lost**: artifacts whose submission the broker acknowledged (accepted) that are not in the
  index afterwards, or are indexed as ingested without a blob that hashes to their id. Expired
  artifacts, deleted on purpose, are accounted for.
- **duplicated**: artifacts applied twice: an index count that is not its number of distinct ids
  (or rows by kind that do not add up to it), an index record not made by its artifact's first
  `artifact.ingested` on the log, or an events partition whose Merkle tree does not hold exactly
  one leaf per record (size and RFC 6962 root recomputed from the log).
- **detected**: trials in which the locker noticed and reported the fault itself: for a worker
  kill, `stella service status` says it is not running (what a supervisor restarts it on); for a
  broker outage, `/healthz` (polled every 250 ms while the fault lasts) said `degraded` (a loop
  `retrying`, with the error) or `stella doctor --check check.kafka.broker`, run once during the
  outage, failed; for a read-only root, `/healthz` said `degraded` with the storage not writable
  and the ingest loop retrying on "cannot write"; for a full disk, the refused submissions came
  back as `storage-full` dead letters and `ingest.rejected` events, counted in
  `stella_evidence_rejected_total`.
- **repeated ingests**: artifacts with more than one `artifact.ingested` on the log: a submission
  redelivered after a crash whose first event the index had not yet applied. Not a loss or a
  double application (the index keeps the first record, the Merkle tree one leaf per record).

After every trial the same checker (`tests/faults/checker.py`) also requires the live index to equal
one rebuilt from offset 0 (`stella evidence index rebuild`'s replay: same checksum, same applied
positions), no temp files of cut-short writes, and a new anchor made after the fault with the whole
chain verifying against the log (`stella evidence anchor verify --all`: one chain, no fork, no gap).
A row's result is `passed` only if all of that holds and lost = duplicated = 0.
"""


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def render(rows: list[Row], command: str) -> str:
    lines = [
        "# Fault suite report",
        "",
        f"Written by the run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{command}`",
        f"(STELLA_TEST_KILLS={KILLS}, STELLA_TEST_ANCHOR_KILLS={ANCHOR_KILLS}, STELLA_TEST_PAUSE={PAUSE:g}; "
        f"{os.cpu_count()} cores), "
        f"{sum(r.trials for r in rows)} trials in all.",
        "",
        "| fault | trials | lost | duplicated | detected | repeated ingests | seconds | result | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [
        f"| {r.fault} | {r.trials} | {_cell(r.lost)} | {_cell(r.duplicated)} | {_cell(r.detected)} "
        f"| {_cell(r.repeated)} | {r.seconds:.0f} | {r.result} | {r.note} |"
        for r in rows
    ]
    return "\n".join([*lines, "", DEFINITIONS])


def _command() -> str:
    if os.environ.get("MAKELEVEL") and "tests/faults" in sys.argv[1:]:
        return "make test-faults"
    return shlex.join(["pytest", *sys.argv[1:]])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if rows:
        terminalreporter.write_sep("-", "fault trials")
        for r in rows:
            terminalreporter.write_line(
                f"{r.fault}: trials {r.trials}, lost {_cell(r.lost)}, duplicated {_cell(r.duplicated)}, "
                f"detected {_cell(r.detected)}, repeated {_cell(r.repeated)}, {r.seconds:.0f} s, {r.result}"
                + (f"; {r.note}" if r.note else "")
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rows = session.config.stash.get(ROWS, [])
    target = os.environ.get("STELLA_FAULT_REPORT")
    if rows and target:
        Path(target).write_text(render(rows, _command()))
