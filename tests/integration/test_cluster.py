"""A three-broker cluster (#13 item 1): topics get 3 replicas and `min.insync.replicas=2`, and
ingest goes on when one broker is killed, with nothing acknowledged lost or applied twice."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands import access, service
from commands.broker import LocalCluster, free_port, port_open
from locker import config
from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArtifactIngested
from streams.kafka import admin, producer
from streams.topics import Topics
from tests.integration.helpers import events, index_count, submission, use_broker, wait_for

pytestmark = pytest.mark.integration


def six_free_ports() -> tuple[int, int]:
    """A client port p and a controller port c with p, p+2, p+4 and c, c+2, c+4 all free."""
    while True:
        port = free_port()
        if all(not port_open("127.0.0.1", port + k) for k in range(6)):
            return port, port + 1


@pytest.fixture
def cluster(
    locker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalCluster]:
    port, controller = six_free_ports()
    three = LocalCluster.of(
        tmp_path / "cluster", 3, port, controller, heap="256m", partitions=4, credentials=tmp_path / "secrets"
    )
    three.start()
    try:
        use_broker(monkeypatch, three.bootstrap, three.nodes[0].client_env())
        yield three
    finally:
        for node in three.nodes:  # throwaway data: no clean shutdown to wait for
            node.daemon.kill()


async def replication(settings: Settings) -> dict[str, tuple[int, str]]:
    """topic -> (replicas of its first partition, its min.insync.replicas)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topics = Topics(settings.topic_prefix)
    names = [topics.submissions, topics.events, topics.anchors, topics.dlq]
    async with admin(settings.acting_as("admin")) as client:
        described = {
            t["topic"]: len(t["partitions"][0]["replicas"]) for t in await client.describe_topics(names)
        }
        configs = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    insync = {
        name: dict((entry[0], entry[1]) for entry in entries)["min.insync.replicas"]
        for response in configs
        for _, _, _, name, entries in response.resources
    }
    return {name: (described[name], insync[name]) for name in names}


async def submit(settings: Settings, contents: list[bytes]) -> list[str]:
    """Send each as the producer principal (acks=all, idempotent); the ids the cluster acknowledged."""
    topic = Topics(settings.topic_prefix).submissions
    async with producer(settings.acting_as("producer"), request_timeout_ms=30000) as p:
        sent = [await p.send(topic, submission(c), key=digest_of(c).encode()) for c in contents]
        await asyncio.gather(*sent)
    return [digest_of(c) for c in contents]


def test_ingest_goes_on_with_a_broker_killed_and_nothing_acknowledged_is_lost(cluster: LocalCluster) -> None:
    settings = config.load()
    access.set_up(settings)
    assert set(asyncio.run(replication(settings)).values()) == {(3, "2")}
    service.start(settings)
    try:
        before = asyncio.run(submit(settings, [os.urandom(512) for _ in range(600)]))
        wait_for(lambda: index_count(settings) >= 300, what="ingest under way")
        cluster.nodes[1].daemon.kill()  # kill -9 of one broker (and controller) of three
        after = asyncio.run(submit(settings, [os.urandom(512) for _ in range(600)]))
        acknowledged = set(before) | set(after)
        wait_for(
            lambda: index_count(settings) == len(acknowledged), timeout=180, what="every artifact indexed"
        )
        ingested = [
            e.artifact_id for e in events(settings, len(acknowledged)) if isinstance(e, ArtifactIngested)
        ]
        assert sorted(ingested) == sorted(acknowledged)  # each once: none lost, none applied twice
    finally:
        service.stop(settings)
