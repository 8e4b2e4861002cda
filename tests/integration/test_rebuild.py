"""A rebuild from offset 0 equals the live index, and the service resumes from its positions."""

from __future__ import annotations

import asyncio
import os

import pytest

from commands import service
from locker.config import Settings
from locker.digests import digest_of
from projections.store import IndexStore, wipe
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import (
    assert_trees_match_the_log,
    index_count,
    produce,
    submission,
    wait_for,
)

pytestmark = pytest.mark.slow


def payloads(n: int, size: int = 256) -> list[bytes]:
    return [os.urandom(size - 8) + i.to_bytes(8, "big") for i in range(n)]


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
