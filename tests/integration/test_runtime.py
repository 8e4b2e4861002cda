"""The batch runtime on a real broker and real RocksDB: tracking records, retries, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
from aiokafka.admin import NewTopic

from locker.config import Settings
from locker.errors import StorageUnavailable
from projections.tracking import TrackedStore
from streams.app import consumer_options
from streams.kafka import Record, admin
from streams.publisher import BatchPublisher
from streams.runtime import Loop, Outbox
from tests.integration.helpers import produce

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """As the admin: these tests make topics of their own, which no ACL of the locker covers."""
    return settings.acting_as("admin")


class Seen(TrackedStore):
    """A projection that keeps one row per record it applied."""

    def apply(self, records: Sequence[Record]) -> None:
        wb = self.new_batch()
        positions: dict[int, int] = {}
        for r in records:
            if r.offset < self.resume_at(r.partition) or r.offset <= positions.get(r.partition, -1):
                continue
            wb.put(b"r/%d/%d" % (r.partition, r.offset), r.value)
            positions[r.partition] = r.offset
        if positions:
            self.commit(wb, positions)

    def rows(self) -> list[bytes]:
        return [value for _, value in self.scan(b"r/")]


def handle(store: Seen, records: list[Record]) -> Outbox:
    return Outbox(writes=[partial(store.apply, records)])


async def _topic(settings: Settings, name: str) -> None:
    async with admin(settings) as client:
        await client.create_topics([NewTopic(name, 2, 1)])


async def _until(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _run(settings: Settings, loop: Loop, publisher: BatchPublisher, until) -> None:  # type: ignore[no-untyped-def]
    await publisher.start()
    await loop.start()
    try:
        await _until(until)
    finally:
        await loop.stop()
        await publisher.stop()


def _loop(settings: Settings, topic: str, store: Seen, publisher: BatchPublisher, **kw: object) -> Loop:
    return Loop(
        "test",
        topic=topic,
        handler=kw.pop("handler", partial(handle, store)),  # type: ignore[arg-type]
        publisher=publisher,
        dlq_topic=topic + ".dlq",
        consumer_options=consumer_options(settings),
        tracked=(store,),
        **kw,  # type: ignore[arg-type]
    )


def test_a_group_loop_resumes_from_its_store_not_from_committed_offsets(
    settings: Settings, tmp_path: Path
) -> None:
    topic = settings.topic_prefix + "runtime"
    asyncio.run(_topic(settings, topic))
    values = [b"v%d" % i for i in range(200)]
    asyncio.run(produce(settings, topic, [(b"k%d" % i, v) for i, v in enumerate(values)]))
    with Seen(tmp_path / "seen") as store:
        publisher = BatchPublisher(bootstrap_servers=settings.bootstrap, **settings.kafka_auth().aiokafka())
        group = settings.group_id + "-runtime"
        loop = _loop(settings, topic, store, publisher, group_id=group)
        asyncio.run(_run(settings, loop, publisher, lambda: len(store.rows()) == 200))
        applied = store.applied()

        # The group's offsets say "start over", the store says where it is: nothing twice.
        async def rewind_group() -> None:
            from aiokafka import TopicPartition
            from aiokafka.structs import OffsetAndMetadata

            from streams.kafka import consumer

            async with consumer(settings, group_id=group) as c:
                tps = [TopicPartition(topic, p) for p in (0, 1)]
                c.assign(tps)
                await c.commit({tp: OffsetAndMetadata(0, "") for tp in tps})

        asyncio.run(rewind_group())
        asyncio.run(produce(settings, topic, [(b"k", b"late")]))
        publisher = BatchPublisher(bootstrap_servers=settings.bootstrap, **settings.kafka_auth().aiokafka())
        loop = _loop(settings, topic, store, publisher, group_id=group)
        asyncio.run(_run(settings, loop, publisher, lambda: len(store.rows()) == 201))
        time.sleep(0.5)
        assert sorted(store.rows()) == sorted([*values, b"late"])
        assert sum(store.applied().values()) == sum(applied.values()) + 1


def test_a_storage_outage_is_retried_and_applies_each_record_once(settings: Settings, tmp_path: Path) -> None:
    topic = settings.topic_prefix + "outage"
    asyncio.run(_topic(settings, topic))
    asyncio.run(produce(settings, topic, [(b"k%d" % i, b"v%d" % i) for i in range(300)]))
    failures = [2]

    async def flaky_sink(blobs: list[tuple[str, bytes]]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise StorageUnavailable("disk full (test)")

    def with_blob(store: Seen, records: list[Record]) -> Outbox:
        return Outbox(blobs=[("sha256:" + "0" * 64, b"")], writes=[partial(store.apply, records)])

    with Seen(tmp_path / "seen") as store:
        publisher = BatchPublisher(bootstrap_servers=settings.bootstrap, **settings.kafka_auth().aiokafka())
        loop = _loop(
            settings, topic, store, publisher, handler=partial(with_blob, store), blob_sink=flaky_sink
        )
        asyncio.run(_run(settings, loop, publisher, lambda: len(store.rows()) == 300))
        assert failures == [0]
        assert sorted(store.rows()) == sorted(b"v%d" % i for i in range(300))
        assert loop.condition == "running" and loop.error == ""


def test_an_unexpected_error_fails_the_loop_loudly(settings: Settings, tmp_path: Path) -> None:
    topic = settings.topic_prefix + "boom"
    asyncio.run(_topic(settings, topic))
    asyncio.run(produce(settings, topic, [(b"k", b"v")]))

    def boom(records: list[Record]) -> Outbox:
        raise ValueError("a bug")

    with Seen(tmp_path / "seen") as store:
        publisher = BatchPublisher(bootstrap_servers=settings.bootstrap, **settings.kafka_auth().aiokafka())
        loop = _loop(settings, topic, store, publisher, handler=boom)
        asyncio.run(_run(settings, loop, publisher, lambda: loop.condition == "failed"))
        assert loop.status()["error"] == "ValueError: a bug"
        assert loop.crashed and store.rows() == []
