"""One locker with a million small artifacts: rebuild, lookups, memory, disk, anchors under load.

    python bench/million.py [--count 1000000] [--subjects COUNT/10] [--anchors 10000] [--clients 200]
    make bench-million

Everything runs against the real service (`python -m streams.worker`, as `stella service start`
runs it) on one local broker (or STELLA_KAFKA_BOOTSTRAP), in one fresh locker:

(1) ingest: --count submissions of --size bytes (default 1 KiB), artifact i about subject
    i mod --subjects (so a subject has about count/subjects artifacts), are produced with
    librdkafka (confluent-kafka) as fast as it goes, and the service ingests them (checked,
    durable blob -> event -> index row and Merkle leaf); done when /metrics counts every
    artifact in the index and every event in the Merkle trees. Prints the time taken (context
    only: the producer competes for the same two cores).
(2) at that point: resident memory (VmRSS) of the service process and of its children (the
    blob-writer process, the verify loop's hashing processes, multiprocessing's helper), and the
    bytes of the files in the index and Merkle RocksDB folders (as they are on disk, write-ahead
    log included) divided by --count.
(3) HTTP lookups, one client, one keep-alive connection, one request at a time, over --lookups
    random artifacts: `GET /artifacts/{id}/meta`, and `GET /artifacts?subject=...` for as many
    random subjects (every answer is checked: status, id, number of artifacts). p50/p99 of the
    wall time from sending the request to the last byte of the answer; target p99 <= 5 ms.
(3b) `stella evidence verify --mode quick --sample 1%`: the CLI's wall time and the run's own
    (planning reads the whole index and every last-check row). Printed, no target.
(4) rebuild: `commands.index.replay` of the whole events topic into a fresh IndexStore opened
    as `stella evidence index rebuild` opens it (bulk: unlogged, vector memtables; the flush at
    close is timed apart), against a bare aiokafka consume of the same topic (no decoding), once
    before and once after the rebuild; the ratio uses the faster bare consume. Target >= 0.6.
    The service stays up, idle.
(5) --anchors anchors in one chain: the first --anchor-commands - 1 through `anchor.create`
    commands sent in bulk to `evidence.commands` (the service signs and appends them one after the
    other; their rate is printed), then all but one signed here with the locker's key, chained to
    the service's last and appended to `evidence.anchors` in bulk (the service's chain projection
    checks and applies each one as it would its own: the command path alone would take about 10
    minutes for 10k here), then the last through a command again, which must link to ours; the
    projection's status of every anchor is read at the end (all "ok" expected).
(6) `GET /anchors/latest` and `GET /metrics`: first one client, sequential (the service time),
    then --clients concurrent clients, each on its own keep-alive connection (all connected
    before the clock starts) sending --requests requests one after the other. The client is a
    minimal HTTP/1.1 client on asyncio streams, lighter than aiohttp's, in this process. p50/p99
    per request and requests/s, and the CPU time the service and this client spent per request
    (/proc/<pid>/stat); target p50 <= 50 ms. For scale, not a target: one client's
    `GET /anchors`, which lists every anchor.
(7) resident memory again at the end.

Writes bench/results/million-*.json (scale-*.json before this benchmark was renamed), with the
machine's load average at start and end (it is shared), and prints a table. A million artifacts
take about 14 minutes on the 2-core machine of the README, plus a few minutes to delete the
temporary folder (a million blob files); use --count 20000 while developing, --workdir to keep
the locker, broker and logs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    broker,
    children,
    cmdline,
    code_version,
    folder_bytes,
    load_average,
    loop_stats,
    new_locker,
    rss_bytes,
    stage_means,
    summary_ms,
)
from confluent_kafka import Producer

from commands import access, service
from commands.anchors import ensure_key
from commands.index import replay
from locker import anchors, config, requests, signing, submissions, tokens
from locker.anchors import AnchorBody
from locker.cas import BlobStore
from locker.config import max_message_bytes
from projections.anchor_store import AnchorStore
from projections.store import IndexStore
from streams.anchoring import read_records
from streams.kafka import assign_all, consumer
from streams.topics import Topics

KINDS = ("attestation", "sbom", "vex", "scan", "signature", "other")


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Corpus:
    """Artifact i: a per-run random block + i (so any id can be computed again, nothing is kept),
    about subject i mod `subjects`."""

    def __init__(self, count: int, size: int, subjects: int) -> None:
        self.count, self.size = count, size
        self.block = os.urandom(size - 8)
        salt = self.block[:8].hex()
        self.subjects = [
            "sha256:" + hashlib.sha256(f"{salt}/subject/{j}".encode()).hexdigest() for j in range(subjects)
        ]

    def content(self, i: int) -> bytes:
        return self.block + i.to_bytes(8, "big")

    def artifact_id(self, i: int) -> str:
        return "sha256:" + hashlib.sha256(self.content(i)).hexdigest()

    def subject_of(self, i: int) -> int:
        return i % len(self.subjects)

    def per_subject(self, j: int) -> int:
        return len(range(j, self.count, len(self.subjects)))

    def record(self, i: int) -> tuple[bytes, bytes]:
        content = self.content(i)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        sub = submissions.ArtifactSubmission(
            content=content,
            kind=KINDS[i % len(KINDS)],  # type: ignore[arg-type]
            subjects=(self.subjects[self.subject_of(i)],),
            producer="bench-scale",
            media_type="application/octet-stream",
            digest=digest,
            submission_id=str(i),
        )
        return digest.encode(), submissions.encode(sub)


# (1) ingest.


def produce(settings: config.Settings, topic: str, corpus: Corpus) -> float:
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            **settings.kafka_auth("producer").librdkafka(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1 << 20,
            "queue.buffering.max.kbytes": 256 * 1024,
            "message.max.bytes": max_message_bytes(settings.max_content_bytes),
            "partitioner": "murmur2_random",  # what Java clients and the service use
        }
    )
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    started = time.monotonic()
    for i in range(corpus.count):
        key, value = corpus.record(i)
        while True:
            try:
                p.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
        if i and i % 200_000 == 0:
            log(f"produced {i}")
    p.flush()
    if failed:
        raise RuntimeError(f"{len(failed)} submissions not delivered: {failed[0]}")
    return time.monotonic() - started


def metrics(settings: config.Settings) -> dict[str, float]:
    """The /metrics gauges: name{labels} -> value."""
    status, text = http_get(settings, "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status} {text[:200]}")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def http_get(settings: config.Settings, path: str) -> tuple[int, str]:
    """One GET on a new connection: (status, body)."""
    host, port = str(settings.get("Service:Host")), settings.integer("Service:Port")
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def wait_ingested(settings: config.Settings, count: int, started: float) -> list[list[float]]:
    """Poll /metrics until the index and the Merkle trees hold `count` artifacts; returns
    [[seconds since start, indexed, leaves]] every ~5 s."""
    progress: list[list[float]] = []
    last_change, last = time.monotonic(), (-1.0, -1.0)
    while True:
        m = metrics(settings)
        indexed = m.get("stella_evidence_artifacts_total", 0)
        leaves = sum(v for k, v in m.items() if k.startswith("stella_merkle_tree_size"))
        now = time.monotonic()
        if not progress or now - started - progress[-1][0] >= 5:
            progress.append([round(now - started, 1), indexed, leaves])
            if len(progress) % 6 == 0:
                log(f"indexed {indexed:.0f}, leaves {leaves:.0f}")
        if indexed >= count and leaves >= count:
            progress.append([round(now - started, 1), indexed, leaves])
            return progress
        if (indexed, leaves) != last:
            last_change, last = now, (indexed, leaves)
        elif now - last_change > 180:
            raise RuntimeError(f"ingest stalled at {indexed:.0f} indexed, {leaves:.0f} leaves")
        time.sleep(1)


# (2) memory and disk.


def memory(settings: config.Settings) -> dict[str, Any]:
    pid = service.daemon(settings).pid()
    assert pid is not None, "the service is not running"
    kids = [{"pid": c, "rss_bytes": rss_bytes(c), "cmdline": cmdline(c)[:200]} for c in children(pid)]
    main = rss_bytes(pid)
    return {
        "service_rss_bytes": main,
        "children": kids,
        "total_rss_bytes": main + sum(k["rss_bytes"] for k in kids),
    }


def disk(settings: config.Settings, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in (("index", settings.index_path), ("merkle", settings.merkle_path)):
        total = folder_bytes(path)
        wal = sum(f.stat().st_size for f in path.glob("*.log"))
        out[name] = {"bytes": total, "wal_bytes": wal, "bytes_per_artifact": total / count}
    out["bytes_per_artifact"] = (out["index"]["bytes"] + out["merkle"]["bytes"]) / count
    return out


# (3) lookups.


def lookups(settings: config.Settings, corpus: Corpus, n: int, rng: random.Random) -> dict[str, Any]:
    host, port = str(settings.get("Service:Host")), settings.integer("Service:Port")
    conn = http.client.HTTPConnection(host, port, timeout=30)

    auth = {"Authorization": "Bearer " + settings.token_file.read_text().strip()}

    def get(path: str) -> tuple[float, Any]:
        started = time.perf_counter()
        conn.request("GET", path, headers=auth)
        resp = conn.getresponse()
        body = resp.read()
        took = time.perf_counter() - started
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return took, json.loads(body)

    for i in rng.sample(range(corpus.count), min(20, corpus.count)):  # warm-up: connection, code paths
        get(f"/artifacts/{corpus.artifact_id(i)}/meta")
    by_id = []
    for i in rng.sample(range(corpus.count), min(n, corpus.count)):
        aid = corpus.artifact_id(i)
        took, body = get(f"/artifacts/{aid}/meta")
        assert body["artifact_id"] == aid, body
        by_id.append(took)
    by_subject, returned = [], 0
    for j in rng.sample(range(len(corpus.subjects)), min(n, len(corpus.subjects))):
        took, body = get(f"/artifacts?subject={corpus.subjects[j]}")
        assert len(body["artifacts"]) == corpus.per_subject(j), (j, len(body["artifacts"]))
        returned += len(body["artifacts"])
        by_subject.append(took)
    conn.close()
    return {
        "by_id": summary_ms(by_id),
        "by_subject": summary_ms(by_subject) | {"mean_artifacts": returned / max(len(by_subject), 1)},
    }


# (3b) a quick verification run of a 1% sample.


def quick_verify(settings: config.Settings) -> dict[str, Any]:
    """`stella evidence verify --mode quick --sample 1%` through the service: CLI wall time, and
    the run's own time (planning included: the index and the last-check rows are read whole)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "evidence",
            "verify",
            "--mode",
            "quick",
            "--sample",
            "1%",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"STELLA_COMMANDS__TIMEOUT": "600"},
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"quick verify failed ({proc.returncode}): {proc.stderr}")
    run = json.loads(proc.stdout)["run"]
    started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    completed = datetime.fromisoformat(run["completed_at"].replace("Z", "+00:00"))
    return {
        "planned": run["planned"],
        "ok": run["ok"],
        "cli_s": seconds,
        "run_s": (completed - started).total_seconds(),
    }


