"""One batch runtime for every high-volume loop (ingest, projections, and later ones).

A loop repeats: `getmany` -> a handler decides from plain `Record`s and returns an `Outbox` ->
the outbox's blobs are made durable -> its records are published (idempotent, acks=all) and
acknowledged -> its store writes are applied -> the consumed offsets are committed (loops in a
consumer group). Handlers and store writes run in a worker thread, so neither hashing nor RocksDB
stalls the event loop that serves the HTTP API.

Where a loop reads from: a loop with `tracked` stores seeks every partition it is given to the
stores' applied position + 1 (eventsourcing's tracking records), on start and on every
assignment; the stores, not the group's committed offsets, say what was applied. A loop without
stores resumes from its group's committed offsets (at-least-once: nothing is committed before its
outcome is durable and acknowledged).

Failures: a broker or storage outage rewinds the loop to the start of the failed batch and retries
with back-off (state `retrying`); anything else (a bug, a damaged store) is logged on one line
with the loop's name and crashes the service, which exits non-zero. `status()` feeds `/healthz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service

from locker.dlq import DeadLetter
from locker.errors import InvalidInput, TimedOut, Unreachable
from projections.tracking import TrackedStore
from streams.kafka import Record, denied

log = structlog.get_logger("stella.runtime")

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Message:
    """One record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


@dataclass
class Outbox:
    """What a handler decided for a batch; the runtime carries it out in this order.

    `blobs` are made durable first, then `messages` and `dead` letters are published and
    acknowledged, then `writes` run in order (each writes its rows and its applied position in
    one batch), then the batch is committed. `counts` (a counter name of `streams.metrics`
    and its label -> how many) go to /metrics once all that is done.
    """

    blobs: list[tuple[str, bytes]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    dead: list[tuple[Record, DeadLetter]] = field(default_factory=list)
    writes: list[Callable[[], object]] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)


def dead_letter(record: Record, error: InvalidInput) -> DeadLetter:
    return DeadLetter(
        reason=error.reason,
        detail=error.detail,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        rejected_at=datetime.now(UTC),
    )


class Counting(Protocol):
    """What the runtime tells /metrics (`streams.metrics.Metrics`)."""

    def carried_out(self, loop: str, out: Outbox) -> None:
        """A batch of `loop` was carried out as `out` says."""


class Publisher(Protocol):
    """What the runtime needs of a producer (`streams.publisher.BatchPublisher`)."""

    async def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes, Headers]]) -> None:
        """Send `records`; return once the broker acknowledged every one, else raise."""


# Batches carried out at once behind the one being decided.
DEPTH = 2
# The stages of a batch, timed (wall seconds) for /healthz and /metrics.
STAGES = ("decide", "blobs", "publish", "writes", "commit")

Handler = Callable[[list[Record]], Outbox]
BlobSink = Callable[[list[tuple[str, bytes]]], Awaitable[None]]


