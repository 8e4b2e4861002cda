"""Background processes with a pid file and a log file (the broker, the service)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from locker.errors import StartFailed, TimedOut


@dataclass(frozen=True)
class Spawned:
    """A process this CLI started, and where its output began in the log file."""

    popen: subprocess.Popen[bytes]
    log_file: Path
    log_start: int

    def failure(self, name: str) -> StartFailed:
        """Why it ended during start-up: its exit code and the last `error: ...` line it wrote."""
        code = self.popen.wait()
        why = self.last_error() or f"see {self.log_file}"
        return StartFailed(f"{name} exited during start-up (exit code {code}): {why}", code)

    def last_error(self) -> str | None:
        try:
            with self.log_file.open("rb") as log:
                log.seek(self.log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return None
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        return errors[-1].removeprefix("error: ") if errors else None


@dataclass(frozen=True)
class Daemon:
    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid if the process is alive; a stale pid file is removed."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return None
        if _is_zombie(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> Spawned:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log_start = log.tell()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return Spawned(proc, self.log_file, log_start)

    def wait_until(self, child: Spawned, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Return once `ready()`; `StartFailed` if `child` ends first, `TimedOut` after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.popen.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise child.failure(self.name)
            if ready():
                return
            time.sleep(0.25)
        raise TimedOut(f"{self.name} did not become {what} within {timeout:.0f}s; see {self.log_file}")

    def terminate(self) -> None:
        """SIGTERM, without waiting."""
        if (pid := self.pid()) is not None:
            os.kill(pid, signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL with no grace: used by crash tests."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.split(") ", 1)[-1].startswith("Z"):
        with contextlib.suppress(ChildProcessError):  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        return True
    return False
