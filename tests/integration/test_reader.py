"""`read_batches`: a topic read to its end by a child process or by this one, on a real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import re

import pytest
from aiokafka.admin import NewTopic

from locker.config import Settings
from locker.errors import BrokerUnavailable
from streams.kafka import admin
from streams.reader import read_batches, read_in_child
from tests.integration.helpers import produce

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """As the admin: these tests make topics of their own, which no ACL of the locker covers."""
    return settings.acting_as("admin")


# in_child_above: 0 reads every range in a child process, a billion reads it here.
where = pytest.mark.parametrize("in_child_above", [0, 10**9], ids=["child", "here"])


def _topic(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> str:
    name = settings.topic_prefix + "reader"

    async def setup() -> None:
        async with admin(settings) as client:
            await client.create_topics([NewTopic(name, 3, 1)])
        await produce(settings, name, records)

    asyncio.run(setup())
    return name


@where
def test_every_record_once_in_partition_order_with_progress(settings: Settings, in_child_above: int) -> None:
    records: list[tuple[bytes | None, bytes | None]] = [(b"k%d" % i, b"v%d" % i) for i in range(2500)]
    records.append((b"tombstone", None))
    topic = _topic(settings, records)
    seen: list[tuple[int, int, bytes]] = []
    progress: list[tuple[int, int]] = []
    report = lambda done, total: progress.append((done, total))  # noqa: E731
    for batch in read_batches(
        settings, topic, max_records=300, progress=report, in_child_above=in_child_above
    ):
        assert len(batch) <= 300
        seen += batch
    assert sorted(v for _, _, v in seen) == sorted([v or b"" for _, v in records])
    for partition in {p for p, _, _ in seen}:
        offsets = [o for p, o, _ in seen if p == partition]
        assert offsets == list(range(len(offsets)))
    assert progress[-1] == (len(records), len(records))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


@where
def test_starts_skip_what_was_applied(settings: Settings, in_child_above: int) -> None:
    topic = _topic(settings, [(b"same-key", b"v%d" % i) for i in range(50)])  # one partition
    starts = {0: 40, 1: 40, 2: 40}
    seen = [
        r
        for batch in read_batches(settings, topic, starts=starts, in_child_above=in_child_above)
        for r in batch
    ]
    assert [v for _, _, v in seen] == [b"v%d" % i for i in range(40, 50)]


@where
def test_a_caller_that_stops_early_leaves_no_child(settings: Settings, in_child_above: int) -> None:
    topic = _topic(settings, [(b"k%d" % i, b"x" * 1000) for i in range(3000)])
    reader = read_batches(settings, topic, max_records=10, in_child_above=in_child_above)
    next(reader)
    reader.close()  # the generator's finally: the child, blocked on a full pipe, is killed
    assert multiprocessing.active_children() == []


def test_an_unreachable_broker_is_the_childs_error_in_the_caller(settings: Settings) -> None:
    values = dict(settings.values) | {"Kafka:Bootstrap": "127.0.0.1:9"}
    unreachable = dataclasses.replace(settings, values=values)
    with pytest.raises(BrokerUnavailable, match=re.escape("127.0.0.1:9 is unreachable")):
        list(read_in_child(unreachable, settings.topic_prefix + "reader"))


def test_a_missing_topic_reads_as_empty(settings: Settings) -> None:
    assert list(read_batches(settings, settings.topic_prefix + "nothing-here")) == []


@where
def test_a_partition_filter_reads_those_partitions_only(settings: Settings, in_child_above: int) -> None:
    topic = _topic(settings, [(b"k%d" % i, b"v%d" % i) for i in range(300)])
    every = [r for batch in read_batches(settings, topic, in_child_above=in_child_above) for r in batch]
    one = [
        r
        for batch in read_batches(settings, topic, partitions=[1], in_child_above=in_child_above)
        for r in batch
    ]
    assert one and {p for p, _, _ in one} == {1}
    assert sorted(one) == sorted(r for r in every if r[0] == 1)
