"""aiokafka plumbing shared by the CLI, the worker's start-up and tests.

Broker errors are turned into `BrokerUnavailable` here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from locker.config import Settings, max_message_bytes
from locker.errors import BrokerUnavailable, Refused
from streams.topics import specs

DENIED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


@contextlib.asynccontextmanager
async def broker_errors(settings: Settings) -> AsyncIterator[None]:
    try:
        yield
    except DENIED as exc:
        who = settings.principal
        raise Refused(
            f"Kafka at {settings.bootstrap} refused the {who} principal ({settings.kafka_user(who)}): "
            f"{type(exc).__name__}; its ACLs do not allow this"
        ) from None
    except KafkaConnectionError as exc:
        if await login_refused(settings):
            who = settings.principal
            raise Refused(
                f"Kafka at {settings.bootstrap} did not accept the login of the {who} principal "
                f"({settings.kafka_user(who)}): check {settings.kafka_credentials_path}/{who}.password "
                "and Kafka:SaslMechanism"
            ) from None
        raise BrokerUnavailable(f"Kafka at {settings.bootstrap} is unreachable: {exc}") from None
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {settings.bootstrap}: {exc}") from None


async def login_refused(settings: Settings) -> bool:
    """Did the first bootstrap broker refuse this process's SASL login? aiokafka's clients report a
    refused login only as "Unable to bootstrap", so one connection is made again to tell why."""
    auth = settings.kafka_auth()
    if not auth.sasl:
        return False
    host, _, port = settings.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        conn = await create_conn(host.strip("[]"), int(port), request_timeout_ms=5000, **auth.aiokafka())
    except SaslAuthenticationFailed:
        return True
    except (KafkaError, OSError, ValueError, TimeoutError):
        return False
    conn.close()
    return False


@contextlib.asynccontextmanager
async def admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    async with broker_errors(settings):
        client = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap, request_timeout_ms=15000, **settings.kafka_auth().aiokafka()
        )
        try:
            await client.start()
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
        client = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap, **settings.kafka_auth().aiokafka(), **options
        )
        try:  # stopped also when it cannot start: an unstopped client warns on stderr when collected
            await client.start()
            yield client
        finally:
            await client.stop()


@contextlib.asynccontextmanager
async def consumer(settings: Settings, **overrides: object) -> AsyncIterator[AIOKafkaConsumer]:
    options: dict[str, object] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Committed records only: an anchor append of a fenced leader is never read (streams.anchoring).
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": max_message_bytes(settings.max_content_bytes),
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    options.update(overrides)
    async with broker_errors(settings):
        client = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap, **settings.kafka_auth().aiokafka(), **options
        )
        try:  # stopped also when it cannot start: an unstopped client warns on stderr when collected
            await client.start()
            yield client
        finally:
            await client.stop()


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record. A null value (a Kafka tombstone) reads as empty bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


Progress = Callable[[int, int], None]  # (records read, records in all)


async def read_to_end(
    settings: Settings,
    topic: str,
    *,
    starts: Mapping[int, int] | None = None,
    max_records: int = 5000,
    progress: Progress | None = None,
    partitions: Collection[int] | None = None,
    stops: Mapping[int, int] | None = None,
) -> AsyncGenerator[list[Record], None]:
    """Every record of `topic` (of its `partitions`, default all) from `starts` (default: each
    partition's beginning) to the end offsets as they are when called (or `stops`, if sooner),
    in batches; each partition's records in offset order."""
    async with consumer(settings) as c:
        tps = await assign_all(c, topic, partitions)
        if not tps:
            return
        firsts = await c.beginning_offsets(tps)
        ends = {
            tp: min(end, (stops or {}).get(tp.partition, end))
            for tp, end in (await c.end_offsets(tps)).items()
        }
        begin = {tp: max(firsts[tp], (starts or {}).get(tp.partition, 0)) for tp in tps}
        for tp in tps:
            c.seek(tp, begin[tp])
        remaining = {tp for tp in tps if begin[tp] < ends[tp]}
        total, done = sum(max(ends[tp] - begin[tp], 0) for tp in tps), 0
        while remaining:
            fetched = await c.getmany(*remaining, timeout_ms=1000, max_records=max_records)
            batch: list[Record] = []
            for tp, records in fetched.items():
                batch += [
                    Record(r.topic, r.partition, r.offset, r.key, r.value or b"")
                    for r in records
                    if r.offset < ends[tp]
                ]
            for tp in list(remaining):
                # By position, not by the last record: the last offsets may be transaction markers,
                # which are never delivered.
                if await c.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    c.pause(tp)
            if batch:
                done += len(batch)
                if progress is not None:
                    progress(done, total)
                yield batch


async def record_end(c: AIOKafkaConsumer, tp: TopicPartition) -> int:
    """The offset after the last record a read-committed consumer gets from `tp` (its beginning
    if none): its end offset, less the transaction markers (and aborted records) after that record.
    What a store that applied every record has applied up to. Reads back from the end, a few
    records at first. `c` must be assigned `tp` and read committed."""
    first: int = (await c.beginning_offsets([tp]))[tp]
    end: int = (await c.end_offsets([tp]))[tp]
    window = 16
    while True:
        start = max(first, end - window)
        c.seek(tp, start)
        last: int | None = None
        while await c.position(tp) < end:
            for r in (await c.getmany(tp, timeout_ms=1000)).get(tp, []):
                if r.offset < end:
                    last = int(r.offset)
        if last is not None:
            return last + 1
        if start == first:
            return first
        window *= 8


async def record_ends(settings: Settings, topic: str) -> dict[int, int]:
    """`record_end` of every partition of `topic`."""
    async with consumer(settings) as c:
        tps = await assign_all(c, topic)
        return {tp.partition: await record_end(c, tp) for tp in tps}


async def create_topics(settings: Settings) -> list[str]:
    """Create every missing topic with its configs; returns the names created. On a cluster of 3
    or more brokers each gets 3 replicas and `min.insync.replicas=2`: an acknowledged record
    (acks=all) is on 2 brokers at least, and writes go on with one broker down."""
    wanted = specs(settings)
    async with admin(settings) as client:
        existing = set(await client.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if missing:
            replicas = min(3, len((await client.describe_cluster())["brokers"]))
            durable = {"min.insync.replicas": "2"} if replicas >= 3 else {}
            response = await client.create_topics(
                [NewTopic(s.name, s.partitions, replicas, topic_configs=s.config | durable) for s in missing]
            )
            for topic, code, message in response.topic_errors:
                error = for_code(code)
                if code and error is not TopicAlreadyExistsError:  # exists: a concurrent `init` won
                    raise error(f"creating {topic}: {message or error.description}")
    return [spec.name for spec in missing]


async def assign_all(
    client: AIOKafkaConsumer, topic: str, only: Collection[int] | None = None
) -> list[TopicPartition]:
    """Assign every partition of `topic` (those in `only`) to `client` (fresh metadata); [] if
    it does not exist. The topic joins the ones the client tracks first: a consumer that already
    has an assignment asks the broker for the metadata of those topics only."""
    await client._client.add_topic(topic)
    await client._client.force_metadata_update()
    denied(client, topic)
    found = sorted(client.partitions_for_topic(topic) or ())
    tps = [TopicPartition(topic, p) for p in found if only is None or p in only]
    if tps:
        client.assign(tps)
    return tps


def denied(client: AIOKafkaConsumer, topic: str) -> None:
    """Raise if the broker would not describe `topic` to this client: its metadata then lists no
    partitions, which would read as a topic that does not exist."""
    if topic in client._client.cluster.unauthorized_topics:
        raise TopicAuthorizationFailedError(topic)


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> offset of the next record to be written."""
    async with consumer(settings) as client:
        tps = await assign_all(client, topic)
        ends = await client.end_offsets(tps) if tps else {}
    return {tp.partition: offset for tp, offset in ends.items()}


async def fetch_values(
    settings: Settings, topic: str, positions: Collection[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The values of the records at (partition, offset) `positions`, with one consumer; a position
    that is no longer on the log (before its partition's start) is left out."""
    found: dict[tuple[int, int], bytes] = {}
    async with consumer(settings) as client:
        for partition, offset in sorted(set(positions)):
            tp = TopicPartition(topic, partition)
            client.assign([tp])
            client.seek(tp, offset)
            try:
                batch = await asyncio.wait_for(
                    client.getmany(tp, timeout_ms=1000, max_records=1), settings.timeout
                )
            except TimeoutError:
                raise BrokerUnavailable(f"record {topic}/{partition}/{offset} could not be read") from None
            for record in batch.get(tp, []):
                if record.offset == offset:
                    found[(partition, offset)] = bytes(record.value or b"")
    return found


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
