"""Crashes and outages: nothing accepted is lost, nothing is indexed twice, nothing half-written."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from commands import access, service
from commands import broker as broker_ops
from locker import config
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import VerificationCompleted, VerificationStarted
from projections.store import IndexStore, wipe
from projections.verify_store import VerifyStore
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import (
    assert_trees_match_the_log,
    events,
    index_count,
    produce,
    submission,
    use_broker,
    wait_for,
)

pytestmark = pytest.mark.slow


def payloads(n: int, size: int = 256) -> list[bytes]:
    return [os.urandom(size - 8) + i.to_bytes(8, "big") for i in range(n)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def assert_complete(settings: Settings, expected: set[str]) -> None:
    """Every expected artifact indexed exactly once, with a blob that hashes right; no temp files."""
    blobs = BlobStore(settings.evidence_path)
    with IndexStore(settings.index_path, readonly=True) as index:
        ids = [r.artifact_id for r in index.records()]
        assert index.count() == len(expected)
        assert sum(len(index.by_kind(k)) for k in ("other", "sbom")) == len(expected)
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    for artifact_id in ids:
        blobs.verify(artifact_id)
    assert blobs.tmp_files() == []


def test_kill_9_while_10000_submissions_are_in_flight(running: Settings) -> None:
    data = payloads(10_000)
    topic = Topics(running.topic_prefix).submissions
    asyncio.run(produce(running, topic, [(digest_of(d).encode(), submission(d)) for d in data]))
    # Followed every 10 ms (a reopen per poll could miss the whole ingest on a fast machine).
    with IndexStore.followed(running.index_path) as index:
        deadline = time.monotonic() + 120
        while index.count() < 500:
            assert time.monotonic() < deadline, "ingest did not get going"
            time.sleep(0.01)
            index.catch_up()
    worker = service.daemon(running).pid()
    children = [int(p) for p in Path(f"/proc/{worker}/task/{worker}/children").read_text().split()]
    assert children, "the worker runs its blob writer in a child process"
    service.daemon(running).kill()
    wait_for(lambda: not any(_alive(child) for child in children), timeout=10, what="its children to die too")
    killed_at = index_count(running)
    assert killed_at < len(data), "the kill came too late to test anything"
    service.start(running)
    wait_for(lambda: index_count(running) == len(data), timeout=300, what="all 10,000 to be indexed")
    assert_complete(running, {digest_of(d) for d in data})
    service.stop(running)
    assert_trees_match_the_log(running)


def test_broker_crash_and_restart_during_ingest(locker_env: dict[str, str], tmp_path, monkeypatch) -> None:
    own = broker_ops.LocalBroker(
        root=tmp_path / "own-broker",
        port=broker_ops.free_port(),
        controller_port=broker_ops.free_port(),
    )
    own.start()
    try:
        settings = use_broker(monkeypatch, own.bootstrap, own.client_env())
        BlobStore(settings.evidence_path).ensure()
        access.set_up(settings)
        service.start(settings)
        try:
            data = payloads(30000, size=1024)  # enough that the outage lands mid-ingest
            topic = Topics(settings.topic_prefix).submissions
            records = [(digest_of(d).encode(), submission(d)) for d in data]
            sender = threading.Thread(target=lambda: asyncio.run(produce(settings, topic, records)))
            sender.start()  # still sending when the broker dies: its retries span the outage
            wait_for(lambda: index_count(settings) >= 200, what="ingest to get going")
            own.daemon.kill()  # at once: a clean shutdown takes long enough for ingest to finish
            stopped_at = index_count(settings)
            restart = threading.Timer(3.0, own.start)
            restart.start()
            restart.join()
            sender.join()
            assert own.answers()
            assert stopped_at < len(data), "the outage came too late to test anything"
            wait_for(
                lambda: index_count(settings) == len(data),
                timeout=300,
                what="ingest to resume after the broker restart",
            )
            assert service.status(settings)["healthy"]
            assert_complete(settings, {digest_of(d) for d in data})
        finally:
            service.stop(settings)
    finally:
        own.stop()


def test_rebuild_from_offset_0_is_identical_to_the_live_index(running: Settings) -> None:
    data = payloads(500)
    topic = Topics(running.topic_prefix).submissions
    records = [
        (digest_of(d).encode(), submission(d, kind="sbom", subjects=("sha256:" + "1" * 64,))) for d in data
    ]
    records += records[:50]  # resubmissions
    records += [(None, b"\x00 not a submission")]
    asyncio.run(produce(running, topic, records))
    asyncio.run(produce(running, Topics(running.topic_prefix).events, [(b"x", b"not an event")]))
    wait_for(lambda: index_count(running) == len(data), what="the live index")
    wait_for(
        lambda: '"lag": 0' in run_cli("evidence", "index", "status", "--format", "json").stdout,
        what="the live index to catch up",
    )
    service.stop(running)
    with IndexStore(running.index_path, readonly=True) as live:
        live_sum, live_positions = live.checksum(), live.applied()

    out = run_cli("evidence", "index", "rebuild", "--format", "json")
    assert f'"checksum": "{live_sum}"' in out.stdout
    with IndexStore(running.index_path, readonly=True) as rebuilt:
        assert rebuilt.checksum() == live_sum
        assert rebuilt.applied() == live_positions
        assert rebuilt.count() == len(data)

    # A lost Merkle store is rebuilt by the service on start, from offset 0 of the events topic.
    wipe(running.merkle_path)

    # And the service resumes from the rebuilt positions without applying anything twice.
    service.start(running)
    more = payloads(20)
    asyncio.run(produce(running, topic, [(digest_of(d).encode(), submission(d)) for d in more]))
    wait_for(lambda: index_count(running) == len(data) + len(more), what="ingest after rebuild")
    service.stop(running)
    assert_trees_match_the_log(running)


# kill -9s in the test below: 8 in `make test` (about 45 s), 20 in `make test-faults`.
KILLS = int(os.environ.get("STELLA_TEST_KILLS", "8"))


def test_kill_9_at_random_instants_during_an_ingest(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KILLS x 1,000 artifacts, a kill -9 at a random instant after each 1,000 is sent. Nothing
    lost, nothing applied twice, projections equal a rebuild, the anchor chain verifies."""
    monkeypatch.setenv("STELLA_ANCHORS__INTERVAL", "1")  # anchors keep being made while it crashes
    run_cli("init")
    settings = config.load()
    topic = Topics(settings.topic_prefix).submissions
    data = payloads(KILLS * 1000)
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    rng = random.Random(6)
    service.start(settings)
    try:
        for chunk in chunks:  # one kill -9 at a random instant after each is sent
            asyncio.run(produce(settings, topic, [(digest_of(d).encode(), submission(d)) for d in chunk]))
            time.sleep(rng.uniform(0.0, 1.5))
            service.daemon(settings).kill()
            service.start(settings)
        wait_for(
            lambda: index_count(settings) == len(data), timeout=300, what=f"all {len(data)} to be indexed"
        )
        wait_for(
            lambda: '"lag": 0' in run_cli("evidence", "index", "status", "--format", "json").stdout,
            what="the index to apply every event",
        )
        cli_json = lambda *args: json.loads(run_cli(*args, "--format", "json").stdout)  # noqa: E731
        cli_json("evidence", "anchor", "create")
        verified = cli_json("evidence", "anchor", "verify", "--all")
        assert verified["verified"] and verified["anchors_checked"] >= 2, verified
    finally:
        service.stop(settings)
    assert_complete(settings, {digest_of(d) for d in data})
    assert_trees_match_the_log(settings)
    with IndexStore(settings.index_path, readonly=True) as live:
        live_sum = live.checksum()
    rebuilt = json.loads(run_cli("evidence", "index", "rebuild", "--format", "json").stdout)
    assert rebuilt["checksum"] == live_sum


