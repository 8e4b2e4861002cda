"""Evidence packs: export and offline verification against `tar` + `sha256sum` of the same bytes,
measured in the same run.

    python bench/offline.py [--count 1000] [--min-size 1024] [--max-size 262144]
    make bench-offline

One locker on one local broker (or STELLA_KAFKA_BOOTSTRAP), the real service. --count pieces of
evidence about one subject (JSON-like text, sizes log-uniform between --min-size and --max-size)
are ingested; then, each CLI wall time against its baseline on the same blob files:
(1) `stella evidence export --digest <subject>` (events read back from the log, a proof each,
    gzip, fsync) vs `tar -czf` of the blob files + `sync -f`;
(2) `stella evidence verify --offline` of that pack (every blob hashed, every proof and checkpoint
    checked) vs `tar -xzf` of the baseline's tar + `sha256sum` of every file, checked against
    the list of digests (`sha256sum -c`).
Each baseline and each command runs three times; the fastest counts. Target: baseline / ours >= 0.5.

Writes bench/results/offline-*.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import broker, code_version, load_average, new_locker, stella
from million import log

from commands import access, service
from commands import anchors as anchor_ops
from locker.cas import BlobStore
from locker.digests import digest_of

WORDS = [
    f"{w}-{i}" for i, w in enumerate(["pkg", "version", "purl", "license", "hash", "cve", "component"] * 40)
]


def evidence(rng: random.Random, size: int, n: int) -> bytes:
    """JSON-like text of about `size` bytes (compressible, as SBOMs and reports are)."""
    parts = [f'{{"n": {n}, "components": [']
    length = len(parts[0])
    while length < size:
        item = f'{{"name": "{rng.choice(WORDS)}", "v": "{rng.randrange(1 << 30):x}"}}, '
        parts.append(item)
        length += len(item)
    return ("".join(parts) + "]}").encode()[: max(size, 16)]


def best(command: str | list[str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(command, shell=isinstance(command, str), check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def best_stella(*args: str, runs: int = 3, ok: tuple[int, ...] = (0,)) -> tuple[float, Any]:
    results = [stella(*args, ok=ok) for _ in range(runs)]
    return min(r[0] for r in results), results[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--min-size", type=int, default=1024)
    parser.add_argument("--max-size", type=int, default=256 * 1024)
    args = parser.parse_args()
    load_at_start = load_average()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="stella-bench-offline-") as tmp:
        work = Path(tmp)
        with broker(work) as bootstrap:
            settings = new_locker(bootstrap, work, STELLA_COMMANDS__TIMEOUT="300")
            BlobStore(settings.evidence_path).ensure()
            access.set_up(settings)
            anchor_ops.ensure_key(settings)
            service.start(settings)
            try:
                subject = "sha256:" + os.urandom(32).hex()
                lo, hi = math.log(args.min_size), math.log(args.max_size)
                contents = [evidence(rng, int(math.exp(rng.uniform(lo, hi))), i) for i in range(args.count)]
                folder = work / "evidence"
                folder.mkdir()
                files = []
                for i, content in enumerate(contents):
                    (folder / f"{i}.json").write_bytes(content)
                    files.append(str(folder / f"{i}.json"))
                stella("evidence", "ingest", *files, "--kind", "sbom", "--subject", subject)
                size = sum(len(c) for c in contents)
                log(f"{args.count} pieces of evidence, {size / 1e6:.1f} MB, ingested")
                store = BlobStore(settings.evidence_path)
                listing = work / "files"
                listing.write_text(
                    "".join(f"{store.path(digest_of(c)).relative_to(store.blobs)}\n" for c in contents)
                )
                sums = work / "sums"
                sums.write_text(
                    "".join(
                        f"{digest_of(c)[7:]}  {store.path(digest_of(c)).relative_to(store.blobs)}\n"
                        for c in contents
                    )
                )
                base = work / "base.tar.gz"
                tar_s = best(
                    f"rm -f {base} && tar -czf {base} -C {store.blobs} -T {listing} && sync -f {work}"
                )
                base_bytes = base.stat().st_size
                out = work / "out"
                check_s = best(
                    f"rm -rf {out} && mkdir {out} && tar -xzf {base} -C {out} "
                    f"&& cd {out} && sha256sum --quiet -c {sums}"
                )
                log(f"tar -czf: {tar_s:.2f} s; tar -xzf + sha256sum -c: {check_s:.2f} s")
                packs = [work / f"pack-{i}.tar.gz" for i in range(3)]
                export_times = [
                    stella("evidence", "export", "--digest", subject, "--output", str(p)) for p in packs
                ]
                export_s, exported = min(t for t, _ in export_times), export_times[-1][1]
                identical = len({p.read_bytes() for p in packs}) == 1
                verify_s, report = best_stella("evidence", "verify", "--offline", "--input", str(packs[0]))
                log(f"export: {export_s:.2f} s (identical: {identical}); verify --offline: {verify_s:.2f} s")
                assert report["verified"] and report["blobs"] == args.count
                startup_s = best([sys.executable, "-m", "cli.main", "evidence", "verify", "--help"])
            finally:
                service.stop(settings)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "code": code_version(),
        "cores": os.cpu_count(),
        "count": args.count,
        "bytes": size,
        "sizes": [args.min_size, args.max_size],
        "export": {"seconds": export_s, "baseline_seconds": tar_s, "ratio": tar_s / export_s},
        "verify_offline": {"seconds": verify_s, "baseline_seconds": check_s, "ratio": check_s / verify_s},
        "pack_bytes": exported["file_bytes"],
        "baseline_bytes": base_bytes,
        "exports_identical": identical,
        "cli_startup_seconds": startup_s,
        "load_average": {"start": load_at_start, "end": load_average()},
    }
    out_file = Path(__file__).parent / "results" / f"offline-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.count} pieces of evidence, {size / 1e6:.1f} MB; {result['cores']} cores; "
        f"load {result['load_average']}"
    )
    for name, baseline in (("export", "tar -czf"), ("verify_offline", "tar -xzf + sha256sum -c")):
        m = result[name]
        print(
            f"{name}: {m['seconds']:.2f} s; {baseline}: {m['baseline_seconds']:.2f} s   "
            f"ratio {m['ratio']:.2f} (>= 0.5)"
        )
    print(
        f"exports byte-identical: {identical}; CLI start-up alone: {startup_s:.2f} s; written to {out_file}"
    )


if __name__ == "__main__":
    main()
