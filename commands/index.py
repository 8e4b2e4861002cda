"""`stella evidence index rebuild`: the index projection from offset 0 of `evidence.events`.

The rebuild is written to a fresh store beside the live one and swapped in when complete, so a
failed rebuild leaves the old index untouched. The worker holds the store's lock, so a running
service is stopped for the swap and started again afterwards; on start it resumes from the
rebuilt store's positions.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from typing import Any

from commands import service
from locker.config import Settings
from locker.errors import InvalidInput
from locker.events import Event, decode
from projections.store import Applied, IndexStore, wipe
from streams.kafka import assign_all, consumer
from streams.topics import Topics

Progress = Callable[[int, int], None]  # (events done, events total)


async def replay(
    settings: Settings, store: IndexStore, *, batch: int = 5000, progress: Progress | None = None
) -> int:
    """Apply every event up to the current end of the topic; returns events read."""
    topic = Topics(settings.topic_prefix).events
    async with consumer(settings) as c:
        tps = await assign_all(c, topic)
        await c.seek_to_beginning(*tps)
        ends = {tp: off for tp, off in (await c.end_offsets(tps)).items()}
        starts = await c.beginning_offsets(tps)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        done = 0
        while remaining:
            fetched = await c.getmany(*remaining, timeout_ms=1000, max_records=batch)
            applied: list[Applied] = []
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    applied.append((tp.partition, record.offset, _decode(record.value)))
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
                    c.pause(tp)
            if applied:
                store.apply(applied)
                done += len(applied)
                if progress:
                    progress(done, total)
    return done


def _decode(value: bytes) -> Event | None:
    try:
        return decode(value)
    except InvalidInput:
        return None


def rebuild(settings: Settings, progress: Progress | None = None) -> dict[str, Any]:
    live = settings.index_path
    fresh = settings.state_path / "index.rebuild"
    wipe(fresh)
    started = time.monotonic()
    with IndexStore(fresh, unlogged=True) as store:
        events = asyncio.run(replay(settings, store, progress=progress))
        entries, checksum = store.count(), store.checksum()
    was_running = service.stop(settings)
    old = settings.state_path / "index.old"
    wipe(old)
    if live.exists():
        live.rename(old)
    fresh.rename(live)
    shutil.rmtree(old, ignore_errors=True)
    if was_running:
        service.start(settings)
    return {
        "events": events,
        "entries": entries,
        "checksum": checksum,
        "seconds": round(time.monotonic() - started, 3),
        "service_restarted": was_running,
    }
