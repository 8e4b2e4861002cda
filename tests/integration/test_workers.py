"""Several workers of one locker: shared ingest, complete read models on each, one elected leader
that alone writes anchors, and a killed worker's share taken over without loss."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from commands import anchors as anchor_ops
from commands import service
from locker.config import Settings
from locker.digests import digest_of
from locker.errors import Refused
from projections.store import IndexStore
from streams.anchoring import AnchorWriter
from streams.kafka import read_to_end
from streams.topics import Topics, anchor_writer_id
from tests.conftest import run_cli
from tests.integration.helpers import bearer, produce, submission, wait_for

pytestmark = pytest.mark.slow


def health(settings: Settings) -> dict[str, object]:
    answer = service.health(settings)
    assert answer is not None, f"worker {settings.worker} does not answer"
    return answer


def get_json(settings: Settings, path: str) -> dict[str, object]:
    request = urllib.request.Request(settings.api_url + path, headers=bearer(settings))
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def indexed(settings: Settings) -> int:
    with IndexStore(settings.index_path, readonly=True) as index:
        return index.count()


def send(settings: Settings, contents: list[bytes]) -> set[str]:
    topic = Topics(settings.topic_prefix).submissions
    asyncio.run(produce(settings, topic, [(digest_of(c).encode(), submission(c)) for c in contents]))
    return {digest_of(c) for c in contents}


@pytest.fixture
def two_workers(settings: Settings) -> Iterator[tuple[Settings, Settings]]:
    anchor_ops.ensure_key(settings)
    service.start(settings, workers=2)
    try:
        yield settings.as_worker(0), settings.as_worker(1)
    finally:
        service.stop(settings)


def test_two_workers_share_ingest_serve_everything_one_leads_and_a_killed_leader_is_replaced(
    two_workers: tuple[Settings, Settings],
) -> None:
    first, second = two_workers
    status = service.status(first)
    assert [w["worker"] for w in status["workers"]] == [0, 1]  # type: ignore[index]
    # Once the group has settled (the second worker's joining made it rebalance): one leader.
    wait_for(lambda: sum(bool(health(w)["leader"]) for w in two_workers) == 1, what="exactly one leader")
    assert first.api_url != second.api_url and first.state_path != second.state_path

    before = send(first, [os.urandom(300) + i.to_bytes(2, "big") for i in range(600)])
    for worker in two_workers:  # each holds the whole index: any worker answers any query
        wait_for(lambda w=worker: indexed(w) == len(before), what=f"worker {worker.worker} to index all")
    some = sorted(before)[:5]
    for worker in two_workers:
        for artifact_id in some:
            assert get_json(worker, f"/artifacts/{artifact_id}/meta")["artifact_id"] == artifact_id
    # The submissions partitions are shared out: both workers ingested some of them.
    ingested = [health(w)["loops"]["ingest"]["records"] for w in two_workers]  # type: ignore[index]
    assert all(n > 0 for n in ingested) and sum(ingested) >= len(before), ingested

    created = run_cli("evidence", "anchor", "create", "--format", "json")
    anchor_id = json.loads(created.stdout)["anchor_id"]
    for worker in two_workers:  # the chain projection is on every worker too
        wait_for(lambda w=worker: get_json(w, "/anchors/latest")["anchor_id"] == anchor_id, what="the anchor")

    # The leader is killed while 3,000 more submissions are being ingested by both.
    leader, other = sorted(two_workers, key=lambda w: not health(w)["leader"])
    more = [os.urandom(200) + i.to_bytes(2, "big") for i in range(3000)]
    after = {digest_of(c) for c in more}
    sender = threading.Thread(target=send, args=(other, more))
    sender.start()
    wait_for(lambda: indexed(other) >= len(before) + 100, what="the second batch to get going")
    service.daemon(leader).kill()
    killed_at = indexed(other)
    sender.join()
    assert killed_at < len(before | after), "the kill came too late to test anything"
    # The survivor leads once the group drops the dead member (its session: 10 s) ...
    wait_for(lambda: bool(health(other)["leader"]), timeout=60, what="the other worker to lead")
    # ... and ingests the dead one's submissions partitions too: each artifact once.
    wait_for(lambda: indexed(other) == len(before | after), timeout=120, what="every submission indexed")
    with IndexStore(other.index_path, readonly=True) as index:
        ids = [r.artifact_id for r in index.records()]
    assert len(ids) == len(set(ids)) == len(before | after)

    # The survivor writes anchors now; the chain (both leaders' anchors) verifies.
    created = run_cli("evidence", "anchor", "create", "--format", "json")
    assert json.loads(created.stdout)["anchor_id"] != anchor_id
    verified = run_cli("evidence", "anchor", "verify", "--all", "--format", "json")
    assert json.loads(verified.stdout)["verified"] is True

    # The dead worker comes back, catches up from its own stores, and does not lead.
    service.start(leader, workers=2)
    wait_for(lambda: indexed(leader) == len(before | after), what="the restarted worker to catch up")
    assert not health(leader)["leader"] and health(other)["leader"]


def test_a_fenced_anchor_writer_cannot_append(settings: Settings) -> None:
    """Two writers under the locker's transactional id: once the second claims it, the broker
    refuses the first's appends, and readers see the second's record only."""
    topic = Topics(settings.topic_prefix).anchors
    options = {
        "bootstrap_servers": settings.bootstrap,
        **settings.acting_as("service").kafka_auth().aiokafka(),
    }

    async def scenario() -> list[bytes]:
        old, new = (
            AnchorWriter(anchor_writer_id(settings), **options),
            AnchorWriter(anchor_writer_id(settings), **options),
        )
        await old.claim()
        await old.append(topic, b"k", b"old leader, before the election")
        await new.claim()
        with pytest.raises(Refused, match="fenced"):
            await old.append(topic, b"k", b"old leader, after the election")
        await new.append(topic, b"k", b"new leader")
        await new.release()
        await old.release()
        return [r.value async for batch in read_to_end(settings, topic) for r in batch]

    assert asyncio.run(scenario()) == [b"old leader, before the election", b"new leader"]
