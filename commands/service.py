"""`stella service start|stop|status|restart`: the locker's workers as background processes.

`start --workers N` runs workers 0..N-1 of this home (`Service:Worker`): each has its own state
folder and port (Service:Port + n) and its own pid, log and output files; they share the
evidence path and the consumer groups (streams.app). `stop` and `status` cover every worker that
runs; worker 0 is the one the CLI asks."""

from __future__ import annotations

import json
import os
import sys
from functools import partial

from commands.process import Daemon
from locker.config import MAX_WORKERS, Settings
from locker.errors import UsageError

WORKER_ENV = "STELLA_SERVICE__WORKER"  # `Service:Worker` of a started worker


def daemon(settings: Settings) -> Daemon:
    """The process of worker `Service:Worker` (0 unless set)."""
    name = settings.worker_name
    return Daemon(name, settings.run_path / f"{name}.pid", settings.log_path / f"{name}.out")


def running(settings: Settings) -> list[int]:
    """The numbers of the workers of this home that run now."""
    return [n for n in range(MAX_WORKERS) if daemon(settings.as_worker(n)).pid() is not None]


def any_pid(settings: Settings) -> int | None:
    """The pid of some running worker of this home (worker 0's if it runs), else None."""
    for n in running(settings):
        return daemon(settings.as_worker(n)).pid()
    return None


def serving(settings: Settings) -> Settings:
    """The settings of the worker the CLI reads and asks: worker 0, or while it is down the first
    worker that runs (its stores are complete too). Unchanged if `Service:Worker` was set."""
    if not settings.sources.get("Service:Worker", "default").startswith("default"):
        return settings
    return settings.as_worker(next(iter(running(settings)), 0))


def health(settings: Settings) -> dict[str, object] | None:
    """The service's /healthz answer, or None if nothing answers."""
    import urllib.error  # not at the top: the CLI's quick commands import this module (ssl is slow)
    import urllib.request

    try:
        with urllib.request.urlopen(settings.api_url + "/healthz", timeout=2) as resp:  # noqa: S310
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return {"status": f"http {exc.code}"}
    except (OSError, ValueError):
        return None


def start(settings: Settings, timeout: float = 120.0, workers: int = 1) -> bool:
    """Start workers 0..`workers`-1 that do not run yet, all at once, and wait until each is
    consuming. False if all of them were running already.

    A worker that ends while starting (it refuses to start, say) raises `StartFailed` with its exit
    code and its `error: ...` line."""
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be from 1 to {MAX_WORKERS}, got {workers}")
    env = dict(os.environ)
    env["STELLA_HOME"] = str(settings.home)
    for key, value in settings.values.items():  # flags given to this CLI reach the worker too
        if settings.sources.get(key, "").startswith("flag"):
            env["STELLA_" + key.replace(":", "__").upper()] = str(value)
    started = []
    for n in range(workers):
        worker = settings.as_worker(n)
        proc = daemon(worker)
        if proc.pid() is None:
            child = proc.spawn([sys.executable, "-m", "streams.worker"], env | {WORKER_ENV: str(n)})
            started.append((worker, proc, child))
    for worker, proc, child in started:
        proc.wait_until(child, partial(healthy, worker), timeout, "healthy")
    return bool(started)


def healthy(settings: Settings) -> bool:
    return (health(settings) or {}).get("status") == "ok"


def stop(settings: Settings) -> bool:
    """Stop every worker of this home (SIGTERM to all, then wait for each). False if none ran."""
    workers = [daemon(settings.as_worker(n)) for n in running(settings)]
    for proc in workers:
        proc.terminate()
    return any([proc.stop(timeout=60.0) for proc in workers])


def status(settings: Settings) -> dict[str, object]:
    """Worker 0's state, and with more than one worker running, each worker's."""
    first = _worker_status(settings.as_worker(0))
    out = {k: v for k, v in first.items() if k not in ("worker", "leader")} | {"home": str(settings.home)}
    others = [n for n in running(settings) if n != 0]
    if others:
        out["workers"] = [first] + [_worker_status(settings.as_worker(n)) for n in others]
    return out


def _worker_status(settings: Settings) -> dict[str, object]:
    pid = daemon(settings).pid()
    answer = health(settings) if pid is not None else None
    return {
        "worker": settings.worker,
        "running": pid is not None,
        "pid": pid,
        "healthy": bool(answer and answer.get("status") == "ok"),
        "leader": bool(answer and answer.get("leader")),
        "api_url": settings.api_url,
        "log": str(settings.log_path / f"{settings.worker_name}.log"),
    }
