"""Full verification against `sha256sum`, measured in the same run on the same files.

(a) baseline: `find <blobs> -type f | xargs -P <cores> -n 32 sha256sum` over every blob file,
    one process per core (also `openssl dgst -sha256` the same way, which uses the CPU's SHA
    instructions where coreutils does not: the harder baseline);
(b) `stella evidence verify --mode full` through the service (command, plan, the verify loop
    hashing in one process per core, outcomes published and counted, completion), timed from the
    CLI's start to its exit, and the service's own time (the run's completed_at - started_at).
The blobs: mixed sizes from 1 KiB to 8 MiB (log-uniform) until `--gib` GiB, ingested through the
service first. Page cache: before each timed pass every blob is read once (`cat > /dev/null`), so
both read warm files; dropping the cache needs privileges these benchmarks do not assume. Then
(c) a quick run of a 1% sample.

Target: (a) / (b) >= 0.9. Run with `make bench-verify` (or `python bench/verify.py --gib 2`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import broker, code_version, load_average, new_locker, stella

from commands import access, service
from locker import config, submissions
from locker.cas import BlobStore
from locker.digests import digest_of
from projections.store import IndexStore
from streams.kafka import producer
from streams.topics import Topics

KIB, MIB, GIB = 1024, 1024 * 1024, 1024 * 1024 * 1024


def sizes(total: int, rng: random.Random) -> list[int]:
    """Blob sizes, log-uniform between 1 KiB and 8 MiB, summing to at least `total`."""
    out: list[int] = []
    while sum(out) < total:
        out.append(int(math.exp(rng.uniform(math.log(KIB), math.log(8 * MIB)))))
    return out


def chunks(all_sizes: list[int], per_chunk: int = 256 * MIB) -> Iterator[list[tuple[bytes, bytes]]]:
    """Submissions (key, value) in chunks of about `per_chunk` content bytes."""
    chunk: list[tuple[bytes, bytes]] = []
    held = 0
    for i, size in enumerate(all_sizes):
        content = os.urandom(size - 8) + i.to_bytes(8, "big")
        sub = submissions.ArtifactSubmission(
            content=content, kind="other", digest=digest_of(content), submission_id=f"v{i}"
        )
        chunk.append((digest_of(content).encode(), submissions.encode(sub)))
        held += size
        if held >= per_chunk:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


async def produce(settings: config.Settings, records: list[tuple[bytes, bytes]]) -> None:
    topic = Topics(settings.topic_prefix).submissions
    async with producer(settings, linger_ms=10, max_batch_size=1 << 20) as p:
        pending = [await p.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*pending)


def indexed(settings: config.Settings) -> int:
    with IndexStore(settings.index_path, readonly=True) as index:
        return index.count()


def warm(files: list[Path]) -> None:
    """Read every file once, so that the next pass finds them in the page cache."""
    for i in range(0, len(files), 500):
        subprocess.run(["cat", *map(str, files[i : i + 500])], stdout=subprocess.DEVNULL, check=True)


def baseline(blob_root: Path, cores: int, tool: str = "sha256sum") -> float:
    """`find | xargs -P cores <tool>` over every blob: seconds."""
    t0 = time.perf_counter()
    subprocess.run(
        f"find {blob_root} -type f -print0 | xargs -0 -P {cores} -n 32 {tool} > /dev/null",
        shell=True,
        check=True,
    )
    return time.perf_counter() - t0


def run_seconds(run: dict[str, Any]) -> float:
    started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    completed = datetime.fromisoformat(run["completed_at"].replace("Z", "+00:00"))
    return (completed - started).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=2.0, help="GiB of blobs (default 2)")
    parser.add_argument("--seed", type=int, default=29)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load_at_start = load_average()
    all_sizes = sizes(int(args.gib * GIB), random.Random(args.seed))
    with tempfile.TemporaryDirectory(prefix="stella-bench-verify-") as tmp:
        work = Path(tmp)
        with broker(work) as bootstrap:
            settings = new_locker(bootstrap, work, STELLA_COMMANDS__TIMEOUT="120")
            BlobStore(settings.evidence_path).ensure()
            access.set_up(settings)
            service.start(settings)
            try:
                t0 = time.perf_counter()
                for chunk in chunks(all_sizes):
                    asyncio.run(produce(settings, chunk))
                while indexed(settings) < len(all_sizes):
                    time.sleep(0.2)
                ingest_s = time.perf_counter() - t0
                print(f"ingested {len(all_sizes)} blobs, {sum(all_sizes) / GIB:.2f} GiB, in {ingest_s:.0f} s")
                blobs = BlobStore(settings.evidence_path).blobs
                files = sorted(p for p in blobs.rglob("*") if p.is_file())
                assert len(files) == len(all_sizes)
                passes = []
                for _ in range(2):
                    warm(files)
                    base = baseline(blobs, cores)
                    warm(files)
                    openssl = (
                        baseline(blobs, cores, "openssl dgst -sha256") if shutil.which("openssl") else None
                    )
                    warm(files)
                    cli_s, report = stella("evidence", "verify", "--mode", "full", ok=(0, 1))
                    assert report["run"]["ok"] == len(all_sizes), report["run"]
                    passes.append(
                        {
                            "sha256sum_s": base,
                            "openssl_s": openssl,
                            "verify_cli_s": cli_s,
                            "verify_service_s": run_seconds(report["run"]),
                        }
                    )
                    own = passes[-1]["verify_service_s"]
                    print(f"sha256sum x{cores}: {base:.2f} s   verify: {cli_s:.2f} s (the run: {own:.2f} s)")
                quick_s, quick = stella("evidence", "verify", "--mode", "quick", "--sample", "1%", ok=(0, 1))
            finally:
                service.stop(settings)
            shutil.rmtree(settings.home, ignore_errors=True)
    best_base = min(p["sha256sum_s"] for p in passes)
    openssl_times = [p["openssl_s"] for p in passes if p["openssl_s"] is not None]
    best_openssl = min(openssl_times) if openssl_times else None
    best_cli = min(p["verify_cli_s"] for p in passes)
    best_service = min(p["verify_service_s"] for p in passes)
    result = {
        "when": datetime.now(UTC).isoformat(),
        "cores": cores,
        "code": code_version(),
        "load_average": {"start": load_at_start, "end": load_average()},
        "blobs": len(all_sizes),
        "bytes": sum(all_sizes),
        "ingest_s": ingest_s,
        "passes": passes,
        "ratio_cli": best_base / best_cli,
        "ratio_service": best_base / best_service,
        "ratio_cli_vs_openssl": None if best_openssl is None else best_openssl / best_cli,
        "quick_1pct": {"planned": quick["run"]["planned"], "cli_s": quick_s},
    }
    out = Path(__file__).parent / "results" / f"verify-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    load = result["load_average"]
    print(f"cores: {cores}   load average (1 min) at start / end: {load['start']} / {load['end']}")
    gib = sum(all_sizes) / GIB
    print(f"{len(all_sizes)} blobs, {gib:.2f} GiB (1 KiB - 8 MiB, log-uniform), page cache warm for both")
    ratio = result["ratio_cli"]
    print(f"sha256sum, {cores} processes / verify --mode full (CLI wall time): {ratio:.2f}   target >= 0.9")
    print(f"sha256sum / the run's own time (started -> completed): {result['ratio_service']:.2f}")
    if best_openssl is not None:
        vs = result["ratio_cli_vs_openssl"]
        print(f"openssl dgst -sha256, {cores} processes / verify --mode full (CLI wall time): {vs:.2f}")
    print(f"quick run of a 1% sample ({quick['run']['planned']} artifacts): {quick_s:.2f} s (CLI wall time)")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