def test_kill_9_during_a_verification_run(running: Settings) -> None:
    """The run resumes after the restart, completes once, and counts every artifact once."""
    data = payloads(8000, size=512)
    topic = Topics(running.topic_prefix).submissions
    asyncio.run(produce(running, topic, [(digest_of(d).encode(), submission(d)) for d in data]))
    wait_for(lambda: index_count(running) == len(data), timeout=300, what="ingest")
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "evidence", "verify", "--mode", "full", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def checked() -> int:
        with VerifyStore(running.verify_path, readonly=True) as store:
            runs = store.open_runs()
            return runs[0].done if runs else 0

    wait_for(lambda: checked() > 0, timeout=120, what="the run to get going")
    service.daemon(running).kill()
    at_kill = checked()
    assert 0 < at_kill < len(data), f"the kill came at {at_kill} of {len(data)}: too late to test anything"
    service.start(running)
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    run = json.loads(out)["run"]
    assert (run["planned"], run["done"], run["ok"], run["failed"]) == (len(data), len(data), len(data), 0)
    logged = events(running, len(data) + 2)
    completions = [e for e in logged if isinstance(e, VerificationCompleted) and e.run_id == run["run_id"]]
    starts = [e for e in logged if isinstance(e, VerificationStarted) and e.run_id == run["run_id"]]
    assert len(completions) == 1 and len(starts) == 1
    assert completions[0].ok == len(data) and completions[0].outcomes_digest == run["outcomes_digest"]
    expected = hashlib.sha256(
        b"".join(b"%s ok %s\n" % (i.encode(), i.encode()) for i in sorted(digest_of(d) for d in data))
    ).hexdigest()
    assert run["outcomes_digest"] == "sha256:" + expected


