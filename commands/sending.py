"""Sending a command to the service and waiting for its outcome: the one place the CLI does it.

The service is the single writer: the CLI puts a command on `evidence.commands` and waits until
its outcome shows, as a record on a topic partition it positioned itself at the end of before
sending (`answer`), or as a row it can read (`shown`, polled in a thread); or until the service
dead-letters the command (`Refused`, with the service's reason), or `Commands:Timeout` passes
(`TimedOut`: the command stays queued and runs when the service does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiokafka import TopicPartition

from locker import requests
from locker.config import Settings
from locker.dlq import DeadLetter
from locker.errors import InvalidInput, Refused, TimedOut
from locker.events import Event, decode
from streams.kafka import consumer, producer
from streams.partitioning import partitions_for
from streams.topics import Topics

T = TypeVar("T")


async def exchange(
    settings: Settings,
    command: requests.Command,
    what: str,
    *,
    watch: tuple[str, bytes] | None = None,
    answer: Callable[[Any], T | None] = lambda record: None,
    shown: Callable[[], T | None] | None = None,
) -> T:
    """Send `command`; return the first non-None `answer(record)` for the records that arrive
    after the send on the partition of `watch` = (topic, key), or else the first non-None
    `shown()`."""
    topics = Topics(settings.topic_prefix)
    refusals = TopicPartition(topics.dlq, 0)
    value = requests.encode(command)
    async with consumer(settings) as watcher, producer(settings) as sender:
        watched = [refusals]
        if watch is not None:
            topic, key = watch
            [partition] = partitions_for([key], sorted(await sender.partitions_for(topic)))
            watched.append(TopicPartition(topic, partition))
        watcher.assign(watched)
        await watcher.seek_to_end(*watched)
        for tp in watched:
            await watcher.position(tp)  # resolve the end now, before anything is sent
        await sender.send_and_wait(topics.commands, key=command.command_id.encode(), value=value)
        deadline = time.monotonic() + settings.timeout
        while time.monotonic() < deadline:
            for tp, records in (await watcher.getmany(timeout_ms=100)).items():
                for record in records:
                    if tp == refusals:
                        _raise_if_refused(record, value)
                    elif (result := answer(record)) is not None:
                        return result
            if shown is not None and (result := await asyncio.to_thread(shown)) is not None:
                return result
    raise TimedOut(
        f"{what} {command.command_id} sent but not done within {settings.timeout:.0f}s "
        "(queued; is the service running? `stella service status`)"
    )


def send_and_await_event(
    settings: Settings, command: requests.Command, key: bytes, what: str
) -> tuple[int, int, Event]:
    """Send `command`; return (partition, offset, event) of the first event with `key` on
    `evidence.events` that carries the command's id as its correlation id."""
    events = Topics(settings.topic_prefix).events

    def answer(record: Any) -> tuple[int, int, Event] | None:
        try:
            event = decode(record.value)
        except InvalidInput:
            return None
        if record.key == key and getattr(event, "correlation_id", "") == command.command_id:
            return record.partition, record.offset, event
        return None

    return asyncio.run(exchange(settings, command, what, watch=(events, key), answer=answer))


def send_and_wait(
    settings: Settings, command: requests.Command, shown: Callable[[], T | None], what: str
) -> T:
    """Send `command`; return the first non-None `shown()` (called every 0.1 s, in a thread)."""
    return asyncio.run(exchange(settings, command, what, shown=shown))


def _raise_if_refused(record: Any, sent: bytes) -> None:
    """`Refused` with the service's reason if the dead letter `record` is the command `sent`."""
    if record.value == sent:
        letter = DeadLetter.from_headers(list(record.headers))
        raise Refused(f"the service refused the command: {letter.reason}: {letter.detail}")
