"""Ingest and rebuild throughput against raw aiokafka, measured in the same run on the same broker,
and ingest latency at half the measured maximum rate.

    python bench/ingest.py [--count 20000] [--sizes 1024,65536] [--latency-seconds 20]

(a) raw aiokafka: produce the submission records to a plain topic and consume them back;
(b) end to end: the same records to `evidence.submissions`, until all are indexed
    (checked, durable blob -> event -> index row);
(c) index rebuild from offset 0 of `evidence.events` (`commands.index.replay` into a fresh store
    opened as `stella evidence index rebuild` opens it: bulk, unlogged), vs a raw aiokafka consume
    of that topic.

Prints artifacts/s, MB/s (of artifact content) and the ratios; writes bench/results/ingest-*.json.

(d) latency, in a fresh locker whose service anchors every second (`Anchors:Interval` = 1, with
    a signing key): submissions of the first size in --sizes are produced, paced, at half the
    rate (b) measured for that size (or --latency-rate) for --latency-seconds; for each one:
    - produced -> event: from just before `send()` to the moment a consumer of
      `evidence.events` in this process receives its event (matched by correlation id);
    - produced -> indexed: to the first moment both the index and the Merkle store have applied
      the event's position. A child process follows the worker's RocksDB stores as a secondary
      instance (`try_catch_up_with_primary` every 5 ms, no reopening) and reads their applied
      positions, which the stores write in the same batch as the rows; the time taken is the
      end of the catch-up that first saw them, so it is late by at most one poll (printed);
    - produced -> anchored: to the moment a consumer of `evidence.anchors` receives the first
      anchor whose signature checks out and whose tree size for the event's partition exceeds the
      event's leaf index.
    At the end every submission is checked in the stores opened read-only: its index row points
    at its event, and the Merkle store has a leaf index for that event (the one used above).
    Prints p50/p99/max of each; targets: indexed p99 <= 1 s, anchored p99 <= 2.5 s.

Uses STELLA_KAFKA_BOOTSTRAP if set, else starts a local broker in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    StoreWatcher,
    code_version,
    first_time_covering,
    load_average,
    loop_stats,
    new_locker,
    percentile,
    stage_means,
    summary_ms,
)

from commands import access, service
from commands.anchors import ensure_key
from commands.broker import LocalBroker, free_port
from commands.index import replay
from locker import anchors, config, signing, submissions
from locker.cas import BlobStore
from locker.config import max_message_bytes
from locker.digests import digest_of
from locker.errors import InvalidInput
from locker.events import ArtifactIngested, decode
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from streams.kafka import admin, assign_all, consumer, producer
from streams.topics import Topics


def make_records(count: int, size: int, id_prefix: str = "") -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        content = os.urandom(size - 8) + i.to_bytes(8, "big")
        sub = submissions.ArtifactSubmission(
            content=content, kind="sbom", digest=digest_of(content), submission_id=f"{id_prefix}{i}"
        )
        out.append((digest_of(content).encode(), submissions.encode(sub)))
    return out


async def produce_all(settings: config.Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    async with producer(settings, linger_ms=10, max_batch_size=1 << 20) as p:
        pending = []
        for key, value in records:
            pending.append(await p.send(topic, key=key, value=value))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)


async def consume_all(settings: config.Settings, topic: str, count: int) -> None:
    async with consumer(settings) as c:
        tps = await assign_all(c, topic)
        await c.seek_to_beginning(*tps)
        seen = 0
        while seen < count:
            for batch in (await c.getmany(timeout_ms=1000, max_records=10000)).values():
                seen += len(batch)


async def make_topic(settings: config.Settings, name: str) -> None:
    big = str(max_message_bytes(settings.max_content_bytes))
    async with admin(settings) as a:
        await a.create_topics(
            [NewTopic(name, settings.partitions, 1, topic_configs={"max.message.bytes": big})]
        )


def index_count(settings: config.Settings) -> int:
    with IndexStore(settings.index_path, readonly=True) as index:
        return index.count()


def run_size(bootstrap: str, work: Path, count: int, size: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    os.environ.update(
        STELLA_HOME=str(work / f"home-{tag}"),
        STELLA_KAFKA__BOOTSTRAP=bootstrap,
        STELLA_KAFKA__TOPICPREFIX=f"b{tag}.",
        STELLA_KAFKA__GROUPID=f"bench-{tag}",
        STELLA_SERVICE__PORT=str(free_port()),
    )
    settings = config.load()
    topics = Topics(settings.topic_prefix)
    BlobStore(settings.evidence_path).ensure()
    access.set_up(settings)
    records = make_records(count, size)
    mb = count * size / 1e6

    raw_topic = f"b{tag}.raw"
    raw = settings.acting_as("admin")  # a topic outside the locker's ACLs
    asyncio.run(make_topic(raw, raw_topic))
    t0 = time.perf_counter()
    asyncio.run(produce_all(raw, raw_topic, records))
    asyncio.run(consume_all(raw, raw_topic, count))
    raw_s = time.perf_counter() - t0

    service.start(settings)
    try:
        t0 = time.perf_counter()
        asyncio.run(produce_all(settings, topics.submissions, records))
        while index_count(settings) < count:
            time.sleep(0.05)
        ingest_s = time.perf_counter() - t0
    finally:
        service.stop(settings)

    with IndexStore(work / f"rebuild-{tag}", bulk=True) as store:  # as commands/index.py rebuilds
        t0 = time.perf_counter()
        replayed = replay(settings, store)
        rebuild_s = time.perf_counter() - t0
        assert store.count() == count, (store.count(), count)
    # The same records the rebuild read: with the describe loop on, some artifact.described
    # events (as many as it wrote before the service stopped) follow the ingests.
    t0 = time.perf_counter()
    asyncio.run(consume_all(settings, topics.events, replayed))
    raw_events_s = time.perf_counter() - t0
    return {
        "payload_bytes": size,
        "artifacts": count,
        "events_replayed": replayed,
        "raw_produce_consume_s": raw_s,
        "raw_artifacts_per_s": count / raw_s,
        "raw_mb_per_s": mb / raw_s,
        "ingest_s": ingest_s,
        "ingest_artifacts_per_s": count / ingest_s,
        "ingest_mb_per_s": mb / ingest_s,
        "ingest_vs_raw": raw_s / ingest_s,
        "raw_consume_events_s": raw_events_s,
        "rebuild_s": rebuild_s,
        "rebuild_events_per_s": replayed / rebuild_s,
        "rebuild_vs_raw_consume": raw_events_s / rebuild_s,
        "rebuild_vs_raw_produce_consume": raw_s / rebuild_s,
    }


async def paced_run(
    settings: config.Settings, records: list[tuple[bytes, bytes]], rate: float, drain_s: float
) -> tuple[list[float], dict[int, tuple[int, int, float]], list[tuple[float, dict[int, int]]]]:
    """Produce `records` at `rate` per second while watching the events and anchors topics.

    Returns the produce times, {submission number: (partition, offset, time seen)} of the events,
    and [(time seen, {partition: tree size})] of the anchors that verify.
    """
    topics = Topics(settings.topic_prefix)
    verifier = signing.load_signer(settings.key_file, settings.origin).verifier
    produced: list[float] = []
    seen: dict[int, tuple[int, int, float]] = {}
    anchored: list[tuple[float, dict[int, int]]] = []
    done, covered = asyncio.Event(), asyncio.Event()

    async def watch_events() -> None:
        async with consumer(settings) as c:
            await c.seek_to_beginning(*await assign_all(c, topics.events))
            while len(seen) < len(records):
                fetched = await c.getmany(timeout_ms=200)
                now = time.monotonic()
                for batch in fetched.values():
                    for r in batch:
                        event = decode(r.value)
                        if not isinstance(event, ArtifactIngested):
                            continue  # the describe loop's artifact.described shares the correlation id
                        if event.correlation_id.isdigit():  # not a warm-up submission
                            seen[int(event.correlation_id)] = (r.partition, r.offset, now)

    async def watch_anchors() -> None:
        async with consumer(settings) as c:
            await c.seek_to_beginning(*await assign_all(c, topics.anchors))
            while not done.is_set():
                fetched = await c.getmany(timeout_ms=200)
                now = time.monotonic()
                for batch in fetched.values():
                    for r in batch:
                        try:
                            anchor = anchors.decode(r.value)
                        except InvalidInput:
                            continue
                        if anchors.check_anchor(anchor, anchors.anchor_id(r.value), verifier):
                            continue  # not a good signed anchor: covers nothing
                        anchored.append((now, {h.partition: h.tree_size for h in anchor.body.partitions}))
                if all_anchored():
                    covered.set()

    def all_anchored() -> bool:
        if len(seen) < len(records) or not anchored:
            return False
        last: dict[int, int] = {}
        for partition, offset, _ in seen.values():
            last[partition] = max(last.get(partition, -1), offset)
        return all(anchored[-1][1].get(p, 0) > o for p, o in last.items())  # leaf index = offset here

    watchers = [asyncio.ensure_future(watch_events()), asyncio.ensure_future(watch_anchors())]
    async with producer(settings) as p:
        pending = []
        started = time.monotonic()
        while len(produced) < len(records):
            due = min(len(records), int((time.monotonic() - started) * rate) + 1)
            while len(produced) < due:
                key, value = records[len(produced)]
                produced.append(time.monotonic())
                pending.append(await p.send(topics.submissions, key=key, value=value))
            await asyncio.sleep(0.001)
        await asyncio.gather(*pending)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(covered.wait(), drain_s)
    done.set()
    for w in watchers:
        if not w.done():
            w.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    return produced, seen, anchored


WARM_UP = 200


def run_latency(bootstrap: str, work: Path, rate: float, seconds: float, size: int) -> dict[str, object]:
    settings = new_locker(bootstrap, work, STELLA_ANCHORS__INTERVAL="1")
    BlobStore(settings.evidence_path).ensure()
    ensure_key(settings)
    access.set_up(settings)
    count = max(1, int(rate * seconds))
    records = make_records(count, size)
    service.start(settings)
    try:
        # Warm-up, not measured: the service's first batches (connections, first fetches, caches).
        started = time.monotonic()
        warm = make_records(WARM_UP, size, "w")
        asyncio.run(produce_all(settings, Topics(settings.topic_prefix).submissions, warm))
        while index_count(settings) < WARM_UP:
            time.sleep(0.01)
        warm_up_s = time.monotonic() - started
        watcher = StoreWatcher([settings.index_path, settings.merkle_path], work / "secondary")
        try:
            produced, seen, anchored = asyncio.run(paced_run(settings, records, rate, drain_s=60))
        finally:
            samples, poll_stats = watcher.stop()
        loops = stage_means(loop_stats(settings))
    finally:
        service.stop(settings)

    # The final check, in the stores themselves: every submission indexed at its event's
    # position, every event a leaf of its partition's tree.
    leaf: dict[int, int] = {}
    wrong = 0
    with (
        IndexStore(settings.index_path, readonly=True) as index,
        MerkleStore(settings.merkle_path, readonly=True) as trees,
    ):
        sizes = {p: trees.tree_size(p) for p in trees.applied()}
        for i, (partition, offset, _) in seen.items():
            row = index.get(records[i][0].decode())
            index_ok = row is not None and (row.partition, row.offset) == (partition, offset)
            found = trees.leaf_index(partition, offset)
            if found is None or found >= sizes.get(partition, 0) or not index_ok:
                wrong += 1
                continue
            leaf[i] = found

    to_event, to_indexed, to_anchored = [], [], []
    not_indexed = not_anchored = 0
    by_second: dict[int, list[float]] = {}
    for i, (partition, offset, t_event) in seen.items():
        to_event.append(t_event - produced[i])
        t_indexed = first_time_covering(samples, partition, offset)
        if t_indexed is None:
            not_indexed += 1
        else:
            to_indexed.append(t_indexed - produced[i])
            by_second.setdefault(int(produced[i] - produced[0]), []).append(t_indexed - produced[i])
        t_anchor = next((t for t, heads in anchored if i in leaf and heads.get(partition, 0) > leaf[i]), None)
        if t_anchor is None:
            not_anchored += 1
        else:
            to_anchored.append(t_anchor - produced[i])
    return {
        "payload_bytes": size,
        "rate_per_s": rate,
        "seconds": seconds,
        "submissions": count,
        "warm_up": {"submissions": WARM_UP, "produced_to_indexed_s": warm_up_s},
        "events_seen": len(seen),
        "failed_store_check": wrong,
        "never_indexed": not_indexed,
        "never_anchored": not_anchored,
        "anchors": len(anchored),
        "store_polls": poll_stats,
        "loops": loops,
        "produced_to_event": summary_ms(to_event),
        "produced_to_indexed": summary_ms(to_indexed),
        "produced_to_anchored": summary_ms(to_anchored),
        # p50 and p99 (ms) of produced -> indexed for the submissions produced in each second
        "indexed_by_second": [
            [second, round(percentile(v, 50) * 1e3), round(percentile(v, 99) * 1e3)]
            for second, v in sorted(by_second.items())
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--sizes", default="1024,65536")
    parser.add_argument("--workdir", help="keep homes, logs and broker files here (default: a temp dir)")
    parser.add_argument("--latency-seconds", type=float, default=20, help="0: no latency section")
    parser.add_argument(
        "--latency-rate", type=float, help="per second (default: half of (b) for the first size)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load_at_start = load_average()
    with tempfile.TemporaryDirectory(prefix="stella-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        broker = None
        bootstrap = os.environ.get("STELLA_KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = LocalBroker(root=work / "broker", port=free_port(), controller_port=free_port())
            broker.start()
            os.environ.update(broker.client_env())
            bootstrap = broker.bootstrap
        os.environ.pop("STELLA_KAFKA_BOOTSTRAP", None)
        try:
            rows = [run_size(bootstrap, work, args.count, size) for size in sizes]
            latency = None
            if args.latency_seconds > 0:
                rate = args.latency_rate or rows[0]["ingest_artifacts_per_s"] / 2
                latency = run_latency(bootstrap, work, rate, args.latency_seconds, sizes[0])
        finally:
            if broker:
                broker.stop()
    result = {
        "when": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "code": code_version(),
        "load_average": {"start": load_at_start, "end": load_average()},
        "results": rows,
        "latency": latency,
    }
    out = Path(__file__).parent / "results" / f"ingest-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cores: {os.cpu_count()}   artifacts per size: {args.count}", end="   ")
    load = result["load_average"]
    print(f"load average (1 min) at start / end: {load['start']} / {load['end']}")
    code = result["code"]
    print(f"code: {str(code['commit'])[:12]}{' with uncommitted changes' if code['dirty'] else ''}")
    print(
        f"{'payload':>8} {'raw art/s':>10} {'ingest art/s':>12} {'ingest MB/s':>11} {'(b)/(a)':>8}"
        f" {'rebuild ev/s':>12} {'(c)/raw consume':>15} {'(c)/(a)':>8}"
    )
    for r in rows:
        print(
            f"{r['payload_bytes']:>8} {r['raw_artifacts_per_s']:>10.0f} {r['ingest_artifacts_per_s']:>12.0f}"
            f" {r['ingest_mb_per_s']:>11.1f} {r['ingest_vs_raw']:>8.2f} {r['rebuild_events_per_s']:>12.0f}"
            f" {r['rebuild_vs_raw_consume']:>15.2f} {r['rebuild_vs_raw_produce_consume']:>8.2f}"
        )
    if latency is not None:
        print_latency(latency)
    print(f"written to {out}")


def print_latency(r: dict) -> None:
    polls = r["store_polls"]
    warm = r["warm_up"]
    print(
        f"latency: {r['submissions']} submissions of {r['payload_bytes']} B at {r['rate_per_s']:.0f}/s"
        f" (half of (b)) for {r['seconds']:.0f} s, Anchors:Interval = 1 s, {r['anchors']} anchors;"
        f" stores polled every {polls['mean_poll_interval_ms']:.1f} ms"
        f" (catch-up {polls['mean_catch_up_ms']:.1f} ms); after a warm-up of {warm['submissions']}"
        f" submissions (the service's first, not measured), indexed in {warm['produced_to_indexed_s']:.2f} s"
    )
    print(f"{'produced ->':>20} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'missing':>8} {'target':>14}")
    for name, key, missing, target in (
        ("event on the log", "produced_to_event", r["submissions"] - r["events_seen"], ""),
        ("indexed + Merkle", "produced_to_indexed", r["never_indexed"], "p99 <= 1000"),
        ("signed anchor", "produced_to_anchored", r["never_anchored"], "p99 <= 2500"),
    ):
        m = r[key]
        times = f"{m['p50_ms']:>8.0f} {m['p99_ms']:>8.0f} {m['max_ms']:>8.0f}"
        print(f"{name:>20} {times} {missing:>8} {target:>14}")
    print("produced -> indexed, p50/p99 ms by second of the run:", r["indexed_by_second"])
    for name, st in r["loops"].items():
        print(f"  {name} loop: {st['batches']} batches, {st['records']} records,", end=" ")
        print(f"mean ms per batch in each stage {st['ms_per_batch']}")
    if r["failed_store_check"]:
        print(f"!! {r['failed_store_check']} submissions failed the final store check")


if __name__ == "__main__":
    main()