def _kill_at_the_first_expiry(settings: Settings, last: str, scratch: Path) -> None:
    """kill -9 the service as soon as its index shows the cleanup's work: deletions pending, or the
    last scan expired. Followed as a RocksDB secondary and polled every 10 ms: the window between
    the expiries' commit and their blobs' deletion is a fraction of a second."""
    deadline = time.monotonic() + 120
    with IndexStore(settings.index_path, follow=scratch) as index:
        while time.monotonic() < deadline:
            index.catch_up()
            record = index.get(last)
            if index.pending_deletions() or (record is not None and record.status == "expired"):
                service.daemon(settings).kill()
                return
            time.sleep(0.01)
    raise AssertionError("timed out waiting for the cleanup to get going")


def test_kill_9_during_a_retention_cleanup(
    running: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After a kill -9 mid-cleanup and a restart, every artifact the policy keeps has its blob and
    every expired one has none: the deletions the kill cut short are finished. A round whose kill
    came after the whole cleanup (it can run in one batch) is played again with fresh scans."""
    topic = Topics(running.topic_prefix).submissions
    sboms = payloads(2000, size=300)
    asyncio.run(produce(running, topic, [(digest_of(d).encode(), submission(d, kind="sbom")) for d in sboms]))
    monkeypatch.setenv("STELLA_RETENTION__SCAN", "1s")
    blobs = BlobStore(running.evidence_path)
    scans: list[bytes] = []

    def expired_now() -> int:
        with IndexStore(running.index_path, readonly=True) as index:
            return sum(1 for r in index.records() if r.status == "expired")

    for round_ in range(3):
        batch = payloads(4000, size=256)
        scans += batch
        records = [(digest_of(d).encode(), submission(d, kind="scan")) for d in batch]
        asyncio.run(produce(running, topic, records))
        total = len(scans) + len(sboms)
        wait_for(lambda total=total: index_count(running) == total, timeout=300, what="ingest")
        time.sleep(1.1)
        cleanup = ["evidence", "cleanup", "--apply-retention", "--format", "json"]
        command = [sys.executable, "-m", "cli.main", *cleanup]
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _kill_at_the_first_expiry(running, digest_of(batch[-1]), tmp_path / f"follow-{round_}")
        with IndexStore(running.index_path, readonly=True) as index:
            cut_short = bool(index.pending_deletions())
        cut_short = cut_short or expired_now() < len(scans)
        service.start(running)
        cli.communicate(timeout=300)
        if cli.returncode != 0:  # the CLI timed out on the command the dead worker had taken: again
            run_cli(*cleanup)
        if cut_short:
            break
    else:
        raise AssertionError("in 3 rounds no kill came before the cleanup had finished")
    wait_for(lambda: expired_now() == len(scans), timeout=300, what="every scan expired")

    def settled() -> bool:
        with IndexStore(running.index_path, readonly=True) as index:
            return not index.pending_deletions()

    wait_for(settled, timeout=120, what="the deletions finished")
    assert not any(blobs.exists(digest_of(d)) for d in scans)
    assert all(blobs.hash_of(digest_of(d)) == digest_of(d) for d in sboms)  # nothing kept lost its blob
    with IndexStore(running.index_path, readonly=True) as index:
        assert {r.status for r in index.records() if r.kind == "sbom"} == {"ingested"}
