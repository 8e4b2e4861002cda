"""Artifact downloads: `GET /artifacts/{id}` of the service against nginx serving the same files.

    python bench/serve.py [--duration 10] [--clients 1,32,200]
    make bench-serve

One locker on one local broker, the real service. One artifact of 1 KiB and one of 8 MiB are
ingested; nginx (Debian's, `worker_processes 1` like the service's one process, sendfile on) serves
copies of the same blob files from a folder of its own in the same run. For each size and each
number of concurrent clients, wrk (Debian's) downloads the one file over keep-alive connections for
--duration seconds: downloads per second and p99 latency of each server. Target: ours / nginx's
rate >= 0.5. The service's peak resident memory (VmHWM) is printed at the end. nginx and wrk come
from `infra/install-bench-tools.sh` (.tools/bin).

Writes bench/results/serve-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import broker, code_version, load_average, new_locker, peak_rss_bytes, stella
from million import log

from commands import access, service
from commands import anchors as anchor_ops
from commands.broker import free_port
from locker import tokens
from locker.cas import BlobStore
from locker.digests import digest_of

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools" / "bin"
SIZES = {"1 KiB": 1024, "8 MiB": 8 * 1024 * 1024}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, clients: int, seconds: int) -> dict[str, float]:
    """wrk's downloads per second and p99 latency (ms) for `clients` keep-alive connections."""
    threads = min(2, clients)
    out = subprocess.run(
        [
            str(TOOLS / "wrk"),
            f"-t{threads}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--timeout",
            "120s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(0)}\n{out}")
    return {"per_s": rate, "p99_ms": float(value) * _UNITS[unit]}


def nginx_config(prefix: Path, root: Path, port: int) -> Path:
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ }}
  }}
}}
"""
    )
    return conf


def wait_served(url: str) -> None:
    """Until the service's index has the artifact (the CLI returns once its event is on the log)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url}: not indexed within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--clients", default="1,32,200", help="numbers of concurrent clients")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if not (TOOLS / "wrk").exists() or not (TOOLS / "nginx").exists():
        subprocess.run(["bash", str(ROOT / "infra" / "install-bench-tools.sh")], check=True)
    load_start = load_average()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stella-bench-serve-") as tmp:
        work = Path(tmp)
        with broker(work) as bootstrap:
            settings = new_locker(bootstrap, work, STELLA_FORMATS__DESCRIBE="false")
            BlobStore(settings.evidence_path).ensure()
            access.set_up(settings)
            anchor_ops.ensure_key(settings)
            tokens.create(settings.token_file)
            service.start(settings)
            try:
                files = {}
                for name, size in SIZES.items():
                    path = work / f"artifact-{size}"
                    path.write_bytes(os.urandom(size))
                    files[name] = path
                stella("evidence", "ingest", *map(str, files.values()), "--kind", "other")
                ids = {name: digest_of(path.read_bytes()) for name, path in files.items()}
                for artifact_id in ids.values():
                    wait_served(f"{settings.api_url}/artifacts/{artifact_id}/meta")
                blobs = BlobStore(settings.evidence_path)
                served = work / "nginx-root"
                served.mkdir()
                work.chmod(0o755)  # nginx's workers run as nobody
                for artifact_id in ids.values():
                    copy = served / artifact_id.removeprefix("sha256:")
                    shutil.copyfile(blobs.path(artifact_id), copy)
                    copy.chmod(0o644)
                port = free_port()
                prefix = work / "nginx"
                prefix.mkdir()
                nginx = subprocess.Popen(
                    [str(TOOLS / "nginx"), "-p", str(prefix), "-c", str(nginx_config(prefix, served, port))]
                )
                time.sleep(0.5)
                pid = service.daemon(settings).pid()
                assert pid is not None
                try:
                    for name, artifact_id in ids.items():
                        ours_url = f"{settings.api_url}/artifacts/{artifact_id}"
                        theirs_url = f"http://127.0.0.1:{port}/{artifact_id.removeprefix('sha256:')}"
                        for n in clients:
                            ours = wrk(ours_url, n, args.duration)
                            theirs = wrk(theirs_url, n, args.duration)
                            row = {
                                "size": name,
                                "clients": n,
                                "ours": ours,
                                "nginx": theirs,
                                "ratio": ours["per_s"] / theirs["per_s"],
                            }
                            log(f"{name}, {n} clients: {row}")
                            results.append(row)
                    worker_peak = peak_rss_bytes(pid)
                finally:
                    nginx.terminate()
                    nginx.wait(timeout=10)
            finally:
                service.stop(settings)
    out = {
        "when": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "code": code_version(),
        "load_average": {"start": load_start, "end": load_average()},
        "duration_s": args.duration,
        "results": results,
        "worker_peak_rss_bytes": worker_peak,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = ROOT / "bench" / "results" / f"serve-{stamp}.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"cores: {os.cpu_count()}   load average at start / end: {load_start:.2f} / {load_average():.2f}")
    header = ("size", "clients", "ours/s", "nginx/s", "ratio", "ours p99", "nginx p99")
    print("{:>6} {:>7} {:>9} {:>9} {:>6} {:>9} {:>9}".format(*header))
    for r in results:
        print(
            f"{r['size']:>6} {r['clients']:>7} {r['ours']['per_s']:>9.0f} {r['nginx']['per_s']:>9.0f} "
            f"{r['ratio']:>6.2f} {r['ours']['p99_ms']:>7.1f}ms {r['nginx']['p99_ms']:>7.1f}ms"
        )
    print(f"worker peak RSS: {worker_peak / (1 << 20):.0f} MiB   (target: ours / nginx >= 0.5)")
    print(f"written to {target}")


if __name__ == "__main__":
    main()
