"""Sending a command to the service and waiting until it shows.

The service is the single writer: the CLI puts a command on `evidence.commands` and waits until
its effect can be read (a store row, a record), or until the service dead-letters the command
(`Refused`, with the service's reason), or `Commands:Timeout` passes (`TimedOut`: the command
stays queued and runs when the service does).
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


def send_and_await_event(
    settings: Settings, command: requests.Command, key: bytes, what: str
) -> tuple[int, int, Event]:
    """Send `command`; return (partition, offset, event) of the first event with `key` on
    `evidence.events` that carries the command's id as its correlation id."""
    return asyncio.run(_send_and_await_event(settings, command, key, what))


async def _send_and_await_event(
    settings: Settings, command: requests.Command, key: bytes, what: str
) -> tuple[int, int, Event]:
    topics = Topics(settings.topic_prefix)
    refusals = TopicPartition(topics.dlq, 0)
    value = requests.encode(command)
    async with consumer(settings) as watcher, producer(settings) as sender:
        partitions = sorted(await sender.partitions_for(topics.events))
        [partition] = partitions_for([key], partitions)
        answers = TopicPartition(topics.events, partition)
        watcher.assign([answers, refusals])
        await watcher.seek_to_end(answers, refusals)
        for tp in (answers, refusals):
            await watcher.position(tp)
        await sender.send_and_wait(topics.commands, key=command.command_id.encode(), value=value)
        deadline = time.monotonic() + settings.timeout
        while time.monotonic() < deadline:
            for tp, records in (await watcher.getmany(timeout_ms=200)).items():
                for record in records:
                    if tp == refusals:
                        _raise_if_refused(record, value)
                        continue
                    try:
                        event = decode(record.value)
                    except InvalidInput:
                        continue
                    if record.key == key and getattr(event, "correlation_id", "") == command.command_id:
                        return record.partition, record.offset, event
    raise _queued(settings, command, what)


def send_and_wait(
    settings: Settings, command: requests.Command, shown: Callable[[], T | None], what: str
) -> T:
    """Send `command`; return the first non-None `shown()` (called every 0.1 s, in a thread)."""
    return asyncio.run(_send_and_wait(settings, command, shown, what))


async def _send_and_wait(
    settings: Settings, command: requests.Command, shown: Callable[[], T | None], what: str
) -> T:
    topics = Topics(settings.topic_prefix)
    refusals = TopicPartition(topics.dlq, 0)
    value = requests.encode(command)
    async with consumer(settings) as watcher, producer(settings) as sender:
        watcher.assign([refusals])
        await watcher.seek_to_end(refusals)
        await watcher.position(refusals)
        await sender.send_and_wait(topics.commands, key=command.command_id.encode(), value=value)
        deadline = time.monotonic() + settings.timeout
        while time.monotonic() < deadline:
            for record in (await watcher.getmany(refusals, timeout_ms=100)).get(refusals, []):
                _raise_if_refused(record, value)
            result = await asyncio.to_thread(shown)
            if result is not None:
                return result
    raise _queued(settings, command, what)


def _raise_if_refused(record: Any, sent: bytes) -> None:
    """`Refused` with the service's reason if the dead letter `record` is the command `sent`."""
    if record.value == sent:
        letter = DeadLetter.from_headers(list(record.headers))
        raise Refused(f"the service refused the command: {letter.reason}: {letter.detail}")


def _queued(settings: Settings, command: requests.Command, what: str) -> TimedOut:
    return TimedOut(
        f"{what} {command.command_id} sent but not done within {settings.timeout:.0f}s "
        "(queued; is the service running? `stella service status`)"
    )
