"""The faust worker: agents for submissions and events, and the HTTP API.

At-least-once processing: `take_events` acks a batch only after the loop body finished, i.e.
after blobs are durable and the events they cause are acknowledged by the broker. Redelivered
records are harmless: the index store skips positions it has applied, and a resubmitted digest
becomes `ArtifactResubmitted`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import cast

import faust
import structlog
from faust.types import EventT
from faust.web import Request, Response, View

from locker import anchors, requests, signing
from locker.cas import BlobStore
from locker.config import Settings, max_message_bytes
from locker.digests import is_digest
from locker.errors import ArtifactNotFound, InvalidInput, LockerError
from locker.events import KINDS, encode
from projections import proofs
from projections.index import ArtifactRecord
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from streams import metrics
from streams.anchoring import Anchorer, last_anchor, read_anchors
from streams.kafka import fetch_value
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
        producer_linger=0.005,
        producer_max_request_size=max_message_bytes(settings.max_content_bytes),
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
    )
    submissions_topic = raw_topic(app, topics.submissions)
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

    async def anchor(correlation_id: str = "", new_chain_reason: str = "", continue_from: str = "") -> None:
        nonlocal since_anchor
        if anchorer is None:
            log.warning("anchoring is off: no signing key", key_file=str(settings.key_file))
            return
        since_anchor = 0
        await anchorer.create(correlation_id, new_chain_reason, continue_from)

    async def publish(out: Outbox) -> None:
        """Produce the batch's events and dead letters; return once the broker has them all."""
        await asyncio.gather(
            publisher.publish(topics.dlq, [(r.key, r.value, d.headers()) for r, d in out.dead]),
            publisher.publish(topics.events, [(key, encode(event), []) for key, event in out.events]),
        )

    @app.agent(submissions_topic)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for batch in batches(stream, INGEST_BATCH):
            out = await ingestor.process(_records(batch))
            await publish(out)
            ingestor.delivered(out)
            for record, letter in out.dead:
                log.warning(
                    "submission rejected",
                    reason=letter.reason,
                    detail=letter.detail,
                    partition=record.partition,
                    offset=record.offset,
                )

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
                else:
                    await anchor(command.command_id, command.new_chain_reason, command.continue_from)

    @app.timer(float(settings.integer("Anchors:Interval")))  # type: ignore[untyped-decorator]
    async def anchor_on_schedule() -> None:
        if anchorer is not None and anchorer.changed():
            await anchor()

    def not_found(view: View, what: str) -> Response:
        return view.json({"error": "not-found", "detail": what}, status=404)

    def indexed(view: View, artifact_id: str) -> ArtifactRecord | Response:
        """The index record of `artifact_id`, or the 400/404 response that says why not."""
        if not is_digest(artifact_id):
            detail = f"{artifact_id!r} is not sha256:<64 hex>"
            return view.json({"error": "invalid-digest", "detail": detail}, status=400)
        record = index.get(artifact_id)
        return record if record is not None else not_found(view, f"artifact {artifact_id} not found")

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = bool(app.consumer.assignment()) if app.consumer else False
            ready = assigned and not app.rebalancing
            body = {"status": "ok" if ready else "starting", "assigned": assigned}
            return self.json(body, status=200 if ready else 503)

    @app.page("/artifacts")
    class Artifacts(View):
        async def get(self, request: Request) -> Response:
            subject = request.query.get("subject")
            kind = request.query.get("kind")
            if subject:
                if not is_digest(subject):
                    return self.json({"error": "invalid-digest", "detail": subject}, status=400)
                ids = index.by_subject(subject)
            elif kind:
                if kind not in KINDS:
                    return self.json({"error": "invalid-kind", "detail": kind}, status=400)
                ids = index.by_kind(kind)
            else:
                return self.json(
                    {"error": "missing-query", "detail": "give ?subject=sha256:... or ?kind=..."},
                    status=400,
                )
            found = [index.get(artifact_id) for artifact_id in ids]
            return self.json({"artifacts": [r.public() for r in found if r is not None]})

    @app.page("/artifacts/{artifact_id}")
    class Artifact(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return record
            try:
                data = await asyncio.to_thread(blobs.read, artifact_id)
            except ArtifactNotFound:
                return self.json(
                    {"error": "blob-missing", "detail": f"{artifact_id} is indexed but its blob is missing"},
                    status=500,
                )
            return self.bytes(data, content_type=record.media_type or "application/octet-stream")

    @app.page("/artifacts/{artifact_id}/meta")
    class ArtifactMeta(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return record
            return self.json(record.public())

    def locker_error(view: View, error: LockerError) -> Response:
        status = {1: 404, 2: 400, 4: 503, 5: 400}.get(error.exit_code, 500)
        return view.json({"error": type(error).__name__, "detail": str(error)}, status=status)

    @app.page("/anchors")
    class Anchors(View):
        async def get(self, request: Request) -> Response:
            chain = anchors.decoded(await read_anchors(settings))
            return self.json({"anchors": [anchors.summary(i, a) for i, a in chain]})

    @app.page("/anchors/{anchor_id}")
    class Anchor(View):
        async def get(self, request: Request, anchor_id: str) -> Response:
            try:
                found = anchors.find(
                    await read_anchors(settings), None if anchor_id == "latest" else anchor_id
                )
            except LockerError as exc:
                return locker_error(self, exc)
            return self.json(anchors.full(*found))

    @app.page("/proofs/inclusion/{artifact_id}")
    class InclusionProof(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return record
            try:
                item, anchor = anchors.find(await read_anchors(settings), request.query.get("anchor"))
                value = await fetch_value(settings, topics.events, record.partition, record.offset)
                out = proofs.inclusion(trees, item, anchor, record.partition, record.offset, value)
            except LockerError as exc:
                return locker_error(self, exc)
            return self.json({"artifact_id": artifact_id, **out})

    @app.page("/proofs/consistency")
    class ConsistencyProof(View):
        async def get(self, request: Request) -> Response:
            old, new = request.query.get("old"), request.query.get("new")
            if not old or not new:
                return self.json(
                    {"error": "missing-query", "detail": "give ?old=<anchor>&new=<anchor>"}, status=400
                )
            try:
                stored = await read_anchors(settings)
                out = proofs.consistency(trees, anchors.find(stored, old), anchors.find(stored, new))
            except LockerError as exc:
                return locker_error(self, exc)
            return self.json(out)

    latest_anchor_at: list[float] = []  # filled on first scrape, then by the writer

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            if anchorer is not None and anchorer.last_created is not None:
                latest_anchor_at[:] = [anchorer.last_created.timestamp()]
            elif not latest_anchor_at:
                last = await last_anchor(settings)
                if last is not None:
                    latest_anchor_at.append(anchors.decode(last.raw).body.created_at.timestamp())
            sizes = {p: trees.tree_size(p) for p in trees.applied()}
            text = metrics.exposition(
                artifacts=index.count(),
                stored_bytes=index.total_bytes(),
                tree_sizes=sizes,
                anchor_age=(time.time() - latest_anchor_at[0]) if latest_anchor_at else None,
            )
            return self.text(text, content_type="text/plain; version=0.0.4")

    return app