# (4) rebuild.


async def bare_consume(settings: config.Settings, topic: str, count: int) -> int:
    seen = 0
    async with consumer(settings) as c:
        await c.seek_to_beginning(*await assign_all(c, topic))
        while seen < count:
            for batch in (await c.getmany(timeout_ms=1000, max_records=10000)).values():
                seen += len(batch)
    return seen


def rebuild(settings: config.Settings, work: Path, events: int) -> dict[str, Any]:
    topic = Topics(settings.topic_prefix).events
    raw = []
    t0 = time.perf_counter()
    asyncio.run(bare_consume(settings, topic, events))
    raw.append(time.perf_counter() - t0)
    log(f"bare consume of {events} events: {raw[-1]:.1f} s; rebuilding")
    store = IndexStore(work / "rebuild", bulk=True)  # as commands/index.py rebuilds
    t0 = time.perf_counter()
    replayed = replay(settings, store)
    rebuild_s = time.perf_counter() - t0
    entries = store.count()
    t0 = time.perf_counter()
    store.close()
    flush_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    asyncio.run(bare_consume(settings, topic, events))
    raw.append(time.perf_counter() - t0)
    return {
        "events": replayed,
        "entries": entries,
        "rebuild_s": rebuild_s,
        "rebuild_events_per_s": replayed / rebuild_s,
        "flush_at_close_s": flush_s,
        "bare_consume_s": raw,
        "bare_consume_events_per_s": events / min(raw),
        "rebuild_vs_bare_consume": min(raw) / rebuild_s,
    }


