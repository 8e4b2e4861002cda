"""Backup, restore and point-in-time recovery against baselines measured in the same run.

    python bench/recovery.py [--count 1000000] [--size 1024] [--bad 1000]
    make bench-recovery

One locker on one local broker (or STELLA_KAFKA_BOOTSTRAP), the real service:

(1) --count submissions of --size bytes are ingested through the service (as bench/scale.py
    produces them), and an anchor A is created.
(2) backup: `stella backup create` (CLI wall time: it also reads and writes every record of the
    two forever topics and folds the events once for the index checksum) against `tar -cf` of the
    storage folder (the blobs the backup copies) followed by `sync -f`, since the backup fsyncs
    what it writes. MB/s = bytes of the blob files / seconds. Target >= 0.5.
(3) point-in-time recovery at --count events: --bad more submissions and one artifact ingested
    before A marked corrupted (so that the restore must fold that artifact's history again, read
    back from the log), then `stella evidence restore --to-anchor A` (CLI wall time) against a
    bare aiokafka consume of every record of `evidence.events` (what any fold of the log costs
    at least). Target >= 0.5. The index checksum after it must equal the one at A.
(4) restore: the service stopped, `stella evidence restore --backup-id` onto a new topic prefix and
    a new storage root (CLI wall time, and its phases: checks, blobs, records, index) against
    (a) `tar -xf` of the tar from (2) into an empty folder plus `sync -f`, in MB/s of the blob
    bytes, and (b) a raw aiokafka produce (idempotent, acks=all, as the restore produces) of the
    same event records to a fresh topic, against the restore's records phase and its whole time.
    Targets >= 0.5.

Writes bench/results/recovery-*.json. A million artifacts take about 25 minutes on 2 cores; use
--count 20000 while developing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import broker, code_version, folder_bytes, load_average, new_locker, stella
from million import Corpus, bare_consume, log, produce, wait_ingested

from commands import access, service
from commands.anchors import ensure_key
from commands.backup import read_records
from locker import config
from streams.kafka import producer
from streams.topics import Topics


def timed_shell(command: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    return time.perf_counter() - t0


async def raw_produce(settings: config.Settings, topic: str, folder: Path) -> int:
    """The backup's event records to `topic`, as fast as aiokafka goes (no checks, no ordering
    beyond the producer's own)."""
    count = 0
    async with producer(settings, max_batch_size=1 << 20) as p:
        pending = []
        for r in read_records(folder / "events.records"):
            pending.append(await p.send(topic, r.value, key=r.key, partition=r.partition))
            count += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--bad", type=int, default=1000, help="submissions after the anchor, voided again")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    load_at_start = load_average()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "code": code_version(),
        "cores": os.cpu_count(),
        "count": args.count,
        "size": args.size,
    }
    with tempfile.TemporaryDirectory(prefix="stella-bench-recovery-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with broker(work) as bootstrap:
            settings = new_locker(bootstrap, work, STELLA_COMMANDS__TIMEOUT="900")
            ensure_key(settings)
            access.set_up(settings)
            service.start(settings)
            try:
                corpus = Corpus(args.count, args.size, max(args.count // 10, 1))
                result |= ingest_and_back_up(settings, work, corpus)
                result["pitr"] = point_in_time(settings, corpus, args.bad, result["anchor"])
            finally:
                service.stop(settings)
            result["restore"] = restore(settings, work, result["backup"])
        log("removing the temporary folder" if args.workdir is None else f"kept {work}")
    result["load_average"] = {"start": load_at_start, "end": load_average()}
    out = Path(__file__).parent / "results" / f"recovery-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written to {out}")


def ingest_and_back_up(settings: config.Settings, work: Path, corpus: Corpus) -> dict[str, Any]:
    started = time.monotonic()
    produce(settings, Topics(settings.topic_prefix).submissions, corpus)
    wait_ingested(settings, corpus.count, started)
    log(f"ingested {corpus.count} in {time.monotonic() - started:.0f} s")
    _, anchor = stella("evidence", "anchor", "create")
    _, at_anchor = stella("evidence", "index", "status", "--checksum", "--sample", "0")
    root = work / "backups"
    backup_s, made = stella("backup", "create", "--output", str(root))
    size = folder_bytes(settings.evidence_path)
    log(f"backup: {backup_s:.1f} s for {size / 1e6:.0f} MB of blobs, {made['bytes'] / 1e6:.0f} MB written")
    tar = work / "storage.tar"
    tars = []
    for _ in range(2):  # this machine's file system times move a lot between runs: the better of two
        tar.unlink(missing_ok=True)
        tars.append(timed_shell(f"tar -cf {tar} -C {settings.evidence_path} . && sync -f {tar}"))
    tar_s = min(tars)
    log(f"tar -cf + sync: {tars} s")
    return {
        "anchor": anchor["anchor_id"],
        "checksum_at_anchor": at_anchor["checksum"],
        "backup": {
            "id": made["backup_id"],
            "root": str(root),
            "bytes": size,
            "bytes_written": made["bytes"],
            "events": made["events"],
            "seconds": backup_s,
            "phases": made["phases"],
            "mb_per_s": size / 1e6 / backup_s,
            "tar": str(tar),
            "tar_seconds": tar_s,
            "tar_runs": tars,
            "tar_mb_per_s": size / 1e6 / tar_s,
            "ratio": tar_s / backup_s,
        },
    }


def point_in_time(settings: config.Settings, corpus: Corpus, bad: int, anchor: str) -> dict[str, Any]:
    started = time.monotonic()
    produce(settings, Topics(settings.topic_prefix).submissions, Corpus(bad, corpus.size, 1))
    wait_ingested(settings, corpus.count + bad, started)
    victim = corpus.artifact_id(0)  # ingested before the anchor: its history is read back
    stella("evidence", "mark-corrupted", "--id", victim, "--reason", "a mistake, voided again")
    events = corpus.count + bad + 1
    t0 = time.perf_counter()
    seen = asyncio.run(bare_consume(settings, Topics(settings.topic_prefix).events, events))
    consume_s = time.perf_counter() - t0
    log(f"bare consume of {seen} events: {consume_s:.1f} s; restoring to the anchor")
    pitr_s, restored = stella("evidence", "restore", "--to-anchor", anchor, "--reason", "bench")
    log(f"restore --to-anchor: {pitr_s:.1f} s, {restored['voided_records']} records voided")
    return {
        "events_on_log": seen,
        "voided_records": restored["voided_records"],
        "artifacts_voided": len(restored["artifacts_voided"]),
        "seconds": pitr_s,
        "bare_consume_seconds": consume_s,
        "ratio": consume_s / pitr_s,
        "checksum": stella("evidence", "index", "status", "--checksum", "--sample", "0")[1]["checksum"],
    }


def restore(settings: config.Settings, work: Path, backup: dict[str, Any]) -> dict[str, Any]:
    untars = []
    for n in range(2):
        untarred = work / f"untarred-{n}"
        untarred.mkdir()
        untars.append(timed_shell(f"tar -xf {backup['tar']} -C {untarred} && sync -f {untarred}"))
        shutil.rmtree(untarred)
    untar_s = min(untars)
    log(f"tar -xf + sync: {untars} s")
    tag = os.urandom(4).hex()
    os.environ.update(STELLA_KAFKA__TOPICPREFIX=f"r{tag}.", STELLA_KAFKA__GROUPID=f"restored-{tag}")
    fresh = config.load()
    target = work / "restored-evidence"
    restore_s, restored = stella(
        "evidence",
        "restore",
        "--backup-id",
        backup["id"],
        "--backup-root",
        backup["root"],
        "--target",
        str(target),
    )
    log(f"restore: {restore_s:.1f} s, phases {restored['phases']}")
    scratch = Topics(f"raw{tag}.").events
    os.environ["STELLA_KAFKA__TOPICPREFIX"] = f"raw{tag}."
    access.set_up(config.load())
    t0 = time.perf_counter()
    # As the service, which restore writes as too.
    produced = asyncio.run(
        raw_produce(fresh.acting_as("service"), scratch, Path(backup["root"]) / backup["id"])
    )
    produce_s = time.perf_counter() - t0
    log(f"raw aiokafka produce of {produced} records: {produce_s:.1f} s")
    return {
        "seconds": restore_s,
        "phases": restored["phases"],
        "matches_backup": restored["matches_backup"],
        "events": restored["events"],
        "mb_per_s": backup["bytes"] / 1e6 / restore_s,
        "untar_seconds": untar_s,
        "untar_runs": untars,
        "untar_mb_per_s": backup["bytes"] / 1e6 / untar_s,
        "ratio_vs_untar": untar_s / restore_s,
        "raw_produce_seconds": produce_s,
        "ratio_records_vs_raw_produce": produce_s / restored["phases"]["records"],
        "ratio_whole_vs_raw_produce": produce_s / restore_s,
    }


def print_table(r: dict[str, Any]) -> None:
    b, p, s = r["backup"], r["pitr"], r["restore"]
    mb = b["bytes"] / 1e6
    print(f"{r['count']} artifacts of {r['size']} bytes; {r['cores']} cores; load {r['load_average']}")
    print(
        f"backup create: {b['seconds']:.1f} s ({b['mb_per_s']:.0f} MB/s of {mb:.0f} MB), phases {b['phases']}"
    )
    print(
        f"  tar -cf + sync: {b['tar_seconds']:.1f} s ({b['tar_mb_per_s']:.0f} MB/s)   "
        f"ratio {b['ratio']:.2f} (>= 0.5)"
    )
    print(
        f"restore --to-anchor at {p['events_on_log']} events: {p['seconds']:.1f} s, "
        f"{p['voided_records']} voided"
    )
    same = p["checksum"] == r["checksum_at_anchor"]
    print(
        f"  bare consume: {p['bare_consume_seconds']:.1f} s   ratio {p['ratio']:.2f} (>= 0.5); "
        f"index as at A: {same}"
    )
    print(f"restore --backup-id: {s['seconds']:.1f} s ({s['mb_per_s']:.0f} MB/s), phases {s['phases']}")
    print(f"  tar -xf + sync: {s['untar_seconds']:.1f} s   ratio {s['ratio_vs_untar']:.2f} (>= 0.5)")
    print(
        f"  raw aiokafka produce of {s['events']} records: {s['raw_produce_seconds']:.1f} s   ratio to the "
        f"records phase {s['ratio_records_vs_raw_produce']:.2f}, to the whole restore "
        f"{s['ratio_whole_vs_raw_produce']:.2f} (>= 0.5); matches the backup: {s['matches_backup']}"
    )


if __name__ == "__main__":
    main()
