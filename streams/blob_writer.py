"""Blob writes in a child process: the loops' GIL never waits on file-system calls.

Writing a small blob is five or six system calls (create, write, close, rename, ...), and in the
worker each one gives the GIL away and waits to take it back from the threads that decode and
fold: a 1 KiB blob cost ~180 us there against ~35 us alone (README, "Performance"). The writer
process does the store's `put_many` (a file system's, or an S3 bucket's PUTs) with nothing else to
share its interpreter with. Durability is unchanged: `put_many` returns once the batch is durable
(on S3: every PUT confirmed), and only then is anything published.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog
from mode import Service

from locker.cas import Blobs
from locker.errors import StorageUnavailable
from streams.children import SPAWN, exit_with

log = structlog.get_logger("stella.blobs")

_store: Blobs | None = None  # in the writer process: the store it writes to


def _start(parent: int, store: Blobs) -> None:
    global _store
    exit_with(parent)
    _store = store


def _put_many(items: list[tuple[str, bytes]]) -> None:
    assert _store is not None
    _store.put_many(items)


class BlobWriter(Service):  # type: ignore[misc]  # mode is untyped here
    """Owns the writer process; started and stopped with the faust app."""

    def __init__(self, blobs: Blobs) -> None:
        super().__init__()
        self.blobs = blobs
        self._pool: ProcessPoolExecutor | None = None

    def _start_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=SPAWN,
            initializer=_start,
            initargs=(os.getpid(), self.blobs),
        )

    async def on_start(self) -> None:
        self._pool = self._start_pool()
        # The pool spawns its process on first use: do it now, not on the first artifact.
        await asyncio.get_running_loop().run_in_executor(self._pool, _put_many, [])

    async def on_stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Make every blob durable (the store's `put_many`); a dead writer process is replaced and
        reported as `StorageUnavailable`, so the batch is retried."""
        assert self._pool is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, _put_many, items)
        except BrokenProcessPool as exc:
            log.error("blob writer process died; starting a new one", error=str(exc))
            self._pool = self._start_pool()
            raise StorageUnavailable(f"the blob writer process died: {exc}") from exc
