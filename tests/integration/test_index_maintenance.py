"""Index maintenance (runbook SP-002) on a real broker and real RocksDB: status with a sample
checked against the log, refresh, rebuild compared with the live index, optimize."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from commands import service
from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArtifactIngested, encode
from projections.index import ARTIFACT
from projections.store import IndexStore
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, ingest, produce

pytestmark = pytest.mark.integration


def cli_json(*args: str, code: int = 0) -> Any:
    proc = run_cli(*args, "--format", "json", check=False)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def test_index_maintenance_while_running_and_stopped(running: Settings) -> None:
    ingest(running, [os.urandom(100) for _ in range(40)])
    status = cli_json("evidence", "index", "status")
    assert status["entries"] == 40 and status["lag"] == 0 and status["store_bytes"] > 0
    assert status["last_rebuild"] is None
    check = status["sample_check"]
    assert check["consistent"] and check["rows_checked"] == 20

    refreshed = cli_json("evidence", "index", "refresh")
    assert refreshed["lag"] == 0 and refreshed["applied_by"] == "the service"

    rebuilt = cli_json("evidence", "index", "rebuild")
    assert rebuilt["matches_live"] is True and rebuilt["entries"] == 40 and rebuilt["service_restarted"]
    assert cli_json("evidence", "index", "status")["last_rebuild"]["checksum"] == rebuilt["checksum"]

    optimized = cli_json("evidence", "index", "optimize")
    assert optimized["by"] == "the service" and optimized["bytes_after"] > 0

    # Stopped: events appended to the log meanwhile are applied by refresh itself.
    service.stop(running)
    more = [
        ArtifactIngested(
            artifact_id=digest_of(b"later %d" % i), size=7, kind="sbom", ingested_at=datetime.now(UTC)
        )
        for i in range(5)
    ]
    events = Topics(running.topic_prefix).events
    asyncio.run(produce(running, events, [(e.artifact_id.encode(), encode(e)) for e in more]))
    refreshed = cli_json("evidence", "index", "refresh")
    assert refreshed["events_applied"] == 5 and refreshed["applied_by"].startswith("this command")
    assert index_count(running) == 45
    assert cli_json("evidence", "index", "optimize")["by"].startswith("this command")

    # A row that no longer says what its event says is found by the sample check (exit 1).
    with IndexStore(running.index_path) as store:
        first = store.sample_ids(ends=1, randoms=0)[0]
        record = store.get(first)
        assert record is not None
        wb = store.new_batch()
        wb.put(ARTIFACT + first.encode(), msgspec.json.encode(msgspec.structs.replace(record, size=1)))
        store.commit(wb, {})
    damaged = cli_json("evidence", "index", "status", code=1)
    assert not damaged["sample_check"]["consistent"]
    assert [m["artifact_id"] for m in damaged["sample_check"]["mismatches"]] == [first]
    # A rebuild repairs it, and says the live index did not match.
    repaired = cli_json("evidence", "index", "rebuild")
    assert repaired["matches_live"] is False and not repaired["service_restarted"]
    assert cli_json("evidence", "index", "status")["sample_check"]["consistent"]
