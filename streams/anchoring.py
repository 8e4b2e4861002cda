"""The single anchor writer: runs inside the leader (`streams.leadership`), serialised by a lock.

It waits until the chain projection holds every record on `evidence.anchors` (one partition),
takes the latest anchor from it and every events partition's head from the Merkle store, signs,
and appends; the next anchor links to the bytes of the one before. O(partitions), whatever the
history. `read_records` and `read_anchors` read the whole topic, for full verification only.

Appends go through `AnchorWriter`, a transactional producer under one transactional id per locker
(`streams.topics.anchor_writer_id`): a new leader claims that id, the broker bumps its epoch, and
from then on the broker refuses every append of an earlier leader (`ProducerFenced`), so two
workers never both extend the chain. Readers of `evidence.anchors` read committed records only.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from locker import anchors, signing
from locker.anchors import AnchorBody, AnchorCreated, AnchorRecovered, PartitionHead, StoredAnchor
from locker.config import Settings
from locker.errors import InvalidInput, Refused
from locker.files import write_durably
from locker.requests import RecoverAnchor
from projections.anchor_store import AnchorStore
from projections.merkle_store import MerkleStore
from streams.kafka import read_to_end
from streams.publisher import BatchPublisher
from streams.runtime import Loop
from streams.topics import Topics

log = structlog.get_logger("stella.anchors")


async def read_records(settings: Settings) -> list[StoredAnchor]:
    """Every record on `evidence.anchors`, in log order, recovery records included."""
    out: list[StoredAnchor] = []
    async for records in read_to_end(settings, Topics(settings.topic_prefix).anchors):
        out += [StoredAnchor(r.offset, r.value) for r in records]
    return out


async def read_anchors(settings: Settings) -> list[StoredAnchor]:
    """The anchors, in log order, with recovered records substituted for damaged ones."""
    return anchors.effective_chain(await read_records(settings))[0]


def back_up(settings: Settings, raw: bytes, anchor: AnchorCreated, vkey: str) -> None:
    """Keep a copy of an anchor outside the log, for `stella evidence anchor recover`."""
    item = StoredAnchor(-1, raw)
    document = anchors.export_document(item, anchor, vkey)
    path = settings.anchor_backup_path / f"{item.id.removeprefix('sha256:')}.json"
    write_durably(path, json.dumps(document, indent=2).encode() + b"\n")


def partition_heads(trees: MerkleStore, partitions: list[int]) -> tuple[PartitionHead, ...]:
    """Each partition's tree size, root and last offset: O(partitions), whatever the history."""
    applied = trees.applied()
    out = []
    for partition in partitions:
        frontier = trees.frontier(partition)
        out.append(
            PartitionHead(
                partition=partition,
                tree_size=frontier.size,
                root=frontier.root(),
                last_offset=applied.get(partition, -1),
            )
        )
    return tuple(out)


