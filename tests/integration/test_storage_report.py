"""`stella evidence storage stats|analyze|test` against a real index, real blobs and real folders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from commands import service
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from tests.conftest import run_cli
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


def test_stats_and_analyze_tell_where_the_room_goes(running: Settings) -> None:
    contents = [os.urandom(100 * (i + 1)) for i in range(12)]  # 100 .. 1,200 bytes
    ingest(running, contents)
    stats = cli_json("evidence", "storage", "stats")
    assert (stats["artifacts"], stats["bytes"]) == (12, sum(len(c) for c in contents))
    assert sum(k["artifacts"] for k in stats["by_kind"]) == 12
    assert sum(k["bytes"] for k in stats["by_kind"]) == stats["bytes"]
    assert stats["by_status"] == {"ingested": 12}
    today = stats["growth_per_day"]["days"][-1]
    assert (today["artifacts"], today["bytes"]) == (12, stats["bytes"])
    [evidence] = [r for r in stats["roots"] if r["role"] == "evidence"]
    assert 0 < evidence["free_bytes"] <= evidence["total_bytes"]
    assert stats["replica"]["configured"] is False

    largest = cli_json("evidence", "storage", "analyze", "--sort", "size", "--limit", "3")
    assert [r["artifact_id"] for r in largest] == [digest_of(c) for c in contents[::-1][:3]]
    oldest = cli_json("evidence", "storage", "analyze", "--sort", "age", "--limit", "50")
    times = [r["ingested_at"] for r in oldest]
    assert len(oldest) == 12 and times == sorted(times)
    bad = run_cli("evidence", "storage", "analyze", "--sort", "colour", check=False)
    assert bad.returncode == 2 and "size or age" in bad.stderr


def test_storage_test_probes_every_root_and_names_a_broken_one(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__REPLICAPATH", str(tmp_path / "replica"))
    (tmp_path / "replica").mkdir()
    probed = cli_json("evidence", "storage", "test")
    assert probed["ok"] and {r["role"] for r in probed["roots"]} >= {"evidence", "replica"}
    for root in probed["roots"]:
        assert root["ok"] and root["fsync_ms"] >= 0 and root["read_ms"] >= 0
        assert not list(Path(root["path"]).rglob("probe-*"))  # nothing left behind

    # A replica root that is a file, not a folder: the probe fails there, and says so.
    (tmp_path / "replica").rmdir()
    (tmp_path / "replica").write_bytes(b"not a folder")
    broken = run_cli("evidence", "storage", "test", check=False)
    assert (
        broken.returncode == 1 and "replica" in broken.stderr and str(tmp_path / "replica") in broken.stderr
    )


def test_cleanup_temp_only_never_takes_a_live_writers_file(settings: Settings) -> None:
    tmp = BlobStore(settings.evidence_path).tmp
    old, young = tmp / ("a" * 64 + ".1.tmp"), tmp / ("b" * 64 + ".2.tmp")

    def leave_behind() -> None:
        old.write_bytes(b"x" * 100)
        young.write_bytes(b"y" * 50)
        hour_ago = time.time() - 3600
        os.utime(old, (hour_ago, hour_ago))

    leave_behind()
    (tmp / "not-a-temp-file").write_bytes(b"z")
    listed = cli_json("evidence", "cleanup", "--temp-only", "--dry-run")
    assert (listed["would_remove"], listed["bytes"]) == (2, 150) and old.exists() and young.exists()

    service.start(settings)  # removes leftovers before it writes; then it is a live writer
    try:
        assert not old.exists() and not young.exists()
        leave_behind()  # the young file may be the running service's own
        running = cli_json("evidence", "cleanup", "--temp-only")
        assert (running["removed"], running["bytes"], running["kept_recent"]) == (1, 100, 1)
        assert not old.exists() and young.exists()
    finally:
        service.stop(settings)
    stopped = cli_json("evidence", "cleanup", "--temp-only")
    assert (stopped["removed"], stopped["bytes"]) == (1, 50) and not young.exists()
    assert (tmp / "not-a-temp-file").exists()
    both = run_cli("evidence", "cleanup", check=False)
    assert both.returncode == 2 and "--temp-only" in both.stderr
