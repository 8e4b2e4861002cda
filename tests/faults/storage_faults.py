"""Trials on the blob store: a full disk (a small tmpfs filled to its free-space reserve, #9 part 6),
a read-only storage root (remounted read-only mid-ingest, as a failing disk is; chmod 0555 of
`tmp/` where the test cannot mount), and an S3 backend whose server is down for a while."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from commands import service
from locker import config
from locker.cas import BlobStore, open_store
from locker.config import Settings
from locker.digests import digest_of
from locker.errors import InvalidInput
from locker.events import ArtifactIngested, decode
from streams.kafka import read_to_end
from streams.topics import Topics
from tests.conftest import run_cli
from tests.faults.checker import check
from tests.faults.lab import PAUSE, HealthWatch, Lab, Outcome, Sender, tmpfs
from tests.integration.helpers import dead_letters, index_count, scrape, wait_for
from tests.s3server import SeaweedS3

MIB = 1024 * 1024


def _ingest_files(files: list[Path]) -> list[dict[str, Any]]:
    out = run_cli("evidence", "ingest", *map(str, files), "--format", "json", check=False)
    assert out.returncode in (0, 5), out.stderr  # 5: some were rejected
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def _on(lab: Lab, root: Path, **env: str) -> Settings:
    """The locker's settings with its blob store at `root` (and `env`, STELLA_ names)."""
    lab.monkeypatch.setenv("STELLA_EVIDENCELOCKER__PATH", str(root))
    for key, value in env.items():
        lab.monkeypatch.setenv(key, value)
    settings = config.load()
    BlobStore(settings.evidence_path).ensure()
    return settings


def disk_full(lab: Lab) -> Outcome:
    """A 32 MiB tmpfs with 8 MiB kept in reserve, filled to about 3 MiB above it; six 1 MiB
    artifacts offered: two or three accepted, the rest refused `storage-full` with their dead
    letters, everything else goes on; once there is room the six are submitted again and all six
    are indexed. "Detected": the refusals were reported (dead letters, the rejected counter)."""
    with tmpfs(lab.tmp_path / "small", "32m") as small:
        settings = _on(lab, small, STELLA_EVIDENCELOCKER__FREESPACERESERVE="8M")
        filler = small / "filler"
        free = BlobStore(settings.evidence_path).free_bytes() or 0
        filler.write_bytes(b"\0" * (free - settings.free_space_reserve - 3 * MIB))
        files = []
        for i in range(6):
            path = lab.tmp_path / f"a{i}.bin"
            path.write_bytes(os.urandom(MIB))
            files.append(path)
        service.start(settings)
        first = _ingest_files(files)
        accepted = [r for r in first if r["status"] == "ingested"]
        refused = [r for r in first if r["status"] == "rejected"]
        assert len(accepted) in (2, 3) and len(accepted) + len(refused) == 6, first
        assert all(r["reason"] == "storage-full" for r in refused), refused
        letters = dead_letters(settings, len(refused))
        assert {letter.reason for letter, _ in letters} == {"storage-full"}
        assert "FreeSpaceReserve" in letters[0][0].detail

        # Everything else goes on: reads, verification, the metrics gauge.
        wait_for(lambda: index_count(settings) == len(accepted), what="the accepted artifacts indexed")
        run = json.loads(run_cli("evidence", "verify", "--mode", "full", "--format", "json").stdout)["run"]
        assert run["ok"] == len(accepted)
        metrics = scrape(settings)
        assert "stella_evidence_storage_free_bytes" in metrics
        assert metrics["stella_evidence_storage_reserve_bytes"] == 8 * MIB
        reported = metrics['stella_evidence_rejected_total{loop="ingest",reason="storage-full"}'] >= 1

        # Room again: the refused artifacts are accepted when submitted again, nothing is lost.
        filler.unlink()
        again = _ingest_files(files)
        assert {r["status"] for r in again} == {"ingested", "duplicate"}
        ids = {digest_of(f.read_bytes()) for f in files}
        verdict = check(settings, ids, lab.tmp_path)
    note = f"{len(accepted)} of 6 accepted while full, {len(refused)} refused storage-full, then all 6"
    return Outcome(1, int(bool(refused) and len(letters) == len(refused) and reported), verdict, note)


