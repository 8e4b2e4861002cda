"""aiokafka plumbing shared by the CLI, the worker's start-up and tests.

Broker errors are turned into `BrokerUnavailable` here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from locker.config import Settings, max_message_bytes
from locker.errors import BrokerUnavailable
from streams.topics import specs


@contextlib.asynccontextmanager
async def broker_errors(settings: Settings) -> AsyncIterator[None]:
    try:
        yield
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(f"Kafka at {settings.bootstrap} is unreachable: {exc}") from None
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {settings.bootstrap}: {exc}") from None


@contextlib.asynccontextmanager
async def admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    async with broker_errors(settings):
        client = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=15000)
        await client.start()
        try:
            yield client
        finally:
            await client.close()


@contextlib.asynccontextmanager
async def producer(settings: Settings, **overrides: object) -> AsyncIterator[AIOKafkaProducer]:
    options: dict[str, object] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": max_message_bytes(settings.max_content_bytes),
        "request_timeout_ms": 30000,
    }
    options.update(overrides)
    async with broker_errors(settings):
        client = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **options)
        await client.start()
        try:
            yield client
        finally:
            await client.stop()


@contextlib.asynccontextmanager
async def consumer(settings: Settings, **overrides: object) -> AsyncIterator[AIOKafkaConsumer]:
    options: dict[str, object] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": max_message_bytes(settings.max_content_bytes),
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    options.update(overrides)
    async with broker_errors(settings):
        client = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, **options)
        await client.start()
        try:
            yield client
        finally:
            await client.stop()


async def create_topics(settings: Settings) -> list[str]:
    """Create every missing topic with its configs; returns the names created."""
    wanted = specs(settings)
    async with admin(settings) as client:
        existing = set(await client.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent `init` won the race
                await client.create_topics(
                    [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.config) for spec in missing]
                )
    return [spec.name for spec in missing]


async def assign_all(client: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` to `client` (fresh metadata); [] if it does not exist."""
    await client._client.force_metadata_update()
    tps = [TopicPartition(topic, p) for p in sorted(client.partitions_for_topic(topic) or ())]
    if tps:
        client.assign(tps)
    return tps


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> offset of the next record to be written."""
    async with consumer(settings) as client:
        tps = await assign_all(client, topic)
        ends = await client.end_offsets(tps) if tps else {}
    return {tp.partition: offset for tp, offset in ends.items()}


async def fetch_value(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    """The value of one record."""
    tp = TopicPartition(topic, partition)
    async with consumer(settings) as client:
        client.assign([tp])
        client.seek(tp, offset)
        try:
            record = await asyncio.wait_for(client.getone(), timeout=settings.timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"record {topic}/{partition}/{offset} could not be read") from None
        if record.offset != offset:
            raise BrokerUnavailable(f"record {topic}/{partition}/{offset} is gone (log starts later)")
        return bytes(record.value or b"")