class _Joined(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped here
    """A group loop has joined once it got its partitions (maybe none: more workers than
    partitions); a tracked one seeks them to its stores' positions."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.loop.joined = True
        self.loop.seek_to_tracked(assigned)


class Loop(Service):  # type: ignore[misc]  # mode is untyped here
    """One batch loop, started and stopped with the faust app (`app.add_dependency`)."""

    def __init__(
        self,
        name: str,
        *,
        topic: str,
        handler: Handler,
        publisher: Publisher,
        dlq_topic: str,
        consumer_options: dict[str, object],
        group_id: str | None = None,
        group_instance_id: str | None = None,
        tracked: Sequence[TrackedStore] = (),
        blob_sink: BlobSink | None = None,
        on_batch: Callable[[list[Record]], Awaitable[None]] | None = None,
        max_records: int = 2000,
    ) -> None:
        super().__init__()
        self.name = name
        self.topic = topic
        self.handler = handler
        self.publisher = publisher
        self.dlq_topic = dlq_topic
        self.consumer_options = consumer_options
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.tracked = tuple(tracked)
        self.blob_sink = blob_sink
        self.on_batch = on_batch
        self.max_records = max_records
        self.counting: Counting | None = None  # set by the app: what each batch did, for /metrics
        self.consumer: AIOKafkaConsumer | None = None
        self.condition = "starting"
        self.joined = False  # a group loop got its partitions, maybe none
        self.error = ""
        self.batches = 0
        self.records = 0
        self.last_batch_at: float | None = None
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._blob_turn = asyncio.Lock()
        self._failures = 0
        # Each partition's position when the loop last found nothing more to fetch and had carried
        # out every batch: everything before it is done, transaction markers included (which the
        # stores' applied offsets never pass, as no record is delivered for them).
        self.settled: dict[int, int] = {}

    # Lifecycle.
    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            group_instance_id=self.group_instance_id,
            enable_auto_commit=False,
            **self.consumer_options,
        )
        await self.consumer.start()
        if self.group_id is None:
            await self._assign_all()
        else:
            self.consumer.subscribe([self.topic], listener=_Joined(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _assign_all(self) -> None:
        assert self.consumer is not None
        await self.consumer._client.force_metadata_update()
        denied(self.consumer, self.topic)
        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or ())
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(tps)
        self.seek_to_tracked(tps)

    def seek_to_tracked(self, tps: Sequence[TopicPartition]) -> None:
        """Position each partition right after what every tracked store has applied."""
        assert self.consumer is not None
        if not self.tracked:
            return
        for tp in tps:
            offset = min(store.resume_at(tp.partition) for store in self.tracked)
            self.consumer.seek(tp, offset)
        log.info(
            "loop positioned",
            loop=self.name,
            positions={tp.partition: min(s.resume_at(tp.partition) for s in self.tracked) for tp in tps},
        )

    async def wait_caught_up(self, within: float) -> None:
        """Return once the tracked stores hold every record on the topic now; else `TimedOut`."""
        assert self.consumer is not None
        ends = await self.consumer.end_offsets(sorted(self.consumer.assignment()))
        deadline = time.monotonic() + within
        while any(self._done(tp.partition) < end for tp, end in ends.items()):
            if self.condition == "failed" or time.monotonic() > deadline:
                raise TimedOut(f"the {self.name} loop is not caught up with {self.topic} ({self.condition})")
            await asyncio.sleep(0.005)

    async def wait_applied(self, partition: int, offset: int, within: float) -> None:
        """Return once every tracked store has applied the record at `offset`; else `TimedOut`."""
        deadline = time.monotonic() + within
        while min(store.resume_at(partition) for store in self.tracked) <= offset:
            if self.condition == "failed" or time.monotonic() > deadline:
                raise TimedOut(f"the {self.name} loop has not applied {self.topic}[{partition}]@{offset}")
            await asyncio.sleep(0.005)

    # Health.
    @property
    def assigned(self) -> bool:
        return self.consumer is not None and bool(self.consumer.assignment())

    async def lag(self) -> dict[int, int]:
        """Records on each assigned partition not yet carried out: past what the tracked stores
        applied, else past the consumer's position (what it has fetched). A partition no fetch has
        answered for yet is left out."""
        consumer = self.consumer
        if consumer is None:
            return {}
        lag = {}
        for tp in sorted(consumer.assignment()):
            end = consumer.highwater(tp)
            if end is None:
                continue
            if self.tracked:
                done = self._done(tp.partition)
            else:
                try:  # known at once once the partition is positioned
                    done = await asyncio.wait_for(consumer.position(tp), 0.05)
                except (TimeoutError, KafkaError):
                    continue
            lag[tp.partition] = max(0, end - done)
        return lag

    def _done(self, partition: int) -> int:
        """Where the partition's records are carried out up to (tracked loops)."""
        applied = min(store.resume_at(partition) for store in self.tracked)
        return max(applied, self.settled.get(partition, 0))

    async def _settle(self) -> None:
        """Nothing fetched and nothing in flight: note every partition's position. Called right
        after an empty `getmany`; `position` of a positioned partition returns without waiting."""
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            with contextlib.suppress(KafkaError):
                self.settled[tp.partition] = await self.consumer.position(tp)

    def status(self) -> dict[str, object]:
        return {
            "state": self.condition,
            "error": self.error,
            "assigned": self.assigned,
            "batches": self.batches,
            "records": self.records,
            "stage_seconds": {stage: round(t, 3) for stage, t in self.seconds.items()},
            "last_batch_age_s": None
            if self.last_batch_at is None
            else round(time.monotonic() - self.last_batch_at, 3),
        }

    async def _run(self) -> None:
        """The loop until the service stops; whatever ends it otherwise ends the service, loudly
        (also a failure while rewinding for a retry)."""
        try:
            await self._pipeline()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything unexpected stops the service, loudly
            await self._give_up(exc)

    # The loop as a pipeline: while batch N is published and applied, batch N+1's blobs are made
    # durable and batch N+2 is fetched and decided, so disk, broker and CPU work overlap. Each
    # stage keeps batch order: blobs one batch at a time, publishing only after the batch before.
    async def _pipeline(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        in_flight: deque[_InFlight] = deque()
        while not self.should_stop:
            fetched: dict[TopicPartition, list[Any]] = {}
            try:
                fetched = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if self.condition == "starting" and (self.assigned or self.joined):
                    self.condition = "running"
                batch = [
                    Record(r.topic, r.partition, r.offset, r.key, r.value or b"")
                    for records in fetched.values()
                    for r in records
                ]
                if not batch and not in_flight and self.tracked:
                    # Before anything else runs: once other tasks run, the fetcher may buffer
                    # records not yet returned, and the positions would pass them.
                    await self._settle()
                while in_flight and (in_flight[0].task.done() or not batch or len(in_flight) >= DEPTH):
                    await in_flight[0].task  # raises what carrying it out raised
                    in_flight.popleft()
                if not batch:
                    continue
                with self._timed("decide"):
                    out = await asyncio.to_thread(self.handler, batch)
                before = in_flight[-1].task if in_flight else None
                task = asyncio.ensure_future(self._carry_out(batch, out, fetched, before))
                in_flight.append(_InFlight(fetched, task))
            except asyncio.CancelledError:
                raise
            except (KafkaError, Unreachable) as exc:
                unsettled = [item.task for item in in_flight]
                await asyncio.gather(*unsettled, return_exceptions=True)  # settle before rewinding
                await self._retry_later(exc, [item.fetched for item in in_flight] + [fetched])
                in_flight.clear()

    async def _carry_out(
        self,
        batch: list[Record],
        out: Outbox,
        fetched: dict[TopicPartition, list[Any]],
        before: asyncio.Future[None] | None,
    ) -> None:
        if out.blobs and self.blob_sink is not None:
            async with self._blob_turn:
                with self._timed("blobs"):
                    await self.blob_sink(out.blobs)
        if before is not None:
            await before  # publish, apply and commit in batch order; a failure before fails this too
        with self._timed("publish"):
            await self._publish(out)
        if out.writes:
            with self._timed("writes"):
                await asyncio.to_thread(_run_all, out.writes)
        if self.group_id is not None:
            assert self.consumer is not None
            with self._timed("commit"):
                await self.consumer.commit(
                    {
                        tp: OffsetAndMetadata(records[-1].offset + 1, "")
                        for tp, records in fetched.items()
                        if records
                    }
                )
        for record, letter in out.dead:
            log.warning(
                "record rejected",
                loop=self.name,
                reason=letter.reason,
                detail=letter.detail[:200],
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
        if self.counting is not None:
            self.counting.carried_out(self.name, out)
        self.batches += 1
        self.records += len(batch)
        self.last_batch_at = time.monotonic()
        self.condition, self.error, self._failures = "running", "", 0
        if self.on_batch is not None:
            await self.on_batch(batch)

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    async def _publish(self, out: Outbox) -> None:
        by_topic: dict[str, list[tuple[bytes | None, bytes, Headers]]] = {}
        for m in out.messages:
            by_topic.setdefault(m.topic, []).append((m.key, m.value, m.headers))
        if out.dead:
            by_topic.setdefault(self.dlq_topic, []).extend(
                (record.key, record.value, letter.headers()) for record, letter in out.dead
            )
        await asyncio.gather(*(self.publisher.publish(topic, rs) for topic, rs in by_topic.items()))

    async def _retry_later(self, exc: Exception, in_flight: list[dict[TopicPartition, list[Any]]]) -> None:
        """Rewind to the first record of every batch not carried out and try again after a pause."""
        self._failures += 1
        delay = min(0.5 * 2 ** (self._failures - 1), 30.0)
        self.condition, self.error = "retrying", str(exc)
        log.error("batch failed; retrying", loop=self.name, error=str(exc), retry_in=delay)
        assert self.consumer is not None
        starts: dict[TopicPartition, int] = {}
        for fetched in in_flight:
            for tp, records in fetched.items():
                if records:
                    starts[tp] = min(records[0].offset, starts.get(tp, records[0].offset))
        assigned = self.consumer.assignment()
        for tp, offset in starts.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)
        await asyncio.sleep(delay)

    async def _give_up(self, exc: Exception) -> None:
        self.condition, self.error = "failed", f"{type(exc).__name__}: {exc}"
        log.critical("loop cannot go on; the service stops", loop=self.name, error=self.error, exc_info=exc)
        await self.crash(exc)


@dataclass
class _InFlight:
    """A batch being carried out, and what was fetched for it (to rewind to on failure)."""

    fetched: dict[TopicPartition, list[Any]]
    task: asyncio.Future[None]


def _run_all(writes: list[Callable[[], object]]) -> None:
    for write in writes:
        write()
