"""Ingest and rebuild throughput against raw aiokafka, measured in the same run on the same broker.

    python bench/ingest.py [--count 20000] [--sizes 1024,65536]

(a) raw aiokafka: produce the submission records to a plain topic and consume them back;
(b) end to end: the same records to `evidence.submissions`, until all are indexed
    (checked, durable blob -> event -> index row);
(c) index rebuild from offset 0 of `evidence.events`, vs a raw aiokafka consume of that topic.

Prints artifacts/s, MB/s (of artifact content) and the ratios; writes bench/results/ingest-*.json.
Uses STELLA_KAFKA_BOOTSTRAP if set, else starts a local broker in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
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

from commands import service
from commands.broker import LocalBroker, free_port
from commands.index import replay
from locker import config, submissions
from locker.cas import BlobStore
from locker.config import max_message_bytes
from locker.digests import digest_of
from projections.store import IndexStore
from streams.kafka import admin, assign_all, consumer, create_topics, producer
from streams.topics import Topics


def make_records(count: int, size: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        content = os.urandom(size - 8) + i.to_bytes(8, "big")
        sub = submissions.ArtifactSubmission(
            content=content, kind="sbom", digest=digest_of(content), submission_id=str(i)
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
    asyncio.run(create_topics(settings))
    records = make_records(count, size)
    mb = count * size / 1e6

    raw_topic = f"b{tag}.raw"
    asyncio.run(make_topic(settings, raw_topic))
    t0 = time.perf_counter()
    asyncio.run(produce_all(settings, raw_topic, records))
    asyncio.run(consume_all(settings, raw_topic, count))
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

    t0 = time.perf_counter()
    asyncio.run(consume_all(settings, topics.events, count))
    raw_events_s = time.perf_counter() - t0
    with IndexStore(work / f"rebuild-{tag}", unlogged=True) as store:
        t0 = time.perf_counter()
        replayed = asyncio.run(replay(settings, store))
        rebuild_s = time.perf_counter() - t0
        assert store.count() == count, (store.count(), count)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--sizes", default="1024,65536")
    parser.add_argument("--workdir", help="keep homes, logs and broker files here (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="stella-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        broker = None
        bootstrap = os.environ.get("STELLA_KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = LocalBroker(root=work / "broker", port=free_port(), controller_port=free_port())
            broker.start()
            bootstrap = broker.bootstrap
        os.environ.pop("STELLA_KAFKA_BOOTSTRAP", None)
        try:
            rows = [run_size(bootstrap, work, args.count, size) for size in sizes]
        finally:
            if broker:
                broker.stop()
    result = {"when": datetime.now(UTC).isoformat(), "cores": os.cpu_count(), "results": rows}
    out = Path(__file__).parent / "results" / f"ingest-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cores: {os.cpu_count()}   artifacts per size: {args.count}")
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
    print(f"written to {out}")


if __name__ == "__main__":
    main()