def _read_only(root: Path, yes: bool) -> None:
    """Remount the tmpfs at `root` read-only (or writable again); as a user who cannot, chmod its
    `tmp/` (where every blob is written first) 0555 (or 0750)."""
    if os.geteuid() != 0:
        (root / "tmp").chmod(0o555 if yes else 0o750)
        return
    deadline = time.monotonic() + 30
    while True:  # EBUSY while the blob writer has a file open for writing
        made = subprocess.run(
            ["mount", "-o", f"remount,{'ro' if yes else 'rw'}", str(root)], capture_output=True
        )
        if made.returncode == 0:
            return
        assert time.monotonic() < deadline, made.stderr.decode()
        time.sleep(0.05)


async def _ingested_ids(settings: Settings) -> set[str]:
    out = set()
    async for records in read_to_end(settings, Topics(settings.topic_prefix).events, max_records=10_000):
        for r in records:
            with contextlib.suppress(InvalidInput):
                event = decode(r.value)
                if isinstance(event, ArtifactIngested):
                    out.add(event.artifact_id)
    return out


def read_only_root(lab: Lab) -> Outcome:
    """The storage root goes read-only mid-ingest for `PAUSE` seconds. While it is, the service
    publishes no event for a blob it could not write (every `artifact.ingested` on the log then has
    its blob), says so on /healthz (storage not writable, the ingest loop retrying with the error),
    and once writable again it resumes by itself. "Detected": /healthz said both."""
    root = lab.tmp_path / "root"
    with contextlib.ExitStack() as cleanup:
        if os.geteuid() == 0:
            cleanup.enter_context(tmpfs(root, "512m"))
        settings = _on(lab, root, STELLA_EVIDENCELOCKER__FREESPACERESERVE="16M")
        cleanup.callback(service.stop, settings)
        service.start(settings)
        sender = cleanup.enter_context(Sender(settings))
        wait_for(lambda: index_count(settings) >= 300, what="ingest to get going")
        blobs = BlobStore(settings.evidence_path)
        with HealthWatch(settings).watching() as watch:
            _read_only(root, True)
            try:
                time.sleep(PAUSE)
                logged = asyncio.run(_ingested_ids(settings))
                unwritten = [i for i in logged if not blobs.exists(i)]
                during = index_count(settings)
            finally:
                _read_only(root, False)
            wait_for(lambda: index_count(settings) >= during + 1000, timeout=180, what="ingest to resume")
        accepted = sender.finish()
        assert unwritten == [], f"{len(unwritten)} artifacts logged as ingested with no blob written"
        verdict = check(settings, accepted, lab.tmp_path)
    said = watch.storage and any("cannot write" in e for e in watch.errors)
    note = (
        f"read-only {PAUSE:g} s; {len(logged)} ingested on the log then, each with its blob; "
        f"/healthz: {watch.seen()}"
    )
    return Outcome(1, int(bool(said) and watch.degraded), verdict, note)


def s3_down(lab: Lab) -> Outcome:
    """The S3 backend (a real SeaweedFS, tests/s3server.py) unavailable for `PAUSE` seconds
    mid-ingest: its server killed, then started again on the same ports and data. No
    `artifact.ingested` is published for an object not stored, /healthz says so (storage not
    writable, the ingest loop retrying), and ingest resumes by itself. "Detected": /healthz said
    `degraded` with the ingest loop's error."""
    server = SeaweedS3(lab.tmp_path / "seaweedfs")
    server.start()
    try:
        for key, value in server.env(prefix="faults/").items():
            lab.monkeypatch.setenv(key, value)
        settings = config.load()
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(service.stop, settings)
            service.start(settings)
            sender = cleanup.enter_context(Sender(settings))
            wait_for(lambda: index_count(settings) >= 300, what="ingest to get going")
            with HealthWatch(settings).watching() as watch:
                server.stop()
                began = time.monotonic()
                try:
                    time.sleep(PAUSE)
                    logged = asyncio.run(_ingested_ids(settings))
                    during = index_count(settings)
                finally:
                    server.start()
                    down_for = time.monotonic() - began
                wait_for(lambda: index_count(settings) >= during + 500, timeout=180, what="ingest to resume")
            accepted = sender.finish()
            store = open_store(settings)
            unwritten = [i for i in logged if not store.exists(i)]
            assert unwritten == [], f"{len(unwritten)} artifacts logged as ingested with no object stored"
            verdict = check(settings, accepted, lab.tmp_path)
    finally:
        server.stop()
    note = (
        f"down {down_for:.0f} s; {len(logged)} ingested on the log then, each with its object; "
        f"/healthz: {watch.seen()}"
    )
    return Outcome(1, int(watch.degraded and bool(watch.errors)), verdict, note)
