"""A blob store on a small file system filled to its free-space reserve (#9, part 6): ingest refuses
new artifacts with `storage-full` (an `ingest.rejected` event and a dead letter), everything else
goes on, and ingest works again once there is room. A real tmpfs, a real broker, the real service."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commands import access, service
from locker import config
from locker.cas import BlobStore
from locker.digests import digest_of
from tests.conftest import run_cli
from tests.integration.helpers import dead_letters, index_count, scrape, wait_for

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


@pytest.fixture
def small_disk(locker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 32 MiB tmpfs as the evidence path, with 8 MiB kept in reserve."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__PATH", str(mount))
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__FREESPACERESERVE", "8M")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def ingest_files(files: list[Path]) -> list[dict[str, Any]]:
    out = run_cli("evidence", "ingest", *map(str, files), "--format", "json", check=False)
    assert out.returncode in (0, 5), out.stderr  # 5: some were rejected
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def test_a_full_disk_refuses_ingest_cleanly_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    settings = config.load()
    BlobStore(settings.evidence_path).ensure()
    access.set_up(settings)
    # Leave about 3 MiB above the reserve, then offer six 1 MiB artifacts.
    filler = small_disk / "filler"
    free = BlobStore(settings.evidence_path).free_bytes() or 0
    filler.write_bytes(b"\0" * (free - settings.free_space_reserve - 3 * MIB))
    files = []
    for i in range(6):
        path = tmp_path / f"a{i}.bin"
        path.write_bytes(os.urandom(MIB))
        files.append(path)
    service.start(settings)
    try:
        first = ingest_files(files)
        accepted = [r for r in first if r["status"] == "ingested"]
        refused = [r for r in first if r["status"] == "rejected"]
        assert len(accepted) in (2, 3) and len(accepted) + len(refused) == 6, first
        assert all(r["reason"] == "storage-full" for r in refused), refused
        letters = dead_letters(settings, len(refused))
        assert {letter.reason for letter, _ in letters} == {"storage-full"}
        assert "FreeSpaceReserve" in letters[0][0].detail

        # Everything else goes on: reads, verification, the metrics gauge.
        wait_for(lambda: index_count(settings) == len(accepted), what="the accepted artifacts indexed")
        assert json.loads(run_cli("evidence", "verify", "--mode", "full", "--format", "json").stdout)["run"][
            "ok"
        ] == len(accepted)
        metrics = scrape(settings)
        assert "stella_evidence_storage_free_bytes" in metrics
        assert metrics["stella_evidence_storage_reserve_bytes"] == 8 * MIB
        assert metrics['stella_evidence_rejected_total{loop="ingest",reason="storage-full"}'] >= 1

        # Room again: the refused artifacts are accepted when submitted again, nothing is lost.
        filler.unlink()
        again = ingest_files([tmp_path / f"a{i}.bin" for i in range(6)])
        assert {r["status"] for r in again} == {"ingested", "duplicate"}
        wait_for(lambda: index_count(settings) == 6, what="all six indexed")
        blobs = BlobStore(settings.evidence_path)
        assert all(blobs.hash_of(digest_of(f.read_bytes())) == digest_of(f.read_bytes()) for f in files)
    finally:
        service.stop(settings)
