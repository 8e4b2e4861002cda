"""Index maintenance (runbook SP-002): `stella evidence index status|refresh|rebuild|optimize`.

`rebuild` folds `evidence.events` from offset 0 into a fresh store beside the live one while the
service runs, and swaps it in when complete, so a failed rebuild leaves the old index untouched.
The worker holds the live store's lock, so the service is stopped for the swap (and started
again): then both stores are brought to the log's end and their checksums compared, and the
result says whether they matched. `refresh` brings the index to the log's end: the running
service does that itself (refresh waits for it and counts); a stopped one's store is caught up
here. `optimize` compacts the store, in the service when it runs (a command), else here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from commands import queries, service
from commands.sending import send_and_wait
from locker import requests
from locker.config import Settings
from locker.errors import InvalidInput, StoreDamaged, TimedOut
from locker.events import ArtifactIngested, Event, decode
from locker.files import write_durably
from locker.times import now_iso
from projections.index import ArtifactRecord
from projections.store import IndexStore, wipe
from streams.kafka import Progress, end_offsets, fetch_values
from streams.reader import read_batches, read_range
from streams.topics import Topics


def replay(
    settings: Settings, store: IndexStore, *, batch: int = 5000, progress: Progress | None = None
) -> int:
    """Apply every event after the store's applied positions (all of them, for a fresh store) up to
    the current end of the topic; returns events read."""
    done = 0
    topic = Topics(settings.topic_prefix).events
    starts = {partition: store.resume_at(partition) for partition in store.applied()}
    log = partial(read_range, settings, topic)
    with rare_collections():
        for records in read_batches(settings, topic, starts=starts, max_records=batch, progress=progress):
            store.apply([(partition, offset, _decode(value)) for partition, offset, value in records], log)
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
    was_running = service.stop(settings)
    try:
        with IndexStore(fresh, bulk=True) as store:
            events += replay(settings, store)  # what came while the service still ran
            entries, checksum = store.count(), store.checksum()
        live_checksum = _caught_up_checksum(live, settings)
        old = settings.state_path / "index.old"
        wipe(old)
        if live.exists():
            live.rename(old)
        fresh.rename(live)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if was_running:
            service.start(settings)
    result = {
        "events": events,
        "entries": entries,
        "checksum": checksum,
        "live_checksum": live_checksum,
        "matches_live": None if live_checksum is None else live_checksum == checksum,
        "seconds": round(time.monotonic() - started, 3),
        "service_restarted": was_running,
        "at": now_iso(),
    }
    write_durably(settings.state_path / LAST_REBUILD, json.dumps(result).encode())
    return result


LAST_REBUILD = "index-rebuild.json"  # in the state folder: what `index status` shows as the last rebuild


def _caught_up_checksum(live: Path, settings: Settings) -> str | None:
    """The live index's checksum once it holds every event now on the log; None if there is no
    live index or it cannot be read (damaged: the rebuild replaces it)."""
    if not (live / "CURRENT").exists():
        return None
    try:
        with IndexStore(live) as store:
            replay(settings, store)
            return store.checksum()
    except StoreDamaged:
        return None


def refresh(settings: Settings) -> dict[str, Any]:
    """Bring the index to the end of the log; how many events that applied."""
    topic = Topics(settings.topic_prefix).events
    started = time.monotonic()
    if service.daemon(settings).pid() is None:
        with IndexStore(settings.index_path) as store:
            before = _applied_count(store)
            replay(settings, store)
            after = _applied_count(store)
        by = "this command (the service is stopped)"
    else:
        ends = asyncio.run(end_offsets(settings, topic))
        deadline = time.monotonic() + settings.timeout
        with IndexStore(settings.index_path, readonly=True) as store:
            before = _applied_count(store)
        while True:
            with IndexStore(settings.index_path, readonly=True) as store:
                applied = store.applied()
            if all(applied.get(p, -1) + 1 >= end for p, end in ends.items()):
                break
            if time.monotonic() > deadline:
                raise TimedOut(f"the service has not applied the log's end within {settings.timeout:.0f}s")
            time.sleep(0.1)
        after = sum(applied.get(p, -1) + 1 for p in ends)
        by = "the service"
    return {
        "events_applied": after - before,
        "lag": 0,
        "applied_by": by,
        "seconds": round(time.monotonic() - started, 3),
    }


def _applied_count(store: IndexStore) -> int:
    return sum(offset + 1 for offset in store.applied().values())


def optimize(settings: Settings) -> dict[str, Any]:
    """Compact the index; its size before and after."""
    if service.daemon(settings).pid() is not None:
        command = requests.optimize_index()
        return send_and_wait(
            settings, command, lambda: _optimized(settings, command.command_id), "index optimize"
        )
    started = time.monotonic()
    with IndexStore(settings.index_path) as store:
        before = store.size_bytes()
        store.compact()
    with IndexStore(settings.index_path, readonly=True) as store:
        after = store.size_bytes()
    return {
        "bytes_before": before,
        "bytes_after": after,
        "seconds": round(time.monotonic() - started, 3),
        "by": "this command (the service is stopped)",
    }


def _optimized(settings: Settings, command_id: str) -> dict[str, Any] | None:
    """The answer of the worker that ran the command (the leader: any local worker)."""
    for n in service.running(settings):
        try:
            result: dict[str, Any] = json.loads(settings.as_worker(n).index_optimized_path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        if result.get("command_id") == command_id:
            return result
    return None


def status(settings: Settings, *, checksum: bool = False, sample: int = 20) -> dict[str, Any]:
    """`queries.index_status` and: the store's size, the last rebuild, and a check of `sample`
    index rows against the events they were built from."""
    out = queries.index_status(settings, checksum=checksum)
    with IndexStore(settings.index_path, readonly=True) as store:
        out["store_bytes"] = store.size_bytes()
        ends = 1 if sample >= 2 else 0  # the first and last rows by id, and random ones
        ids = store.sample_ids(ends=ends, randoms=sample - 2 * ends)
        records = [r for r in (store.get(i) for i in ids) if r is not None]
    try:
        out["last_rebuild"] = json.loads((settings.state_path / LAST_REBUILD).read_text())
    except (FileNotFoundError, ValueError):
        out["last_rebuild"] = None
    if sample and "broker_error" not in out:
        out["sample_check"] = _sample_check(settings, records[:sample])
    return out


def _sample_check(settings: Settings, records: list[ArtifactRecord]) -> dict[str, Any]:
    """Each record against the `artifact.ingested` event at its position on the log."""
    topic = Topics(settings.topic_prefix).events
    values = asyncio.run(fetch_values(settings, topic, [(r.partition, r.offset) for r in records]))
    mismatches = []
    for record in records:
        value = values.get((record.partition, record.offset))
        problem = _disagreement(record, value)
        if problem:
            mismatches.append(
                {
                    "artifact_id": record.artifact_id,
                    "partition": record.partition,
                    "offset": record.offset,
                    "problem": problem,
                }
            )
    return {"rows_checked": len(records), "mismatches": mismatches, "consistent": not mismatches}


def _disagreement(record: ArtifactRecord, value: bytes | None) -> str:
    """What is wrong with `record` given the event it was built from ("" if nothing)."""
    if value is None:
        return "the event at its position is gone from the log"
    try:
        event = decode(value)
    except InvalidInput as error:
        return f"the event at its position does not decode: {error.reason}"
    if not isinstance(event, ArtifactIngested) or event.artifact_id != record.artifact_id:
        return "the event at its position is not this artifact's ingest"
    expected = (event.size, event.kind, tuple(sorted(set(event.subjects))), event.producer, event.media_type)
    actual = (record.size, record.kind, record.subjects, record.producer, record.media_type)
    return "" if expected == actual else "the row differs from its event"
