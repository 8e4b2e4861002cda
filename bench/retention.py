"""Archive and retention cleanup against `tar` (+ `zstd`) and `rm` of the same files, measured in
the same run.

    python bench/retention.py [--count 100000] [--size 1024]
    make bench-retention

One locker on one local broker (or STELLA_KAFKA_BOOTSTRAP), the real service. Three corpora of
--count submissions of --size bytes are ingested a few seconds apart (A, B, C); then
(1) `tar -cf` of A's blob files + `sync -f`, against `stella evidence archive --older-than` (A's
    age) `--output A.tar`, CLI wall time: choose, anchor, read the events, write the tar with a
    proof per event, fsync, read it all back and check it, record `artifact.archived` per
    artifact, delete the blobs;
(2) `tar -I "zstd -3" -cf` of B's blob files + `sync -f`, against the same with `--compress`;
(3) `rm -rf` of a copy of C's blob files + `sync -f`, against `stella evidence cleanup
    --apply-retention` (`Retention:Default` = 1s): an `artifact.expired` event per artifact,
    `retention.applied`, the projection deletes each blob (one `syncfs` a batch), and the CLI
    waits until no deletion is pending.
Target: each baseline / ours >= 0.5. An archive deletes the blobs it moved, which `tar` does not:
its ratio against `tar` + `rm -rf` of the same files is printed too.

Writes bench/results/retention-*.json.
"""

from __future__ import annotations

import argparse
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

from common import broker, code_version, load_average, new_locker, stella
from million import Corpus, log, produce, wait_ingested

from commands import access, service
from commands import anchors as anchor_ops
from locker.cas import BlobStore
from streams.topics import Topics


def ingest(settings: Any, corpus: Corpus, total: int) -> float:
    """Produce the corpus and wait until the locker holds `total` artifacts; the time it did."""
    started = time.monotonic()
    produce(settings, Topics(settings.topic_prefix).submissions, corpus)
    wait_ingested(settings, total, started)
    return time.time()


def file_list(blobs: BlobStore, corpus: Corpus, path: Path) -> Path:
    """The corpus's blob files, relative to the blob folder, one a line (for `tar -T`)."""
    path.write_text(
        "".join(
            f"{blobs.path(corpus.artifact_id(i)).relative_to(blobs.blobs)}\n" for i in range(corpus.count)
        )
    )
    return path


def timed(command: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    return time.perf_counter() - t0


def archive(work: Path, name: str, ingested_at: float, *flags: str) -> tuple[float, dict[str, Any]]:
    """`stella evidence archive` of what was ingested up to `ingested_at` (not what came 3 s later)."""
    age = int(time.time() - ingested_at) - 1
    return stella("evidence", "archive", "--older-than", f"{age}s", "--output", str(work / name), *flags)


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
            access.set_up(settings)
            anchor_ops.ensure_key(settings)  # archives are signed with the anchor key
            service.start(settings)
            try:
                n = args.count
                corpora = [Corpus(n, args.size, max(n // 10, 1)) for _ in range(3)]
                ingested = []
                for k, corpus in enumerate(corpora):
                    ingested.append(ingest(settings, corpus, (k + 1) * n))
                    log(f"corpus {'ABC'[k]} ingested")
                    time.sleep(3)
                store = BlobStore(settings.evidence_path)
                blobs = store.blobs
                lists = [file_list(store, c, work / f"files-{k}") for k, c in enumerate(corpora)]
                sizes = [sum((blobs / line).stat().st_size for line in f.read_text().split()) for f in lists]
                subprocess.run(["sync"], check=True)
                # (1) archive, plain.
                tar_s = timed(f"tar -cf {work}/base-a.tar -C {blobs} -T {lists[0]} && sync -f {work}")
                log(f"tar -cf + sync: {tar_s:.1f} s")
                plain_s, plain = archive(work, "a.tar", ingested[0])
                log(f"archive: {plain_s:.1f} s, {plain['artifacts']} archived")
                # (2) archive, compressed.
                zstd_s = timed(
                    f"tar -I 'zstd -3' -cf {work}/base-b.tar.zst -C {blobs} -T {lists[1]} && sync -f {work}"
                )
                log(f"tar -I zstd -cf + sync: {zstd_s:.1f} s")
                packed_s, packed = archive(work, "b.tar.zst", ingested[1], "--compress")
                log(f"archive --compress: {packed_s:.1f} s, {packed['artifacts']} archived")
                sizes_on_disk = {
                    name: (work / name).stat().st_size
                    for name in ("base-a.tar", "a.tar", "base-b.tar.zst", "b.tar.zst")
                }
                # (3) cleanup.
                copy = work / "copy"
                copy.mkdir()
                subprocess.run(
                    f"tar -cf - -C {blobs} -T {lists[2]} | tar -xf - -C {copy} && sync",
                    shell=True,
                    check=True,
                )
                rm_s = timed(f"rm -rf {copy} && sync -f {work}")
                log(f"rm -rf + sync of {n} blob files: {rm_s:.1f} s")
                os.environ["STELLA_RETENTION__DEFAULT"] = "1s"
                cleanup_s, done = stella("evidence", "cleanup", "--apply-retention")
                left = sum(1 for p in blobs.rglob("*") if p.is_file())
                log(f"cleanup: {cleanup_s:.1f} s, {done['expired']} expired, {left} blob files left")
            finally:
                service.stop(settings)

    def measure(seconds: float, baseline: float, artifacts: int, size: int) -> dict[str, Any]:
        return {
            "seconds": seconds,
            "baseline_seconds": baseline,
            "artifacts": artifacts,
            "artifacts_per_s": artifacts / seconds,
            "mb_per_s": size / 1e6 / seconds,
            "baseline_artifacts_per_s": n / baseline,
            "ratio": baseline / seconds,
        }

    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "code": code_version(),
        "cores": os.cpu_count(),
        "count": n,
        "size": args.size,
        # An archive also deletes the blobs, which tar does not: against tar + rm of the same files too.
        "archive": {
            **measure(plain_s, tar_s, plain["artifacts"], sizes[0]),
            "ratio_with_rm": (tar_s + rm_s) / plain_s,
            "phases": plain["phases"],
        },
        "archive_compressed": {
            **measure(packed_s, zstd_s, packed["artifacts"], sizes[1]),
            "ratio_with_rm": (zstd_s + rm_s) / packed_s,
            "phases": packed["phases"],
        },
        "file_bytes": sizes_on_disk,
        "cleanup": {**measure(cleanup_s, rm_s, done["expired"], sizes[2]), "phases": done["phases"]},
        "blob_files_left": left,
        "load_average": {"start": load_at_start, "end": load_average()},
    }
    out = Path(__file__).parent / "results" / f"retention-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n} artifacts of {args.size} bytes a run; {result['cores']} cores; load {result['load_average']}")
    for name, baseline in (
        ("archive", "tar -cf"),
        ("archive_compressed", "tar -I zstd"),
        ("cleanup", "rm -rf"),
    ):
        m = result[name]
        print(
            f"{name}: {m['seconds']:.1f} s "
            f"({m['artifacts_per_s']:.0f} artifacts/s, {m['mb_per_s']:.1f} MB/s); "
            f"{baseline} + sync: {m['baseline_seconds']:.1f} s   ratio {m['ratio']:.2f} (>= 0.5)"
        )
        if "ratio_with_rm" in m:
            print(f"  against {baseline} + rm -rf of the same files: ratio {m['ratio_with_rm']:.2f}")
        print(f"  phases: {m['phases']}")
    print(f"file sizes: {sizes_on_disk}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
