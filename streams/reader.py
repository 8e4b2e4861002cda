"""Read a topic to its end for a synchronous caller that folds what it reads (a replay).

Replaying a topic (an index rebuild) costs ~6 us a record to consume with aiokafka and more
than that to decode and fold, all under one GIL. `read_in_child` runs `streams.kafka.read_to_end`
in a spawned child that sends each batch down a pipe as (partition, offset, value) tuples; the
caller folds one batch while the child fetches the next. The pipe holds at most a batch or
two, so a slow caller slows the child and memory stays bounded. Starting the child costs ~0.5 s
(an interpreter, aiokafka, a broker connection): `read_batches` reads a short range in this
process instead.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import Collection, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

from locker.config import Settings
from locker.errors import LockerError
from streams.children import SPAWN, exit_with
from streams.kafka import Progress, assign_all, consumer, read_to_end

Raw = tuple[int, int, bytes]  # (partition, offset, value); a null value reads as b""

IN_CHILD_ABOVE = 100_000  # records; below this a child costs more than it saves


def read_batches(
    settings: Settings,
    topic: str,
    *,
    starts: Mapping[int, int] | None = None,
    max_records: int = 5000,
    progress: Progress | None = None,
    partitions: Collection[int] | None = None,
    stops: Mapping[int, int] | None = None,
    in_child_above: int = IN_CHILD_ABOVE,
) -> Iterator[list[Raw]]:
    """Every record of `topic` (of its `partitions`, default all) from `starts` to its end as it
    is now (or `stops`), in batches: read by a child process (`read_in_child`) if there are more
    than `in_child_above`, else by this one."""
    ahead = asyncio.run(_records_ahead(settings, topic, starts or {}, partitions, stops or {}))
    read = read_in_child if ahead > in_child_above else _read_here
    yield from read(
        settings,
        topic,
        starts=starts,
        max_records=max_records,
        progress=progress,
        partitions=partitions,
        stops=stops,
    )


def read_range(
    settings: Settings, topic: str, partition: int, start: int, end: int
) -> Iterator[tuple[int, bytes]]:
    """(offset, value) of the records of one partition from `start` up to `end` (not included)."""
    if start >= end:
        return
    for batch in read_batches(
        settings, topic, starts={partition: start}, stops={partition: end}, partitions=[partition]
    ):
        for _, offset, value in batch:
            yield offset, value


async def _records_ahead(
    settings: Settings,
    topic: str,
    starts: Mapping[int, int],
    partitions: Collection[int] | None,
    stops: Mapping[int, int],
) -> int:
    async with consumer(settings) as c:
        tps = await assign_all(c, topic, partitions)
        if not tps:
            return 0
        firsts, ends = await c.beginning_offsets(tps), await c.end_offsets(tps)
    return sum(
        max(
            min(ends[tp], stops.get(tp.partition, ends[tp])) - max(firsts[tp], starts.get(tp.partition, 0)), 0
        )
        for tp in tps
    )


def _read_here(
    settings: Settings,
    topic: str,
    *,
    starts: Mapping[int, int] | None = None,
    max_records: int = 5000,
    progress: Progress | None = None,
    partitions: Collection[int] | None = None,
    stops: Mapping[int, int] | None = None,
) -> Iterator[list[Raw]]:
    """`read_to_end` in this process, one batch at a time, for a synchronous caller."""
    loop = asyncio.new_event_loop()
    batches = read_to_end(
        settings,
        topic,
        starts=starts,
        max_records=max_records,
        progress=progress,
        partitions=partitions,
        stops=stops,
    )
    try:
        while True:
            try:
                records = loop.run_until_complete(anext(batches))
            except StopAsyncIteration:
                return
            yield [(r.partition, r.offset, r.value) for r in records]
    finally:
        loop.run_until_complete(batches.aclose())
        loop.close()


def read_in_child(
    settings: Settings,
    topic: str,
    *,
    starts: Mapping[int, int] | None = None,
    max_records: int = 5000,
    progress: Progress | None = None,
    partitions: Collection[int] | None = None,
    stops: Mapping[int, int] | None = None,
) -> Iterator[list[Raw]]:
    """`read_to_end(settings, topic, ...)`, read by a child process.

    Raises what the child raised (`BrokerUnavailable`, ...) as a `LockerError`.
    """
    receiving, sending = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(
        target=_read,
        args=(
            settings,
            topic,
            dict(starts or {}),
            max_records,
            partitions,
            dict(stops or {}),
            sending,
            os.getpid(),
        ),
        name="stella-reader",
        daemon=True,
    )
    child.start()
    sending.close()  # the child's end: EOF here once the child is gone
    try:
        while True:
            try:
                message = pickle.loads(receiving.recv_bytes())  # noqa: S301 - our own child, our own pipe
            except EOFError:
                raise LockerError(f"the reader of {topic} ended (exit code {child.exitcode})") from None
            match message:
                case ("batch", done, total, batch):
                    if progress is not None:
                        progress(done, total)
                    yield batch
                case ("end",):
                    return
                case ("error", error):
                    raise error
    finally:
        receiving.close()
        child.join(timeout=5)
        if child.is_alive():  # the caller stopped early: the child is blocked on a full pipe
            child.kill()
            child.join()


def _read(
    settings: Settings,
    topic: str,
    starts: dict[int, int],
    max_records: int,
    partitions: Collection[int] | None,
    stops: dict[int, int],
    pipe: Connection,
    parent: int,
) -> None:
    """In the child: every batch down `pipe`, then ("end",) or ("error", a LockerError)."""
    exit_with(parent)
    try:
        asyncio.run(_send_all(settings, topic, starts, max_records, partitions, stops, pipe))
        pipe.send_bytes(pickle.dumps(("end",)))
    except LockerError as error:
        pipe.send_bytes(_pickled_error(error))
    except Exception as error:  # noqa: BLE001 - anything else still reaches the caller as one line
        pipe.send_bytes(_pickled_error(LockerError(f"reading {topic} failed: {error!r}")))
    finally:
        pipe.close()


async def _send_all(
    settings: Settings,
    topic: str,
    starts: dict[int, int],
    max_records: int,
    partitions: Collection[int] | None,
    stops: dict[int, int],
    pipe: Connection,
) -> None:
    loop = asyncio.get_running_loop()
    sent: asyncio.Future[Any] | None = None
    total = 0

    def count(done: int, of: int) -> None:
        nonlocal total
        total = of

    done = 0
    async for records in read_to_end(
        settings,
        topic,
        starts=starts or None,
        max_records=max_records,
        progress=count,
        partitions=partitions,
        stops=stops or None,
    ):
        done += len(records)
        data = pickle.dumps(
            ("batch", done, total, [(r.partition, r.offset, r.value) for r in records]),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        if sent is not None:
            await sent
        # Sent from a thread: the consumer keeps fetching while the caller is still folding.
        sent = loop.run_in_executor(None, pipe.send_bytes, data)
    if sent is not None:
        await sent


def _pickled_error(error: LockerError) -> bytes:
    try:
        data = pickle.dumps(("error", error))
        pickle.loads(data)  # noqa: S301 - fails for an error whose constructor takes other arguments
        return data
    except Exception:  # noqa: BLE001 - then keep its message
        return pickle.dumps(("error", LockerError(str(error))))
