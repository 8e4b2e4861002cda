"""Trials that `kill -9` the worker: with 10,000 submissions in flight, at random instants during an
ingest, during a verification run, while it anchors, and in the middle of a retention cleanup.
"Detected": `stella service status` reported the worker not running after the kill (what a
supervisor restarts it on)."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from commands import service
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import VerificationCompleted, VerificationStarted
from projections.store import IndexStore
from projections.verify_store import VerifyStore
from tests.conftest import run_cli
from tests.faults.checker import check, wait_indexed
from tests.faults.lab import ANCHOR_KILLS, KILLS, Lab, Outcome, alive, payloads, submit
from tests.integration.helpers import events, index_count, wait_for


def kill(settings: Settings) -> int:
    """kill -9 the worker; 1 if `stella service status` then says it is not running."""
    service.daemon(settings).kill()
    return int(not service.status(settings)["running"])


def in_flight(lab: Lab) -> Outcome:
    """One kill with 10,000 submissions in flight; its blob-writer process dies with it."""
    settings = lab.settings
    service.start(settings)
    data = payloads(10_000)
    accepted = submit(settings, data)
    # Followed every 10 ms (a reopen per poll could miss the whole ingest on a fast machine).
    with IndexStore.followed(settings.index_path) as index:
        deadline = time.monotonic() + 120
        while index.count() < 500:
            assert time.monotonic() < deadline, "ingest did not get going"
            time.sleep(0.01)
            index.catch_up()
    worker = service.daemon(settings).pid()
    children = [int(p) for p in Path(f"/proc/{worker}/task/{worker}/children").read_text().split()]
    assert children, "the worker runs its blob writer in a child process"
    detected = kill(settings)
    wait_for(lambda: not any(alive(child) for child in children), timeout=10, what="its children to die too")
    killed_at = index_count(settings)
    assert killed_at < len(data), "the kill came too late to test anything"
    service.start(settings)
    return Outcome(1, detected, check(settings, accepted, lab.tmp_path), f"killed at {killed_at} indexed")


def during_ingest(lab: Lab) -> Outcome:
    """KILLS x 1,000 artifacts, a kill -9 at a random instant after each 1,000 is sent, while the
    service anchors every second."""
    lab.monkeypatch.setenv("STELLA_ANCHORS__INTERVAL", "1")
    settings = lab.settings
    rng = random.Random(6)
    accepted: set[str] = set()
    detected = 0
    service.start(settings)
    for _ in range(KILLS):
        accepted |= submit(settings, payloads(1000))
        time.sleep(rng.uniform(0.0, 1.5))
        detected += kill(settings)
        service.start(settings)
    return Outcome(KILLS, detected, check(settings, accepted, lab.tmp_path))


def during_anchoring(lab: Lab) -> Outcome:
    """ANCHOR_KILLS kill -9s at random instants while anchors are made back to back: one after every 50
    events applied (`Anchors:EveryEvents`) and one a second, under a steady ingest. Afterwards
    the chain must verify: one chain, no fork, no gap."""
    lab.monkeypatch.setenv("STELLA_ANCHORS__EVERYEVENTS", "50")
    lab.monkeypatch.setenv("STELLA_ANCHORS__INTERVAL", "1")
    settings = lab.settings
    rng = random.Random(7)
    accepted: set[str] = set()
    detected = anchored_near_a_kill = 0
    service.start(settings)
    for _ in range(ANCHOR_KILLS):
        accepted |= submit(settings, payloads(300))
        time.sleep(rng.uniform(0.1, 1.0))
        kill_time = time.time()
        detected += kill(settings)
        made = [p.stat().st_mtime for p in settings.anchor_backup_path.glob("*.json")]
        anchored_near_a_kill += any(kill_time - 1.0 <= m <= kill_time for m in made)
        service.start(settings)
    verdict = check(settings, accepted, lab.tmp_path)
    anchors = len(list(settings.anchor_backup_path.glob("*.json")))
    assert anchored_near_a_kill >= (ANCHOR_KILLS + 1) // 2, (
        f"only {anchored_near_a_kill} kills came while it anchored"
    )
    return Outcome(
        ANCHOR_KILLS,
        detected,
        verdict,
        f"{anchors} anchors; {anchored_near_a_kill} kills within 1 s of an anchor being made",
    )


def during_verification(lab: Lab) -> Outcome:
    """The run resumes after the restart, completes once, and counts every artifact once."""
    settings = lab.settings
    service.start(settings)
    data = payloads(5000, size=512)
    accepted = submit(settings, data)
    wait_indexed(settings, accepted)
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "evidence", "verify", "--mode", "full", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def checked() -> int:
        with VerifyStore(settings.verify_path, readonly=True) as store:
            runs = store.open_runs()
            return runs[0].done if runs else 0

    # Killed as soon as the verify loop has carried out its first batch (/healthz, polled every
    # 10 ms): a store reopened every 250 ms missed whole runs on a quiet machine.
    deadline = time.monotonic() + 120
    while ((service.health(settings) or {}).get("loops", {}).get("verify", {}).get("records", 0)) == 0:
        assert time.monotonic() < deadline, "the verification run did not get going"
        time.sleep(0.01)
    detected = kill(settings)
    at_kill = checked()
    assert 0 < at_kill < len(data), f"the kill came at {at_kill} of {len(data)}: too late to test anything"
    service.start(settings)
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    run = json.loads(out)["run"]
    assert (run["planned"], run["done"], run["ok"], run["failed"]) == (len(data), len(data), len(data), 0)
    logged = events(settings, len(data) + 2)
    completions = [e for e in logged if isinstance(e, VerificationCompleted) and e.run_id == run["run_id"]]
    starts = [e for e in logged if isinstance(e, VerificationStarted) and e.run_id == run["run_id"]]
    assert len(completions) == 1 and len(starts) == 1
    assert completions[0].ok == len(data) and completions[0].outcomes_digest == run["outcomes_digest"]
    expected = hashlib.sha256(
        b"".join(b"%s ok %s\n" % (i.encode(), i.encode()) for i in sorted(digest_of(d) for d in data))
    ).hexdigest()
    assert run["outcomes_digest"] == "sha256:" + expected
    return Outcome(
        1, detected, check(settings, accepted, lab.tmp_path), f"killed at {at_kill} of {len(data)}"
    )


def _kill_at_the_first_expiry(settings: Settings, last: str, scratch: Path) -> int:
    """kill -9 the service as soon as its index shows the cleanup's work: deletions pending, or the
    last scan expired. Followed as a RocksDB secondary and polled every 10 ms: the window between
    the expiries' commit and their blobs' deletion is a fraction of a second."""
    deadline = time.monotonic() + 120
    with IndexStore(settings.index_path, follow=scratch) as index:
        while time.monotonic() < deadline:
            index.catch_up()
            record = index.get(last)
            if index.pending_deletions() or (record is not None and record.status == "expired"):
                return kill(settings)
            time.sleep(0.01)
    raise AssertionError("timed out waiting for the cleanup to get going")


def during_cleanup(lab: Lab) -> Outcome:
    """After a kill -9 mid-cleanup and a restart, every artifact the policy keeps has its blob and
    every expired one has none: the deletions the kill cut short are finished. A round whose kill
    came after the whole cleanup (it can run in one batch) is played again with fresh scans."""
    settings = lab.settings
    service.start(settings)
    sboms = payloads(2000, size=300)
    accepted = submit(settings, sboms, kind="sbom")
    lab.monkeypatch.setenv("STELLA_RETENTION__SCAN", "1s")
    blobs = BlobStore(settings.evidence_path)
    scans: list[bytes] = []
    detected = rounds = 0

    def expired_now() -> int:
        with IndexStore(settings.index_path, readonly=True) as index:
            return sum(1 for r in index.records() if r.status == "expired")

    for round_ in range(3):
        rounds += 1
        batch = payloads(4000, size=256)
        scans += batch
        accepted |= submit(settings, batch, kind="scan")
        wait_indexed(settings, accepted)
        time.sleep(1.1)
        cleanup = ["evidence", "cleanup", "--apply-retention", "--format", "json"]
        command = [sys.executable, "-m", "cli.main", *cleanup]
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        detected += _kill_at_the_first_expiry(
            settings, digest_of(batch[-1]), lab.tmp_path / f"follow-{round_}"
        )
        with IndexStore(settings.index_path, readonly=True) as index:
            cut_short = bool(index.pending_deletions())
        cut_short = cut_short or expired_now() < len(scans)
        service.start(settings)
        cli.communicate(timeout=300)
        if cli.returncode != 0:  # the CLI timed out on the command the dead worker had taken: again
            run_cli(*cleanup)
        if cut_short:
            break
    else:
        raise AssertionError("in 3 rounds no kill came before the cleanup had finished")
    wait_for(lambda: expired_now() == len(scans), timeout=300, what="every scan expired")

    def settled() -> bool:
        with IndexStore(settings.index_path, readonly=True) as index:
            return not index.pending_deletions()

    wait_for(settled, timeout=120, what="the deletions finished")
    assert not any(blobs.exists(digest_of(d)) for d in scans)
    with IndexStore(settings.index_path, readonly=True) as index:
        assert {r.status for r in index.records() if r.kind == "sbom"} == {"ingested"}
    # The checker finds every kept artifact's blob; the expired ones are accounted for.
    return Outcome(rounds, detected, check(settings, accepted, lab.tmp_path), f"{rounds} cleanup round(s)")
