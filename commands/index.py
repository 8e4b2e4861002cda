"""`stella evidence index rebuild`: the index projection from offset 0 of `evidence.events`.

The rebuild is written to a fresh store beside the live one and swapped in when complete, so a
failed rebuild leaves the old index untouched. The worker holds the store's lock, so a running
service is stopped for the swap and started again afterwards; on start it resumes from the
rebuilt store's positions.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import time
from collections.abc import Iterator
from typing import Any

from commands import service
from locker.config import Settings
from locker.errors import InvalidInput
from locker.events import Event, decode
from projections.store import IndexStore, wipe
from streams.kafka import Progress
from streams.reader import read_batches
from streams.topics import Topics


def replay(
    settings: Settings, store: IndexStore, *, batch: int = 5000, progress: Progress | None = None
) -> int:
    """Apply every event up to the current end of the topic; returns events read."""
    done = 0
    topic = Topics(settings.topic_prefix).events
    with rare_collections():
        for records in read_batches(settings, topic, max_records=batch, progress=progress):
            store.apply([(partition, offset, _decode(value)) for partition, offset, value in records])
            done += len(records)
    return done


@contextlib.contextmanager
def rare_collections() -> Iterator[None]:
    """Fewer garbage collections while replaying: a replay allocates a few objects per event
    and keeps almost none, so CPython's default (a young collection every 700 allocations)
    spends ~15% of a rebuild finding nothing. Cyclic garbage (a rejected record's traceback)
    is still collected, every 100,000 allocations."""
    thresholds = gc.get_threshold()
    gc.freeze()  # what exists already is not looked at again
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


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
    with IndexStore(fresh, bulk=True) as store:
        events = replay(settings, store, progress=progress)
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
