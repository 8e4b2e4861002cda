"""`streams.runtime.Loop` failures, with a fake consumer: retry what may heal, stop on the rest.

A broker or storage outage rewinds and retries (`retrying`); anything else, including a damaged
store and a failure while rewinding, marks the loop `failed`, logs one `loop cannot go on` line and
crashes the service. No broker: the loop's pipeline runs against a consumer that hands out batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from locker.errors import StorageUnavailable, StoreDamaged
from streams.kafka import Record
from streams.runtime import Headers, Loop, Outbox

TP = TopicPartition("t.evidence.events", 0)


class FakeConsumer:
    """Hands out `batches` (one list of values each), then nothing a few times (the loop carries
    out what is in flight), then cancels the loop, as a stop would."""

    def __init__(self, batches: Sequence[Sequence[bytes]], *, seek: Callable[[], None] | None = None) -> None:
        self._batches = [*batches, [], []]
        self._offset = 0
        self._seek = seek
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self._batches:
            raise asyncio.CancelledError
        values = self._batches.pop(0)
        if not values:
            return {}
        records = [
            SimpleNamespace(topic=TP.topic, partition=0, offset=self._offset + i, key=None, value=v)
            for i, v in enumerate(values)
        ]
        self._offset += len(records)
        return {TP: records}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self._seek is not None:
            self._seek()
        self.seeks.append((tp, offset))


class FakePublisher:
    async def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes, Headers]]) -> None:
        return None


def run(handler: Callable[[list[Record]], Outbox], consumer: FakeConsumer) -> tuple[Loop, list[Any], list]:
    """Run a loop over `consumer` until it gives up or is cancelled; (loop, crash reasons, logs)."""
    loop = Loop(
        "projections",
        topic=TP.topic,
        handler=handler,
        publisher=FakePublisher(),
        dlq_topic="t.evidence.dlq",
        consumer_options={},
    )
    loop.consumer = consumer
    crashes: list[Any] = []

    async def crash(reason: BaseException) -> None:
        crashes.append(reason)

    loop.crash = crash

    async def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await loop._run()

    with capture_logs() as logs:
        asyncio.run(main())
    return loop, crashes, logs


def cannot_go_on(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"].startswith("loop cannot go on")]


def test_an_unexpected_exception_in_the_handler_fails_the_loop_and_crashes_the_service() -> None:
    def handler(records: list[Record]) -> Outbox:
        raise ZeroDivisionError("a bug")

    loop, crashes, logs = run(handler, FakeConsumer([[b"x"]]))
    assert loop.condition == "failed" and loop.status()["state"] == "failed"
    assert loop.error == "ZeroDivisionError: a bug"
    assert [type(c) for c in crashes] == [ZeroDivisionError]
    [line] = cannot_go_on(logs)
    assert line["loop"] == "projections" and line["error"] == "ZeroDivisionError: a bug"
    assert line["log_level"] == "critical"


def test_a_damaged_store_in_a_write_is_not_retried() -> None:
    def write() -> None:
        raise StoreDamaged("the Merkle store at /x is damaged: node 1 is missing")

    loop, crashes, logs = run(lambda records: Outbox(writes=[write]), FakeConsumer([[b"x"], [b"y"]]))
    assert loop.condition == "failed" and "StoreDamaged" in loop.error
    assert len(crashes) == 1 and len(cannot_go_on(logs)) == 1
    assert not [entry for entry in logs if entry["event"].startswith("batch failed")]


def test_an_outage_is_retried_from_the_start_of_the_batch() -> None:
    calls: list[int] = []

    def handler(records: list[Record]) -> Outbox:
        calls.append(len(records))
        if len(calls) == 1:
            raise StorageUnavailable("disk full")
        return Outbox()

    consumer = FakeConsumer([[b"a", b"b"], [b"a", b"b"]])
    loop, crashes, logs = run(handler, consumer)
    assert crashes == [] and cannot_go_on(logs) == []
    assert consumer.seeks == [(TP, 0)]  # rewound to the first record of the failed batch
    assert calls == [2, 2] and loop.condition == "running" and loop.batches == 1


def test_a_failure_while_rewinding_is_not_silent() -> None:
    def handler(records: list[Record]) -> Outbox:
        raise StorageUnavailable("disk full")

    def seek() -> None:
        raise RuntimeError("seek failed")

    loop, crashes, logs = run(handler, FakeConsumer([[b"x"]], seek=seek))
    assert loop.condition == "failed" and loop.error == "RuntimeError: seek failed"
    assert len(crashes) == 1 and len(cannot_go_on(logs)) == 1


@pytest.mark.parametrize("state", ["failed", "retrying"])
def test_health_names_the_state_of_the_loop(state: str) -> None:
    def handler(records: list[Record]) -> Outbox:
        raise StorageUnavailable("disk full") if state == "retrying" else RuntimeError("bug")

    # The retrying loop is cancelled during its back-off: its state is what /healthz shows then.
    loop, _, _ = run(handler, FakeConsumer([[b"x"]]))
    assert loop.status()["state"] == state and loop.status()["error"]
