"""The ingest loop: submissions -> durable blobs -> events, on a plain aiokafka consumer.

It runs inside the faust worker (started and stopped with the app) but reads submissions with
aiokafka's batch `getmany` instead of a faust agent: faust's per-record stream machinery cost
about half of the worker's CPU per small artifact (README, "Performance"). At-least-once: the
group's offsets are committed only after the batch's blobs are durable and its events
acknowledged; a redelivered submission becomes `artifact.resubmitted`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from mode import Service

from locker.config import Settings, max_message_bytes
from streams.processors import IngestProcessor, Outbox, Record
from streams.topics import Topics

log = structlog.get_logger("stella.ingest")


class IngestService(Service):  # type: ignore[misc]  # mode is untyped here
    def __init__(
        self,
        settings: Settings,
        processor: IngestProcessor,
        publish: Callable[[Outbox], Awaitable[None]],
        batch: int,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.processor = processor
        self.publish = publish
        self.batch = batch
        self.consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        settings = self.settings
        self.consumer = AIOKafkaConsumer(
            Topics(settings.topic_prefix).submissions,
            bootstrap_servers=settings.bootstrap,
            group_id=f"{settings.group_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max_message_bytes(settings.max_content_bytes),
            fetch_max_bytes=64 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        await self.consumer.start()
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @property
    def assigned(self) -> bool:
        return self.consumer is not None and bool(self.consumer.assignment())

    async def _run(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        while not self.should_stop:
            try:
                fetched = await consumer.getmany(timeout_ms=200, max_records=self.batch)
                records = [
                    Record(r.topic, r.partition, r.offset, r.key, r.value or b"")
                    for batch in fetched.values()
                    for r in batch
                ]
                if not records:
                    continue
                out = await self.processor.process(records)
                await self.publish(out)
                self.processor.delivered(out)
                await consumer.commit()
                for record, letter in out.dead:
                    log.warning(
                        "submission rejected",
                        reason=letter.reason,
                        detail=letter.detail,
                        partition=record.partition,
                        offset=record.offset,
                    )
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:  # the batch is not committed: it comes back after a rejoin
                log.error("ingest batch failed; it will be redelivered", error=str(exc))
                await asyncio.sleep(1.0)
