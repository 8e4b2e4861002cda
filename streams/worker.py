"""Entry point of the service process: `python -m streams.worker`.

Before faust starts: create missing topics and remove leftovers of interrupted blob writes.
Then run the faust worker until SIGTERM; the projection loop resumes from the stores' applied
positions (a wiped store is rebuilt from offset 0). A loop that cannot go on ends the process
with a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import gc
import sys

import faust
import structlog

from locker import config, signing
from locker.cas import BlobStore
from locker.errors import LockerError
from locker.logs import configure_logging
from projections.anchor_store import AnchorStore
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from streams.app import create_app
from streams.kafka import create_topics

log = structlog.get_logger("stella.worker")


async def prepare(settings: config.Settings) -> None:
    """Create missing topics."""
    created = await create_topics(settings)
    if created:
        log.info("topics created", topics=created)


def main() -> None:
    settings = config.load()
    settings.log_path.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_path / "service.log")
    blobs = BlobStore(settings.evidence_path)
    try:
        blobs.ensure()
        removed = blobs.clean_tmp()
        index = IndexStore(settings.index_path)
        trees = MerkleStore(settings.merkle_path)
        chain = AnchorStore(settings.chain_path)
        asyncio.run(prepare(settings))
    except LockerError as exc:
        log.error("service cannot start", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    log.info("service starting", tmp_removed=removed, api_url=settings.api_url, home=str(settings.home))
    asyncio.set_event_loop(asyncio.new_event_loop())
    try:
        signer = signing.load_signer(settings.key_file, settings.origin)
    except LockerError as exc:
        signer = None
        log.warning("anchoring is off", error=str(exc))
    # The loops allocate many short-lived, acyclic objects per record: with the default gen-0
    # threshold (700) the cyclic collector ran thousands of times a second under load (~5% of CPU).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    app = create_app(settings, blobs, index, trees, chain, signer)
    worker = faust.Worker(
        app,
        loglevel="warning",
        logfile=str(settings.log_path / "faust.log"),
        override_logging=True,
    )
    # faust's progress spinner turns the root logger to DEBUG so that it sees every record; then
    # every debug call in aiokafka builds a LogRecord (~10% of the worker's CPU under load).
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        index.close()
        trees.close()
        chain.close()


if __name__ == "__main__":
    main()
