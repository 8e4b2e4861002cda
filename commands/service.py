"""`stella service start|stop|status|restart`: the faust worker as a background process."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from commands.process import Daemon
from locker.config import Settings


def daemon(settings: Settings) -> Daemon:
    return Daemon("service", settings.run_path / "service.pid", settings.log_path / "service.out")


def health(settings: Settings) -> dict[str, object] | None:
    """The service's /healthz answer, or None if nothing answers."""
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


def start(settings: Settings, timeout: float = 120.0) -> bool:
    """Start the worker and wait until it is consuming. False if it was already running.

    A worker that ends while starting (it refuses to start, say) raises `StartFailed` with its exit
    code and its `error: ...` line."""
    proc = daemon(settings)
    if proc.pid() is not None:
        return False
    env = dict(os.environ)
    env["STELLA_HOME"] = str(settings.home)
    for key, value in settings.values.items():  # flags given to this CLI reach the worker too
        if settings.sources.get(key, "").startswith("flag"):
            env["STELLA_" + key.replace(":", "__").upper()] = str(value)
    child = proc.spawn([sys.executable, "-m", "streams.worker"], env)
    proc.wait_until(child, lambda: (health(settings) or {}).get("status") == "ok", timeout, "healthy")
    return True


def stop(settings: Settings) -> bool:
    return daemon(settings).stop(timeout=60.0)


def status(settings: Settings) -> dict[str, object]:
    pid = daemon(settings).pid()
    answer = health(settings) if pid is not None else None
    return {
        "running": pid is not None,
        "pid": pid,
        "healthy": bool(answer and answer.get("status") == "ok"),
        "api_url": settings.api_url,
        "home": str(settings.home),
        "log": str(settings.log_path / "service.log"),
    }