# (5) anchors.


def make_anchors(settings: config.Settings, n: int, via_service: int) -> dict[str, Any]:
    """`n` anchors in one chain: `via_service` - 1 through `anchor.create` commands, then the rest
    but one signed here, then the last one through a command again (it must link to ours)."""
    first = max(1, min(via_service, n) - 1)
    out: dict[str, Any] = {"anchors": n}
    start_seq = latest_sequence(settings)
    topics = Topics(settings.topic_prefix)
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            **settings.kafka_auth().librdkafka(),
            "acks": "all",
            "linger.ms": 20,
        }
    )

    def commands(k: int) -> None:
        for _ in range(k):
            command = requests.create_anchor()
            p.produce(topics.commands, key=command.command_id.encode(), value=requests.encode(command))
            p.poll(0)
        p.flush()

    started, loops = time.monotonic(), loop_stats(settings)
    commands(first)
    seq = wait_sequence(settings, start_seq + first)
    took = time.monotonic() - started
    out["via_commands"] = {
        "anchors": first,
        "seconds": took,
        "anchors_per_s": first / took,
        "anchors_loop": stage_means(loop_stats(settings), loops)["anchors"],
    }
    log(f"{first} anchor.create commands carried out in {took:.1f} s ({first / took:.1f}/s)")
    bench_signed = n - first - 1
    if bench_signed > 0:
        signer = signing.load_signer(settings.key_file, settings.origin)
        previous = asyncio.run(read_records(settings))[-1].raw
        body = anchors.decode(previous).body
        started = time.monotonic()
        for _ in range(bench_signed):
            body = AnchorBody(
                chain_id=body.chain_id,
                sequence=body.sequence + 1,
                previous=hashlib.sha256(previous).digest(),
                created_at=datetime.now(UTC),
                origin=body.origin,
                partitions=body.partitions,
            )
            previous = anchors.encode(anchors.sign(body, signer))
            p.produce(topics.anchors, key=body.chain_id.encode(), value=previous)
            p.poll(0)
        p.flush()
        sent = time.monotonic() - started
        seq = wait_sequence(settings, seq + bench_signed)
        took = time.monotonic() - started
        out["signed_here"] = {
            "anchors": bench_signed,
            "sign_and_send_s": sent,
            "seconds_until_applied": took,
            "applied_per_s": bench_signed / took,
        }
        log(f"{bench_signed} anchors signed here, applied by the service in {took:.1f} s")
    if n > first:
        commands(1)
        seq = wait_sequence(settings, seq + 1)
    out["last_sequence"] = seq
    return out


