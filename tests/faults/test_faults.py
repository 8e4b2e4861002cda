"""The fault suite (#13 item 4): each fault of the table below is a trial that injects it into a real
locker (a real broker from the jars, RocksDB stores, blobs on disk) under load, then runs the one
checker (`checker.py`): no accepted artifact lost, none applied twice, projections equal a rebuild,
and a new anchor verifies with the whole chain. Each trial's row goes to the report (conftest.py).

A new fault is one entry in FAULTS: a name for the report, an id for `-k`, and a function that
injects it and returns its `Outcome` (or, until it can run, why not; or, if `make test` should
leave it to `make test-faults`, why)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.faults import broker_outages, storage_faults, worker_kills
from tests.faults.conftest import Row
from tests.faults.lab import ANCHOR_KILLS, FULL, KILLS, PAUSE, Lab, Outcome

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


@dataclass(frozen=True)
class Fault:
    name: str
    id: str
    trial: Callable[[Lab], Outcome] | None
    not_run: str = ""  # why there is no trial yet
    full_only: str = ""  # why `make test` leaves it to `make test-faults`


FAULTS = [
    Fault("kill -9 of the worker, 10,000 submissions in flight", "kill-in-flight", worker_kills.in_flight),
    Fault(
        f"kill -9 of the worker at {KILLS} random instants during ingest",
        "kill-ingest",
        worker_kills.during_ingest,
    ),
    Fault("kill -9 of the worker during a verification run", "kill-verify", worker_kills.during_verification),
    Fault(
        f"kill -9 of the worker at {ANCHOR_KILLS} random instants while anchoring",
        "kill-anchor",
        worker_kills.during_anchoring,
    ),
    Fault("kill -9 of the worker during a retention cleanup", "kill-cleanup", worker_kills.during_cleanup),
    Fault("broker killed (SIGKILL) and restarted", "broker-kill", broker_outages.broker_killed),
    Fault(f"broker stopped (SIGSTOP) for {PAUSE:g} s", "broker-stop", broker_outages.broker_stopped),
    Fault(
        "one broker of a three-broker cluster killed", "cluster-kill", broker_outages.cluster_broker_killed
    ),
    Fault("full disk (free-space reserve reached)", "disk-full", storage_faults.disk_full),
    Fault(f"read-only storage root for {PAUSE:g} s", "read-only", storage_faults.read_only_root),
    Fault(
        f"S3 unavailable for {PAUSE:g} s",
        "s3-down",
        storage_faults.s3_down,
        full_only="about 90 s; test_s3.py stops its S3 server mid-ingest in `make test`",
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault(fault: Fault, lab: Lab, fault_report: list[Row]) -> None:
    if fault.trial is None:
        fault_report.append(Row(fault.name, 0, None, None, None, None, 0.0, f"not run: {fault.not_run}"))
        pytest.skip(fault.not_run)
    if fault.full_only and not FULL:
        pytest.skip(f"make test-faults only: {fault.full_only}")
    started = time.monotonic()
    try:
        outcome = fault.trial(lab)
    except BaseException as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        fault_report.append(
            Row(fault.name, 0, None, None, None, None, time.monotonic() - started, f"error: {why}")
        )
        raise
    verdict = outcome.verdict
    fault_report.append(
        Row(
            fault.name,
            outcome.trials,
            len(verdict.lost),
            len(verdict.duplicated),
            outcome.detected,
            verdict.repeated,
            time.monotonic() - started,
            "passed" if verdict.sound else "FAILED",
            outcome.note
            + (f"; leader again after {verdict.leader_after:.0f} s" if verdict.leader_after >= 1 else ""),
        )
    )
    assert verdict.lost == [] and verdict.duplicated == [], verdict.summary()
    assert verdict.rebuild_matches, "the live index differs from one rebuilt from offset 0"
    assert verdict.anchors_verify, verdict.summary()
    assert verdict.leftovers == [], verdict.leftovers
