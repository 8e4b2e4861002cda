"""Helpers shared by the benchmarks: a broker, a fresh locker, percentiles, a store watcher.

Not a benchmark itself. The scripts in bench/ import it as a sibling module.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from commands import service
from commands.broker import LocalBroker, free_port
from locker import config
from projections.tracking import POSITION


@contextlib.contextmanager
def broker(work: Path) -> Iterator[str]:
    """STELLA_KAFKA_BOOTSTRAP if set, else a local broker in `work`; yields the bootstrap."""
    bootstrap = os.environ.pop("STELLA_KAFKA_BOOTSTRAP", None)
    if bootstrap:
        yield bootstrap
        return
    local = LocalBroker(root=work / "broker", port=free_port(), controller_port=free_port())
    local.start()
    os.environ.update(local.client_env())  # its logins, for this process and the ones it starts
    try:
        yield local.bootstrap
    finally:
        local.stop()


def new_locker(bootstrap: str, work: Path, **extra: str) -> config.Settings:
    """A fresh locker (own home, topic prefix, group and API port) in the environment of this
    process and of the service it starts; `extra` are more STELLA_* variables."""
    tag = uuid.uuid4().hex[:8]
    for key in [k for k in os.environ if k.startswith("STELLA_ANCHORS__")]:
        del os.environ[key]
    os.environ.update(
        STELLA_HOME=str(work / f"home-{tag}"),
        STELLA_KAFKA__BOOTSTRAP=bootstrap,
        STELLA_KAFKA__TOPICPREFIX=f"b{tag}.",
        STELLA_KAFKA__GROUPID=f"bench-{tag}",
        STELLA_SERVICE__PORT=str(free_port()),
        **extra,
    )
    return config.load()


def stella(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, Any]:
    """Run the `stella` CLI with `--format json`: (wall seconds, its answer); exit codes other
    than `ok` end the benchmark with the CLI's stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"stella {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return seconds, json.loads(proc.stdout)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`; nan if there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary_ms(values: Sequence[float]) -> dict[str, float | int]:
    """count, p50, p99 and max of durations in seconds, as milliseconds."""
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50) * 1e3,
        "p99_ms": percentile(values, 99) * 1e3,
        "max_ms": percentile(values, 100) * 1e3,
    }


def code_version() -> dict[str, object]:
    """The commit measured, and whether the work tree had changes to tracked files."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def load_average() -> float:
    """The machine's 1-minute load average: the benchmarks share it with whatever else runs."""
    return round(os.getloadavg()[0], 2)


def loop_stats(settings: config.Settings) -> dict[str, Any]:
    """The worker loops' counters from /healthz: batches, records, wall seconds per stage."""
    loops = (service.health(settings) or {}).get("loops") or {}
    assert isinstance(loops, dict)
    return loops


def stage_means(after: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per loop, between two `loop_stats`: batches, records, mean wall ms per batch in each stage."""
    out = {}
    for name, st in after.items():
        was = (before or {}).get(name, {"batches": 0, "records": 0, "stage_seconds": {}})
        batches = st["batches"] - was["batches"]
        out[name] = {
            "batches": batches,
            "records": st["records"] - was["records"],
            "ms_per_batch": {
                k: round((v - was["stage_seconds"].get(k, 0.0)) / max(batches, 1) * 1e3, 1)
                for k, v in st["stage_seconds"].items()
            },
        }
    return out


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, in bytes (0 if it is gone)."""
    return _status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident memory) of a process, in bytes (0 if it is gone)."""
    return _status_bytes(pid, "VmHWM")


def _status_bytes(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def folder_bytes(path: Path) -> int:
    """Sum of the sizes of the files under `path` (what `du --apparent-size` counts)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# Watching the worker's stores from outside: a RocksDB secondary instance per store follows the
# worker's writes (`try_catch_up_with_primary` replays the new WAL and MANIFEST entries) without
# reopening the database. The applied positions are written in the same write batch as the rows
# (projections/tracking.py), so "position of partition p >= offset o" means the rows of the
# record at (p, o) are in the store. Runs in its own process so that the catch-up calls do not
# stall the benchmark's event loop.


def _read_positions(db: Any) -> dict[int, int]:
    out = {}
    it = db.iter()
    it.seek(POSITION)
    while it.valid():
        key = bytes(it.key())
        if not key.startswith(POSITION):
            break
        out[int(key[len(POSITION) :])] = int(bytes(it.value()))
        it.next()
    return out


def _watch(paths: list[str], scratch: str, interval: float, stop: Any, out: Any) -> None:
    from rocksdict import AccessType, Options, Rdict

    dbs = []
    for i, path in enumerate(paths):
        options = Options(raw_mode=True)
        options.set_max_open_files(-1)
        dbs.append(Rdict(path, options, access_type=AccessType.secondary(f"{scratch}/{i}")))
    samples: list[tuple[float, list[dict[int, int]]]] = []
    last: list[dict[int, int]] | None = None
    polls, busy = 0, 0.0
    out.put("ready")
    while not stop.is_set():
        started = time.monotonic()
        for db in dbs:
            db.try_catch_up_with_primary()
        now = [_read_positions(db) for db in dbs]
        seen = time.monotonic()  # the rows were in the store by this time at the latest
        polls += 1
        busy += seen - started
        if now != last:
            samples.append((seen, now))
            last = now
        time.sleep(interval)
    for db in dbs:
        db.close()
    out.put({"samples": samples, "polls": polls, "busy_s": busy})


class StoreWatcher:
    """Samples the applied positions of RocksDB stores every `interval` seconds, in a child
    process; `stop()` returns [(time.monotonic() when seen, [positions per store])] (a sample
    only when something changed) and the poll statistics."""

    def __init__(self, paths: Sequence[Path], scratch: Path, interval: float = 0.005) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        scratch.mkdir(parents=True, exist_ok=True)
        self._proc = ctx.Process(
            target=_watch,
            args=([str(p) for p in paths], str(scratch), interval, self._stop, self._out),
            daemon=True,
        )
        self._proc.start()
        if self._out.get(timeout=60) != "ready":
            raise RuntimeError("store watcher did not start")
        self.started = time.monotonic()

    def stop(self) -> tuple[list[tuple[float, list[dict[int, int]]]], dict[str, float]]:
        self._stop.set()
        result = self._out.get(timeout=120)
        self._proc.join(timeout=30)
        elapsed = time.monotonic() - self.started
        polls = result["polls"]
        stats = {
            "polls": polls,
            "mean_poll_interval_ms": elapsed / max(polls, 1) * 1e3,
            "mean_catch_up_ms": result["busy_s"] / max(polls, 1) * 1e3,
        }
        return [(t, positions) for t, positions in result["samples"]], stats


def first_time_covering(
    samples: list[tuple[float, list[dict[int, int]]]], partition: int, offset: int
) -> float | None:
    """The first sample time at which every store had applied (partition, offset)."""
    lo, hi = 0, len(samples)
    while lo < hi:  # positions only grow: binary search for the first sample that covers
        mid = (lo + hi) // 2
        if all(p.get(partition, -1) >= offset for p in samples[mid][1]):
            hi = mid
        else:
            lo = mid + 1
    return samples[lo][0] if lo < len(samples) else None
