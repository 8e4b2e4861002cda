"""The commands loop, and with it the election of the locker's leader.

All of a locker's workers join one consumer group on `evidence.commands`, `Kafka:GroupId` +
`-commands`, whose assignor (`OneOwner`) gives every partition to one member: that worker is the
leader. It runs the commands, one at a time in log order, and it alone writes anchors (the anchor
timer and `Anchors:EveryEvents` ask `leading` first). A new leader is chosen by Kafka when the
leader leaves the group or misses its session (10 s); the assignor keeps the current leader when
a worker joins, so leadership moves only when the leader goes.

Being assigned the partitions is not proof enough to write anchors: a leader that stalled past
its session still believes it leads until it polls again. `on_elected` therefore claims the anchor
writer's transactional id (`streams.anchoring.AnchorWriter`), which fences the writer of any
earlier leader at the broker.

Commands are at least once, like the other loops: offsets are committed after their commands ran,
and a command delivered again after a crash or a change of leader does what its handler does with
a repeat (most are idempotent; see `streams.app`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from mode import Service

from streams.kafka import Record

log = structlog.get_logger("stella.leadership")

LEADING = b"leading"


class OneOwner(AbstractPartitionAssignor):  # type: ignore[misc]  # aiokafka is untyped here
    """Every partition of the subscribed topics to one member: the one that led before if it is
    still in the group (its metadata says `leading`), else the member with the smallest id."""

    name = "stella-one-owner"
    version = 0

    def __init__(self) -> None:
        self.leading = False  # what this member tells the group when it (re)joins

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, list(topics), LEADING if self.leading else b"")

    @classmethod
    def assign(
        cls, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owner = choose_owner({member: meta.user_data for member, meta in members.items()})
        topics = sorted({topic for meta in members.values() for topic in meta.subscription})
        owned = [(topic, sorted(cluster.partitions_for_topic(topic) or ())) for topic in topics]
        return {
            member: ConsumerProtocolMemberAssignment(cls.version, owned if member == owner else [], b"")
            for member in members
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        return None


def choose_owner(members: Mapping[str, bytes]) -> str:
    """The member that keeps or gets every partition: the earlier leader if one claims it (the
    smallest id if, after a partition of the group, several do), else the smallest id."""
    leaders = sorted(member for member, data in members.items() if data == LEADING)
    return leaders[0] if leaders else min(members)


Run = Callable[[Record], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped here
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.leadership.leading = False  # nothing leader-only starts until the group has settled

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.leadership.assigned(bool(assigned))


class Leadership(Service):  # type: ignore[misc]  # mode is untyped here
    """The commands consumer of this worker; `leading` says whether it is the leader now."""

    def __init__(
        self,
        *,
        topic: str,
        group_id: str,
        consumer_options: dict[str, object],
        run: Run,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        seed_group: str | None = None,
    ) -> None:
        super().__init__()
        self.topic = topic
        self.group_id = group_id
        self.consumer_options = consumer_options
        self.run = run
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.seed_group = seed_group
        self.assignor = OneOwner()
        self.leading = False
        self.joined = False  # the group gave out its partitions once (to this worker or another)
        self.unseeded = False  # assigned partitions wait, paused, for `_seed` to succeed
        self.consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            partition_assignment_strategy=(self.assignor,),
            **self.consumer_options,
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        self.leading = False
        if self.consumer is not None:
            await self.consumer.stop()  # leaves the group: another worker leads at once
        await self.on_deposed()

    async def assigned(self, owner: bool) -> None:
        """After every rebalance: this worker leads if it got the partitions."""
        was = self.assignor.leading
        self.assignor.leading = owner
        if owner:
            await self._try_seed()
            if not was:
                log.info("elected leader", group=self.group_id)
            try:
                await self.on_elected()  # claims the anchor writer (again, if it was fenced meanwhile)
            except Exception as exc:  # noqa: BLE001 - the leader still runs commands; anchoring retries
                log.error(
                    "elected, but could not take on the leader's duties", error=f"{type(exc).__name__}: {exc}"
                )
        elif was:
            log.info("no longer the leader", group=self.group_id)
            await self.on_deposed()
        self.leading = owner
        self.joined = True

    async def _try_seed(self) -> bool:
        """`_seed` the assigned partitions; if the broker fails it (it may have just come back),
        keep them paused, for the loop to try again: no command runs from an unseeded position."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        try:
            await self._seed(assigned)
        except KafkaError as exc:
            log.warning("commands: could not read the committed offsets; retrying", error=str(exc))
            self.consumer.pause(*assigned)
            self.unseeded = True
            return False
        self.consumer.resume(*assigned)
        self.unseeded = False
        return True

    async def _seed(self, assigned: set[TopicPartition]) -> None:
        """Start a partition this group never committed where `seed_group` (the group that ran
        commands before this loop did: faust's, `Kafka:GroupId`) left off, so that an upgraded
        locker does not run its old commands again; at the beginning if neither committed."""
        assert self.consumer is not None
        fresh = [tp for tp in sorted(assigned) if await self.consumer.committed(tp) is None]
        if not fresh or self.seed_group is None:
            return
        seeded = AIOKafkaConsumer(group_id=self.seed_group, enable_auto_commit=False, **self.consumer_options)
        await seeded.start()
        try:
            for tp in fresh:
                offset = await seeded.committed(tp)
                if offset is not None:
                    self.consumer.seek(tp, offset)
                    await self.consumer.commit({tp: OffsetAndMetadata(offset, "")})
                    log.info(
                        "commands resume where the old group left off", partition=tp.partition, offset=offset
                    )
        finally:
            await seeded.stop()

    async def _run(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        failures = 0
        while not self.should_stop:
            try:
                if self.unseeded and not await self._try_seed():
                    await asyncio.sleep(1.0)
                    continue
                fetched = await consumer.getmany(timeout_ms=200, max_records=16)
                for tp, records in fetched.items():
                    for r in records:
                        await self.run(Record(r.topic, r.partition, r.offset, r.key, r.value or b""))
                    await consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "")})
                failures = 0
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:  # a rebalance under way, or the broker gone: go on after a pause
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), 30.0)
                log.warning("commands loop: broker error; retrying", error=str(exc), retry_in=delay)
                await self._rewind()
                await asyncio.sleep(delay)
            except Exception as exc:  # anything else stops the service, loudly
                log.critical(
                    "the commands loop cannot go on; the service stops", error=repr(exc), exc_info=exc
                )
                await self.crash(exc)
                return

    async def _rewind(self) -> None:
        """Back to the committed offsets: commands fetched but not committed run again."""
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            try:
                committed = await self.consumer.committed(tp)
            except KafkaError:
                return
            if committed is not None:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition), committed)
            else:
                await self.consumer.seek_to_beginning(tp)
