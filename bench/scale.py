"""Scale-out: ingest with 1 and 2 workers, on one broker and on a three-broker cluster, each against
raw aiokafka on the same brokers, measured in the same run.

    python bench/scale.py [--count 20000] [--size 1024] [--partitions 4]
    make bench-scale

For each cluster (one local broker; three local brokers, 3 replicas, min.insync.replicas=2) and
each number of workers (1, 2), in a fresh locker (own home, topic prefix, group):
(a) raw aiokafka: the same submission records produced (acks=all, idempotent) to a plain topic
    with the locker's partitions and replication, and consumed back;
(b) the locker: `stella service start --workers N`, the records produced to
    `evidence.submissions`, until worker 0's index holds every artifact (every worker builds the
    whole index, so worker 0 holding them all is the end of the work).
Prints artifacts/s and the ratio to (a) for each, and the scaling factor (2 workers / 1 worker)
on each cluster; writes bench/results/scale-out-*.json with the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import code_version, load_average, new_locker
from ingest import consume_all, index_count, make_records, produce_all

from commands import access, service
from commands.broker import LocalBroker, LocalCluster, free_port, port_open
from locker import config
from locker.cas import BlobStore
from locker.config import max_message_bytes
from streams.kafka import admin
from streams.topics import Topics


@contextmanager
def brokers(work: Path, nodes: int, partitions: int) -> Iterator[tuple[str, dict[str, str]]]:
    """(bootstrap, the environment of its logins) of `nodes` local brokers, stopped after."""
    if nodes == 1:
        one = LocalBroker(
            root=work / "broker", port=free_port(), controller_port=free_port(), partitions=partitions
        )
        one.start()
        try:
            yield one.bootstrap, one.client_env()
        finally:
            one.stop()
        return
    port = free_port()
    while any(port_open("127.0.0.1", port + k) for k in range(2 * nodes)):
        port = free_port()
    cluster = LocalCluster.of(
        work / "cluster", nodes, port, port + 1, partitions=partitions, credentials=work / "secrets"
    )
    cluster.start()
    try:
        yield cluster.bootstrap, cluster.nodes[0].client_env()
    finally:
        cluster.stop()


def fresh_locker(bootstrap: str, env: dict[str, str], work: Path) -> config.Settings:
    """`common.new_locker` on these brokers, with their logins, its topics and ACLs made."""
    os.environ.update(env)
    settings = new_locker(bootstrap, work)
    BlobStore(settings.evidence_path).ensure()
    access.set_up(settings)
    return settings


async def raw_topic(settings: config.Settings, name: str, replicas: int) -> None:
    big = str(max_message_bytes(settings.max_content_bytes))
    configs = {"max.message.bytes": big} | ({"min.insync.replicas": "2"} if replicas >= 3 else {})
    async with admin(settings) as a:
        await a.create_topics([NewTopic(name, settings.partitions, replicas, topic_configs=configs)])


def run(
    bootstrap: str, env: dict[str, str], work: Path, nodes: int, workers: int, count: int, size: int
) -> dict:
    settings = fresh_locker(bootstrap, env, work)
    records = make_records(count, size, id_prefix=f"{nodes}-{workers}-")

    name = f"{settings.topic_prefix}raw"
    raw = settings.acting_as("admin")  # a topic outside the locker's ACLs
    asyncio.run(raw_topic(raw, name, min(3, nodes)))
    t0 = time.perf_counter()
    asyncio.run(produce_all(raw, name, records))
    asyncio.run(consume_all(raw, name, count))
    raw_s = time.perf_counter() - t0

    service.start(settings, workers=workers)
    try:
        t0 = time.perf_counter()
        asyncio.run(produce_all(settings, Topics(settings.topic_prefix).submissions, records))
        while index_count(settings) < count:
            time.sleep(0.05)
        ingest_s = time.perf_counter() - t0
        shares = [
            (service.health(settings.as_worker(n)) or {}).get("loops", {}).get("ingest", {}).get("records", 0)
            for n in range(workers)
        ]
    finally:
        service.stop(settings)
    row = {
        "brokers": nodes,
        "workers": workers,
        "artifacts": count,
        "payload_bytes": size,
        "raw_s": raw_s,
        "raw_artifacts_per_s": count / raw_s,
        "ingest_s": ingest_s,
        "ingest_artifacts_per_s": count / ingest_s,
        "ingest_vs_raw": raw_s / ingest_s,
        "ingested_by_worker": shares,
    }
    print(
        f"{nodes} broker(s), {workers} worker(s): raw {row['raw_artifacts_per_s']:8.0f}/s  "
        f"locker {row['ingest_artifacts_per_s']:8.0f}/s  ratio {row['ingest_vs_raw']:.2f}  shares {shares}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workdir", help="keep homes, logs and broker files here (default: a temp dir)")
    args = parser.parse_args()
    load_at_start = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="stella-scale-out-") as tmp:
        work = Path(args.workdir or tmp)
        for nodes in (1, 3):
            with brokers(work / f"brokers-{nodes}", nodes, args.partitions) as (bootstrap, env):
                for workers in (1, 2):
                    rows.append(run(bootstrap, env, work, nodes, workers, args.count, args.size))
    scaling = {
        nodes: next(r for r in rows if r["brokers"] == nodes and r["workers"] == 2)["ingest_artifacts_per_s"]
        / next(r for r in rows if r["brokers"] == nodes and r["workers"] == 1)["ingest_artifacts_per_s"]
        for nodes in (1, 3)
    }
    for nodes, factor in scaling.items():
        print(f"{nodes} broker(s): 2 workers / 1 worker = {factor:.2f}")
    result = {
        "when": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "code": code_version(),
        "load_average": {"start": load_at_start, "end": load_average()},
        "results": rows,
        "scaling_2_over_1": {str(k): v for k, v in scaling.items()},
    }
    out = Path(__file__).parent / "results" / f"scale-out-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
