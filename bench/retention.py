"""Retention cleanup against `rm` of the same files, measured in the same run.

    python bench/retention.py [--count 100000] [--size 1024]
    make bench-retention

One locker on one local broker (or STELLA_KAFKA_BOOTSTRAP), the real service: --count
submissions of --size bytes are ingested, the blob folder is copied aside (`cp -a`), then
(a) baseline: `rm -rf` of the copy followed by `sync -f` (the same files, the same file system);
(b) `stella evidence cleanup --apply-retention` with `Retention:Default` = 1s, CLI wall time: the
    service decides from its index, records an `artifact.expired` event per artifact and
    `retention.applied`, the projection marks each expired and deletes its blob (one `syncfs` a
    batch), and the CLI waits until no deletion is pending.
Target: (a) / (b) >= 0.5. Archive (`tar` + `zstd`) is not built yet, so it is not measured here.

Writes bench/results/retention-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import broker, code_version, folder_bytes, load_average, new_locker, stella
from scale import Corpus, log, produce, wait_ingested

from commands import service
from locker.cas import BlobStore
from streams.kafka import create_topics
from streams.topics import Topics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    load_at_start = load_average()
    with tempfile.TemporaryDirectory(prefix="stella-bench-retention-") as tmp:
        work = Path(tmp)
        with broker(work) as bootstrap:
            settings = new_locker(bootstrap, work, STELLA_COMMANDS__TIMEOUT="900")
            BlobStore(settings.evidence_path).ensure()
            asyncio.run(create_topics(settings))
            service.start(settings)
            try:
                corpus = Corpus(args.count, args.size, max(args.count // 10, 1))
                started = time.monotonic()
                produce(settings, Topics(settings.topic_prefix).submissions, corpus)
                wait_ingested(settings, args.count, started)
                blobs = BlobStore(settings.evidence_path).blobs
                size = folder_bytes(blobs)
                copy = work / "copy"
                subprocess.run(["cp", "-a", str(blobs), str(copy)], check=True)
                subprocess.run(["sync"], check=True)
                t0 = time.perf_counter()
                subprocess.run(f"rm -rf {copy} && sync -f {work}", shell=True, check=True)
                rm_s = time.perf_counter() - t0
                log(f"rm -rf + sync of {args.count} blob files: {rm_s:.1f} s")
                time.sleep(1.1)
                os.environ["STELLA_RETENTION__DEFAULT"] = "1s"
                cleanup_s, done = stella("evidence", "cleanup", "--apply-retention")
                left = sum(1 for p in blobs.rglob("*") if p.is_file())
                log(f"cleanup: {cleanup_s:.1f} s, {done['expired']} expired, {left} blob files left")
            finally:
                service.stop(settings)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "code": code_version(),
        "cores": os.cpu_count(),
        "count": args.count,
        "size": args.size,
        "bytes": size,
        "rm_seconds": rm_s,
        "cleanup_seconds": cleanup_s,
        "expired": done["expired"],
        "phases": done["phases"],
        "blob_files_left": left,
        "artifacts_per_s": done["expired"] / cleanup_s,
        "mb_per_s": size / 1e6 / cleanup_s,
        "rm_artifacts_per_s": args.count / rm_s,
        "ratio": rm_s / cleanup_s,
        "load_average": {"start": load_at_start, "end": load_average()},
    }
    out = Path(__file__).parent / "results" / f"retention-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.count} artifacts of {args.size} bytes; {result['cores']} cores; load {result['load_average']}"
    )
    print(
        f"cleanup --apply-retention: {cleanup_s:.1f} s ({result['artifacts_per_s']:.0f} artifacts/s, "
        f"{result['mb_per_s']:.1f} MB/s); rm -rf + sync: {rm_s:.1f} s   ratio {result['ratio']:.2f} (>= 0.5)"
    )
    print(f"phases: {done['phases']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