def wait_sequence(settings: config.Settings, target: int) -> int:
    """Wait until the latest anchor's sequence is `target` (30 minutes at most)."""
    started = last_log = time.monotonic()
    while (seq := latest_sequence(settings)) < target:
        time.sleep(0.2)
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log(f"anchors: at sequence {seq}, waiting for {target}")
        if time.monotonic() - started > 1800:
            raise RuntimeError(f"the latest anchor is still {seq} after 30 minutes, not {target}")
    return seq


def chain_status(settings: config.Settings) -> dict[str, int]:
    """How many anchors in the chain projection have each status (the service is stopped)."""
    out: dict[str, int] = {}
    with AnchorStore(settings.chain_path, readonly=True) as chain:
        for entry in chain.entries():
            out[entry.status] = out.get(entry.status, 0) + 1
    return out


def latest_sequence(settings: config.Settings) -> int:
    """The sequence of the latest anchor; -1 if there is none."""
    status, body = http_get(settings, "/anchors/latest")
    return int(json.loads(body)["sequence"]) if status == 200 else -1


# (6) concurrent clients.


class Client:
    """A minimal HTTP/1.1 keep-alive client: one connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> int:
        """Send one GET and read the whole answer; returns the body's length."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        status = await self.reader.readline()
        length = -1
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError(f"GET {path}: transfer-encoding not supported by this client")
        if not status.startswith(b"HTTP/1.1 200") or length < 0:
            raise RuntimeError(f"GET {path}: {status!r}, content-length {length}")
        await self.reader.readexactly(length)
        return length

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def load(host: str, port: int, pid: int, path: str, clients: int, per_client: int) -> dict[str, Any]:
    conns = [Client(host, port) for _ in range(clients)]
    t0 = time.perf_counter()
    for i in range(0, clients, 50):  # in groups: the server's listen backlog is 128
        await asyncio.gather(*(c.connect() for c in conns[i : i + 50]))
    connect_s = time.perf_counter() - t0
    await conns[0].get(path)  # warm-up
    latencies: list[float] = []

    async def run(c: Client) -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            await c.get(path)
            latencies.append(time.perf_counter() - started)

    server_cpu, own_cpu = cpu_seconds(pid), time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    wall = time.perf_counter() - t0
    server_cpu, own_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - own_cpu
    await asyncio.gather(*(c.close() for c in conns))
    return summary_ms(latencies) | {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / wall,
        "connect_all_s": connect_s,
        "service_cpu_ms_per_request": server_cpu / len(latencies) * 1e3,
        "client_cpu_ms_per_request": own_cpu / len(latencies) * 1e3,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def concurrency(settings: config.Settings, clients: int, per_client: int) -> dict[str, Any]:
    host, port = str(settings.get("Service:Host")), settings.integer("Service:Port")
    pid = service.daemon(settings).pid()
    assert pid is not None
    out = {}
    for path in ("/anchors/latest", "/metrics"):
        single = asyncio.run(load(host, port, pid, path, 1, 200))
        many = asyncio.run(load(host, port, pid, path, clients, per_client))
        out[path] = {"one_client": single, "concurrent": many}
        log(f"{path}: 1 client p50 {single['p50_ms']:.1f} ms; {clients} clients p50 {many['p50_ms']:.1f} ms")
    # Not a target, for scale: the whole list, which `GET /anchors` returns without ?limit=.
    whole = asyncio.run(load(host, port, pid, "/anchors", 1, 3))
    out["/anchors"] = {"one_client": whole}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--subjects", type=int, help="default: count / 10")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--anchors", type=int, default=10_000)
    parser.add_argument(
        "--anchor-commands",
        type=int,
        default=200,
        help="anchors made through anchor.create commands (the rest but one are signed here)",
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=25, help="per concurrent client")
    parser.add_argument("--workdir", help="keep homes, logs and broker files here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    count = args.count
    corpus = Corpus(count, args.size, args.subjects or max(1, count // 10))
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "code": code_version(),
        "artifacts": count,
        "payload_bytes": args.size,
        "subjects": len(corpus.subjects),
        "load_average": {"start": load_average()},
    }
    bench_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stella-million-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        with broker(work) as bootstrap:
            settings = new_locker(bootstrap, work)
            BlobStore(settings.evidence_path).ensure()
            ensure_key(settings)
            tokens.create(settings.token_file)  # as `stella init` does: /artifacts?subject= needs it
            access.set_up(settings)
            service.start(settings)
            try:
                log(f"ingesting {count} artifacts of {args.size} B, {len(corpus.subjects)} subjects")
                started = time.monotonic()
                produce_s = produce(settings, Topics(settings.topic_prefix).submissions, corpus)
                log(f"produced in {produce_s:.0f} s; waiting for the service")
                progress = wait_ingested(settings, count, started)
                ingest_s = time.monotonic() - started
                result["ingest"] = {
                    "produce_s": produce_s,
                    "seconds": ingest_s,
                    "artifacts_per_s": count / ingest_s,
                    "progress": progress,
                }
                log(f"ingested in {ingest_s:.0f} s ({count / ingest_s:.0f}/s)")
                result["memory_at_count"] = memory(settings)
                result["disk"] = disk(settings, count)
                result["lookups"] = lookups(settings, corpus, args.lookups, rng)
                log(f"lookups: {result['lookups']}")
                result["quick_verify"] = quick_verify(settings)
                log(f"quick verify of 1%: {result['quick_verify']}")
                result["rebuild"] = rebuild(settings, work, count)
                log(f"rebuild: {result['rebuild']['rebuild_s']:.1f} s")
                result["anchors"] = make_anchors(settings, args.anchors, args.anchor_commands)
                log(f"anchors: {result['anchors']}")
                result["http_load"] = concurrency(settings, args.clients, args.requests)
                result["memory_at_end"] = memory(settings)
            finally:
                service.stop(settings)
            result["anchors"]["status"] = chain_status(settings)
        result["bench_seconds"] = time.monotonic() - bench_started
        result["load_average"]["end"] = load_average()
        out = Path(__file__).parent / "results" / f"million-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print_table(result)
        print(f"written to {out}", flush=True)
        if not args.workdir:
            log("removing the temporary folder (a million blob files take a minute or two)")


def print_table(r: dict[str, Any]) -> None:
    mib = 1 << 20
    n = r["artifacts"]
    ing, mem, dsk, look, reb, anc = (
        r["ingest"],
        r["memory_at_count"],
        r["disk"],
        r["lookups"],
        r["rebuild"],
        r["anchors"],
    )
    rows = [
        (
            f"ingest of {n} artifacts ({r['payload_bytes']} B, {r['subjects']} subjects)",
            f"{ing['seconds']:.0f} s, {ing['artifacts_per_s']:.0f}/s",
            "",
        ),
        (
            f"verify --mode quick --sample 1% ({r['quick_verify']['planned']} artifacts): CLI / the run",
            f"{r['quick_verify']['cli_s']:.1f} / {r['quick_verify']['run_s']:.1f} s",
            "print it",
        ),
        (
            "rebuild / bare aiokafka consume of the events topic",
            f"{reb['rebuild_vs_bare_consume']:.2f} ({reb['rebuild_events_per_s']:.0f} vs"
            f" {reb['bare_consume_events_per_s']:.0f} events/s)",
            ">= 0.6",
        ),
        (
            "GET /artifacts/{id}/meta, p50 / p99",
            f"{look['by_id']['p50_ms']:.2f} / {look['by_id']['p99_ms']:.2f} ms",
            "p99 <= 5 ms",
        ),
        (
            f"GET /artifacts?subject= ({look['by_subject']['mean_artifacts']:.1f} each), p50 / p99",
            f"{look['by_subject']['p50_ms']:.2f} / {look['by_subject']['p99_ms']:.2f} ms",
            "p99 <= 5 ms",
        ),
        (
            f"worker RSS at {n} artifacts (with its {len(mem['children'])} child processes)",
            f"{mem['service_rss_bytes'] / mib:.0f} MiB ({mem['total_rss_bytes'] / mib:.0f} MiB)",
            "<= 1024 MiB",
        ),
        (
            "index + Merkle store bytes per artifact",
            f"{dsk['bytes_per_artifact']:.0f} ({dsk['index']['bytes_per_artifact']:.0f}"
            f" + {dsk['merkle']['bytes_per_artifact']:.0f})",
            "",
        ),
        (
            f"anchors: {anc['anchors']} in one chain, checked by the service: {anc['status']}",
            f"anchor.create: {anc['via_commands']['anchors_per_s']:.1f}/s",
            "",
        ),
        (
            "  anchors loop during anchor.create, mean ms per batch",
            " ".join(f"{k} {v}" for k, v in anc["via_commands"]["anchors_loop"]["ms_per_batch"].items() if v),
            "",
        ),
    ]
    for path, m in r["http_load"].items():
        if "concurrent" not in m:
            one = m["one_client"]
            rows.append((f"GET {path} (every anchor), 1 client: p50", f"{one['p50_ms']:.0f} ms", ""))
            continue
        c, one = m["concurrent"], m["one_client"]
        rows.append(
            (
                f"GET {path}, {c['clients']} clients: p50 / p99, req/s",
                f"{c['p50_ms']:.0f} / {c['p99_ms']:.0f} ms, {c['requests_per_s']:.0f}/s",
                "p50 <= 50 ms",
            )
        )
        rows.append((f"GET {path}, 1 client: p50 / p99", f"{one['p50_ms']:.2f} / {one['p99_ms']:.2f} ms", ""))
        rows.append(
            (
                f"GET {path}, {c['clients']} clients: CPU ms per request, service / client",
                f"{c['service_cpu_ms_per_request']:.2f} / {c['client_cpu_ms_per_request']:.2f}",
                "",
            )
        )
    rows.append(("worker RSS at the end", f"{r['memory_at_end']['service_rss_bytes'] / mib:.0f} MiB", ""))
    width = max(len(a) for a, _, _ in rows)
    load = r["load_average"]
    print(f"cores: {r['cores']}   whole benchmark: {r['bench_seconds']:.0f} s", end="   ")
    print(f"load average (1 min) at start / end: {load['start']} / {load['end']}")
    code = r["code"]
    print(f"code: {str(code['commit'])[:12]}{' with uncommitted changes' if code['dirty'] else ''}")
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<34} {c}")


if __name__ == "__main__":
    main()
