"""Produce many records at once with aiokafka's batch API and wait until the broker has them all.

`Topic.send` in faust costs a channel hop, a future and a partitioner call per record; a batch
of events costs one `BatchBuilder` per partition here. Keys are partitioned with Kafka's default
(murmur2) partitioner, computed for the whole batch at once (`streams.partitioning`), so a
record lands where any Kafka client would put it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from mode import Service

from streams.partitioning import partitions_for

Headers = list[tuple[str, bytes]]
OutRecord = tuple[bytes | None, bytes, Headers]  # key, value, headers


class BatchPublisher(Service):  # type: ignore[misc]  # mode is untyped here
    """Owns an idempotent acks=all producer; started and stopped with the faust app."""

    def __init__(self, **producer_options: object) -> None:
        super().__init__()
        self._options = producer_options
        self._partitions: dict[str, list[int]] = {}

    async def on_start(self) -> None:
        # aiokafka binds a producer to the running loop, so it is made here, not in __init__.
        self.producer = AIOKafkaProducer(**self._options)
        await self.producer.start()

    async def on_stop(self) -> None:
        await self.producer.stop()

    async def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return self._partitions[topic]

    async def publish(self, topic: str, records: Sequence[OutRecord], partition: int | None = None) -> None:
        """Send `records` (to `partition`, default: their keys' partitions); return once every one
        is acknowledged (acks=all), else raise."""
        if not records:
            return
        by_partition: dict[int, list[OutRecord]] = defaultdict(list)
        if partition is not None:
            by_partition[partition] = list(records)
        else:
            chosen = partitions_for([r[0] for r in records], await self.partitions(topic))
            for record, part in zip(records, chosen, strict=True):
                by_partition[part].append(record)
        pending = []
        for partition, items in by_partition.items():
            batch = self.producer.create_batch()
            for key, value, headers in items:
                while batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    pending.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
            pending.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
