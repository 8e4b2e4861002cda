"""`stella evidence storage stats|analyze|test` against a real index, real blobs and real folders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

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
