"""What the fault trials share: their knobs, submitting with the acknowledgements kept, a broker or
a tmpfs of a trial's own, and a watch on the service's /healthz while a fault lasts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from commands import access, service
from commands.broker import LocalBroker, free_port
from locker.config import Settings
from locker.digests import digest_of
from streams.kafka import producer
from streams.topics import Topics
from tests.faults.checker import Verdict
from tests.integration.helpers import submission, use_broker

# kill -9s of the worker at random instants during an ingest: 3 in `make test`, 20 in `make test-faults`.
KILLS = int(os.environ.get("STELLA_TEST_KILLS", "3"))
# ... and while it anchors: 2 in `make test`, 20 in `make test-faults`.
ANCHOR_KILLS = int(os.environ.get("STELLA_TEST_ANCHOR_KILLS", "2"))
# `make test-faults` (STELLA_TEST_FAULTS=full) also runs the trials too slow for `make test`.
FULL = os.environ.get("STELLA_TEST_FAULTS") == "full"
# Seconds an outage lasts (the broker stopped, the storage root read-only): 5 in `make test`, 30 in
# `make test-faults`.
PAUSE = float(os.environ.get("STELLA_TEST_PAUSE", "5"))


@dataclass
class Lab:
    """One trial's locker: its settings (a signing key made, ACLs set up, the service stopped), its
    scratch folder, and the monkeypatch that points it elsewhere."""

    settings: Settings
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch


def payloads(n: int, size: int = 256) -> list[bytes]:
    """`n` distinct random contents of `size` bytes."""
    return [os.urandom(size - 8) + i.to_bytes(8, "big") for i in range(n)]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def _submit(settings: Settings, contents: list[bytes], kind: str, timeout_ms: int) -> set[str]:
    topic = Topics(settings.topic_prefix).submissions
    acked: set[str] = set()
    async with producer(settings.acting_as("producer"), linger_ms=20, request_timeout_ms=timeout_ms) as p:
        sent = []
        for content in contents:
            try:
                future = await p.send(topic, submission(content, kind=kind), key=digest_of(content).encode())
            except Exception:  # not even queued: not accepted
                continue
            sent.append((digest_of(content), future))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
    acked |= {
        artifact_id
        for (artifact_id, _), r in zip(sent, results, strict=True)
        if not isinstance(r, BaseException)
    }
    return acked


def submit(
    settings: Settings, contents: list[bytes], kind: str = "other", timeout_ms: int = 60_000
) -> set[str]:
    """Send each content as the producer principal would (acks=all, idempotent); the artifact ids
    whose submission the broker acknowledged: what the locker has accepted."""
    return asyncio.run(_submit(settings, contents, kind, timeout_ms))


class Sender(threading.Thread):
    """Submits chunks of fresh contents, about `rate` a second, until stopped, keeping what was
    acknowledged; an outage started while it runs always lands mid-ingest, however fast the machine."""

    def __init__(self, settings: Settings, rate: float = 500, chunk: int = 250, size: int = 512) -> None:
        super().__init__(daemon=True)
        self.settings, self.rate, self.chunk, self.size = settings, rate, chunk, size
        self.acked: set[str] = set()
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        while not self._halt.wait(self.sent / self.rate - (time.monotonic() - began)):
            contents = payloads(self.chunk, self.size)
            self.sent += len(contents)
            try:
                self.acked |= submit(self.settings, contents)
            except Exception:  # no producer without a broker: none of these was accepted
                time.sleep(0.5)

    def finish(self) -> set[str]:
        """Stop sending; what was acknowledged."""
        self._halt.set()
        self.join(timeout=180)
        assert not self.is_alive(), "the sender did not finish"
        return self.acked

    def __enter__(self) -> Sender:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()  # also when the trial failed: never left sending to a broker that is gone
        self.join(timeout=180)


@dataclass
class HealthWatch:
    """Polls /healthz in a thread: every status seen, and every loop error, while a fault lasts."""

    settings: Settings
    statuses: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    storage: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _poll(self) -> None:
        while not self._stop.is_set():
            answer = service.health(self.settings)
            self.statuses.append("down" if answer is None else str(answer.get("status")))
            if answer is not None:
                loops = answer.get("loops") or {}
                assert isinstance(loops, dict)
                self.errors += [f"{name}: {s['error']}" for name, s in loops.items() if s.get("error")]
                storage = answer.get("storage") or {}
                assert isinstance(storage, dict)
                if not storage.get("writable", True):
                    self.storage.append(str(storage.get("detail")))
            time.sleep(0.25)

    @contextlib.contextmanager
    def watching(self) -> Iterator[HealthWatch]:
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def seen(self) -> str:
        """The /healthz answers seen, and how often: "ok x40, degraded x3"."""
        counts: dict[str, int] = {}
        for status in self.statuses:
            counts[status] = counts.get(status, 0) + 1
        return ", ".join(f"{status} x{n}" for status, n in counts.items())

    @property
    def degraded(self) -> bool:
        """/healthz said something was wrong (a loop retrying or failed, storage not writable)."""
        return any(s in ("degraded", "failed") for s in self.statuses)


@contextlib.contextmanager
def own_broker(lab: Lab) -> Iterator[tuple[LocalBroker, Settings]]:
    """A single broker for this trial alone (it is killed or stopped), the locker pointed at it."""
    broker = LocalBroker(root=lab.tmp_path / "own-broker", port=free_port(), controller_port=free_port())
    broker.start()
    try:
        settings = use_broker(lab.monkeypatch, broker.bootstrap, broker.client_env())
        access.set_up(settings)
        yield broker, settings
    finally:
        broker.daemon.kill()  # throwaway data: no clean shutdown to wait for (nor SIGCONT to send)


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount`; the test is skipped where none can be mounted."""
    mount.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@dataclass
class Outcome:
    """What a trial did and found: the faults it injected, how many of them the locker noticed and
    reported (see REPORT.md for what counts), and the checker's verdict afterwards."""

    trials: int
    detected: int
    verdict: Verdict
    note: str = ""