class AnchorWriter:
    """The leader's producer of `evidence.anchors`; see the module's doc."""

    def __init__(self, transactional_id: str, **producer_options: object) -> None:
        self.transactional_id = transactional_id
        self.options = producer_options
        self.producer: AIOKafkaProducer | None = None

    async def claim(self) -> None:
        """Take the transactional id (fencing any earlier holder) unless this writer holds it."""
        if self.producer is not None:
            return
        producer = AIOKafkaProducer(
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=15_000,  # a leader that died mid-append holds readers back this long
            **self.options,
        )
        await producer.start()
        try:
            async with producer.transaction():  # gets the id's new epoch: the broker fences the old one
                pass
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer
        log.info("anchor writer claimed", transactional_id=self.transactional_id)

    async def release(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    async def append(self, topic: str, key: bytes, value: bytes) -> int:
        """Append one record in a transaction of its own; returns its offset. `Refused` if this
        worker does not hold the writer or was fenced by a newer leader."""
        if self.producer is None:
            raise Refused("this worker is not the anchor writer (not the leader)")
        sent: asyncio.Future[Any] | None = None
        try:
            async with self.producer.transaction():
                sent = await self.producer.send(topic, value, key=key, partition=0)
            return int((await sent).offset)
        except ProducerFenced:
            if sent is not None and sent.done() and not sent.cancelled():
                sent.exception()  # the same fence: retrieved, so asyncio does not report it again
            log.warning("anchor writer fenced: a newer leader writes anchors", id=self.transactional_id)
            await self.release()
            raise Refused("this worker's anchor writer was fenced: a newer leader writes anchors") from None


class Anchorer:
    def __init__(
        self,
        settings: Settings,
        trees: MerkleStore,
        chain: AnchorStore,
        chain_loop: Loop,
        signer: signing.Signer,
        publisher: BatchPublisher,
        writer: AnchorWriter,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.trees = trees
        self.chain = chain
        self.chain_loop = chain_loop
        self.signer = signer
        self.publisher = publisher
        self.topics = Topics(settings.topic_prefix)
        self._lock = asyncio.Lock()
        self.last_sizes: dict[int, int] | None = None
        self.last_created: datetime | None = None

    async def changed(self) -> bool:
        """True if some tree grew since the last anchor (read from the log after a restart)."""
        if self.last_sizes is None:
            await self.chain_loop.wait_caught_up(self.settings.timeout)
            last = self.chain.latest()
            if last is None:
                return True
            self.last_sizes = {h.partition: h.tree_size for h in last.anchor().body.partitions}
        sizes = {p: self.trees.tree_size(p) for p in self.trees.applied()}
        return sizes != {p: self.last_sizes.get(p, 0) for p in sizes}

    async def create(
        self, correlation_id: str = "", new_chain_reason: str = "", continue_from: str = ""
    ) -> AnchorCreated:
        """Sign and append an anchor; with `new_chain_reason`, the first of a new chain that
        continues anchor `continue_from` (default: the last record)."""
        async with self._lock:
            # Claimed before the chain is read: any append of an earlier writer is committed by
            # then (and read below) or fenced, so this anchor links to the chain's true head.
            await self.writer.claim()
            await self.chain_loop.wait_caught_up(self.settings.timeout)
            latest = self.chain.latest()
            previous = None if latest is None else latest.stored
            if continue_from and previous is not None and previous.id != continue_from:
                previous = self.chain.find(continue_from)[0]
            partitions = await self.publisher.partitions(self.topics.events)
            heads = partition_heads(self.trees, partitions)
            body = self._body(previous, heads, new_chain_reason)
            anchor = anchors.sign(body, self.signer, correlation_id)
            raw = anchors.encode(anchor)
            offset = await self.writer.append(self.topics.anchors, body.chain_id.encode(), raw)
            self._back_up(raw, anchor)
            # Committed is not yet visible: the broker writes the transaction's marker after the
            # commit returns, and until then a read-committed reader's end is before the anchor.
            # The next anchor must link to this one: wait until the chain store has it.
            await self.chain_loop.wait_applied(0, offset, self.settings.timeout)
            self.last_sizes = {h.partition: h.tree_size for h in heads}
            self.last_created = body.created_at
            log.info(
                "anchor created",
                chain=body.chain_id,
                sequence=body.sequence,
                sizes={h.partition: h.tree_size for h in heads},
            )
            return anchor

    async def claim(self) -> None:
        """This worker was elected: take the anchor writer, then read the chain from the log
        again (the last anchors may be another worker's)."""
        async with self._lock:
            await self.writer.claim()
            self.last_sizes = None

    async def release(self) -> None:
        async with self._lock:
            await self.writer.release()

    def _back_up(self, raw: bytes, anchor: AnchorCreated) -> None:
        back_up(self.settings, raw, anchor, self.signer.verifier.vkey)

    async def recover(self, command: RecoverAnchor) -> AnchorRecovered:
        """Append a recovery record after checking the copy's signature once more."""
        anchor = anchors.decode(command.record)
        found = anchors.check_anchor(anchor, anchors.anchor_id(command.record), self.signer.verifier)
        if found:
            raise InvalidInput("invalid-anchor", "; ".join(f"{f.check}: {f.detail}" for f in found))
        recovery = AnchorRecovered(
            record=command.record,
            replaces_offset=command.replaces_offset,
            reason=command.reason,
            recovered_at=datetime.now(UTC),
            correlation_id=command.command_id,
        )
        async with self._lock:
            await self.writer.claim()
            offset = await self.writer.append(
                self.topics.anchors, anchor.body.chain_id.encode(), anchors.encode_recovery(recovery)
            )
            await self.chain_loop.wait_applied(0, offset, self.settings.timeout)
        log.info("anchor recovered", offset=command.replaces_offset, anchor=anchors.anchor_id(command.record))
        return recovery

    def _body(
        self, previous: StoredAnchor | None, heads: tuple[PartitionHead, ...], new_chain_reason: str
    ) -> AnchorBody:
        return anchors.next_body(
            previous,
            heads,
            origin=self.settings.origin,
            created_at=datetime.now(UTC),
            new_chain_id=str(uuid.uuid4()),
            new_chain_reason=new_chain_reason,
        )
