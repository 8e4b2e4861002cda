"""The faust worker: the ingest loop, agents for events and commands, anchoring, the HTTP API.

At-least-once processing everywhere: the ingest loop commits a batch of submissions only after
its blobs are durable and its events acknowledged (`streams/ingest_service.py`); the agents'
`take_events` acks a batch only after the loop body finished. Redelivered records are harmless:
the stores skip positions they have applied, and a resubmitted digest becomes
`ArtifactResubmitted`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import cast

import faust
import structlog
from aiokafka.errors import KafkaError
from faust.types import EventT

from locker import requests, signing
from locker.cas import BlobStore
from locker.config import Settings, max_message_bytes
from locker.errors import InvalidInput, LockerError
from locker.events import encode
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from streams.anchoring import Anchorer
from streams.api import install_api
from streams.ingest_service import IngestService
from streams.processors import IndexProcessor, IngestProcessor, Outbox, Record, dead_letter
from streams.publisher import BatchPublisher
from streams.topics import Topics

log = structlog.get_logger("stella.worker")

INGEST_BATCH = 1024
INDEX_BATCH = 2000
WITHIN = 0.02


def _records(batch: Sequence[EventT[bytes]]) -> list[Record]:
    return [
        Record(
            topic=ev.message.topic,
            partition=ev.message.partition,
            offset=ev.message.offset,
            key=ev.message.key,
            value=ev.message.value or b"",
        )
        for ev in batch
    ]


def batches(stream: faust.StreamT[bytes], size: int) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """Up to `size` events at a time; they are acked only after the loop body has run."""
    return cast(faust.Stream[bytes], stream).take_events(size, within=WITHIN)


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic whose keys and values stay bytes: decoding is ours, so bad bytes reach the DLQ."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def create_app(
    settings: Settings,
    blobs: BlobStore,
    index: IndexStore,
    trees: MerkleStore,
    signer: signing.Signer | None = None,
) -> faust.App:
    topics = Topics(settings.topic_prefix)
    host, port = str(settings.get("Service:Host")), settings.integer("Service:Port")
    app = faust.App(
        settings.group_id,
        broker=f"kafka://{settings.bootstrap}",
        datadir=str(settings.state_path / "faust"),
        web_enabled=True,
        web_bind=host,
        web_host=host,
        web_port=port,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=max_message_bytes(settings.max_content_bytes),
        producer_acks=-1,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
    )
    events_topic = raw_topic(app, topics.events)
    ingestor = IngestProcessor(blobs, index, settings.max_content_bytes)
    indexer = IndexProcessor(index)

    publisher = BatchPublisher(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=max_message_bytes(settings.max_content_bytes),
    )
    app.add_dependency(publisher)
    commands_topic = raw_topic(app, topics.commands)
    anchorer = None if signer is None else Anchorer(settings, trees, signer, publisher)
    every_events = settings.integer("Anchors:EveryEvents")
    since_anchor = 0

    async def anchor(correlation_id: str = "", new_chain_reason: str = "", continue_from: str = "") -> str:
        """Create an anchor; returns "" or why it could not. Never raises: a failed anchor must not
        stop the agent that asked for it (the timer, the projection, a command)."""
        nonlocal since_anchor
        if anchorer is None:
            log.warning("anchoring is off: no signing key", key_file=str(settings.key_file))
            return f"anchoring is off: no signing key at {settings.key_file}"
        since_anchor = 0
        try:
            await anchorer.create(correlation_id, new_chain_reason, continue_from)
        except (LockerError, KafkaError) as exc:
            log.error("anchoring failed", error=str(exc))
            return str(exc)
        return ""

    async def publish(out: Outbox) -> None:
        """Produce the batch's events and dead letters; return once the broker has them all."""
        await asyncio.gather(
            publisher.publish(topics.dlq, [(r.key, r.value, d.headers()) for r, d in out.dead]),
            publisher.publish(topics.events, [(key, encode(event), []) for key, event in out.events]),
        )

    ingest = IngestService(settings, ingestor, publish, INGEST_BATCH)
    app.add_dependency(ingest)

    @app.agent(events_topic)
    async def project(stream: faust.StreamT[bytes]) -> None:
        nonlocal since_anchor
        async for batch in batches(stream, INDEX_BATCH):
            records = _records(batch)
            trees.apply([(r.partition, r.offset, r.value) for r in records])  # every record is a leaf
            applied, dead = indexer.decode(records)
            if dead:
                await publish(Outbox(dead=dead))
                for record, letter in dead:
                    log.warning(
                        "invalid event skipped",
                        reason=letter.reason,
                        partition=record.partition,
                        offset=record.offset,
                    )
            indexer.apply(applied)
            since_anchor += len(records)
            if every_events and since_anchor >= every_events:
                await anchor()

    async def recover(record: Record, command: requests.RecoverAnchor) -> None:
        if anchorer is None:
            log.warning("anchoring is off: no signing key", key_file=str(settings.key_file))
            return
        try:
            await anchorer.recover(command)
        except InvalidInput as error:
            await publish(Outbox(dead=[(record, dead_letter(record, error))]))

    @app.agent(commands_topic)
    async def run_commands(stream: faust.StreamT[bytes]) -> None:
        async for batch in batches(stream, 16):
            for record in _records(batch):
                try:
                    command = requests.decode(record.value)
                except InvalidInput as error:
                    await publish(Outbox(dead=[(record, dead_letter(record, error))]))
                    continue
                if isinstance(command, requests.RecoverAnchor):
                    await recover(record, command)
                elif failed := await anchor(
                    command.command_id, command.new_chain_reason, command.continue_from
                ):
                    refusal = InvalidInput("anchoring-failed", failed)
                    await publish(Outbox(dead=[(record, dead_letter(record, refusal))]))

    @app.timer(float(settings.integer("Anchors:Interval")))  # type: ignore[untyped-decorator]
    async def anchor_on_schedule() -> None:
        try:
            if anchorer is not None and await anchorer.changed():
                await anchor()
        except (LockerError, KafkaError) as exc:
            log.error("scheduled anchoring failed", error=str(exc))

    install_api(
        app,
        settings=settings,
        blobs=blobs,
        index=index,
        trees=trees,
        anchorer=anchorer,
        ingesting=lambda: ingest.assigned,
    )
    return app
