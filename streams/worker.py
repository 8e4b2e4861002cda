"""Entry point of the service process: `python -m streams.worker`.

Before faust starts: check that the blobs of indexed artifacts are where `EvidenceLocker:Path`
says (`check_blobs`) and record that path (to name it if it changes), create missing topics and
remove leftovers of interrupted blob writes; a failure there is one line on stderr (`error:
...`) and the exit code of its `LockerError`. Then
run the faust worker until SIGTERM; the projection loop resumes from the stores' applied
positions (a wiped store is rebuilt from offset 0). A loop that cannot go on ends the process
with a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import gc
import sys

import faust
import structlog

from locker import config, signing, tokens
from locker.cas import Blobs, BlobStore, open_store
from locker.errors import LockerError, Refused, StorageUnavailable, UsageError
from locker.files import write_durably
from locker.logs import configure_logging
from projections.anchor_store import AnchorStore
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from projections.verify_store import VerifyStore
from streams import webserver
from streams.app import create_app
from streams.kafka import create_topics

log = structlog.get_logger("stella.worker")

# In the state folder: the evidence path the service last started with, for `check_blobs` to name.
LAST_PATH = "evidence-path"


def check_blobs(index: IndexStore, blobs: Blobs, last_path: str = "") -> None:
    """Refuse to start (`StorageUnavailable`) when no sampled indexed artifact has its blob in the
    store, which is what a changed `EvidenceLocker:Path` (or S3 bucket or prefix) looks like; warn
    when some lack it. `last_path` is the store's location the service last ran with ("" if
    unknown)."""
    checked = index.sample_ids()
    missing = [artifact_id for artifact_id in checked if not blobs.exists(artifact_id)]
    if not missing:
        return
    if len(missing) < len(checked):
        log.warning("blobs missing", missing=len(missing), checked=len(checked), examples=missing[:3])
        return
    path = blobs.location
    if not isinstance(blobs, BlobStore):
        was = f" (the service last ran with {last_path})" if last_path and last_path != path else ""
        raise StorageUnavailable(
            f"refusing to start: none of {len(checked)} sampled artifacts (of {index.count()} indexed) has "
            f"its object in {path}{was}. Are S3:Endpoint, S3:Bucket and S3:Prefix the ones it wrote to?"
        )
    found = (
        f"refusing to start: none of {len(checked)} sampled artifacts (of {index.count()} indexed) has "
        f"its blob under EvidenceLocker:Path = {path}"
    )
    if last_path.startswith("s3://"):
        raise StorageUnavailable(
            f"{found}, and the service last ran with its blobs in {last_path}: set EvidenceLocker:Backend "
            "back to s3 (with the S3:* keys it had)"
        )
    migrate = f"`stella storage migrate --to {path}` while the service is stopped"
    if last_path and last_path != path:
        raise StorageUnavailable(
            f"{found}, which was {last_path} when the service last ran. Set it back (`stella config "
            f"set EvidenceLocker:Path {last_path}`), or set it back and move the blobs with {migrate}"
        )
    raise StorageUnavailable(
        f"{found}. Was EvidenceLocker:Path changed, or is that storage not mounted? Set it back to the "
        f"folder that holds blobs/sha256, or set it back and move the blobs there with {migrate}"
    )


def last_evidence_path(settings: config.Settings) -> str:
    """The evidence path the service last started with ("" if it never recorded one)."""
    try:
        return (settings.state_path / LAST_PATH).read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise StorageUnavailable(f"cannot read {settings.state_path / LAST_PATH}: {exc.strerror}") from None


def remember_evidence_path(settings: config.Settings, blobs: Blobs) -> None:
    try:
        write_durably(settings.state_path / LAST_PATH, f"{blobs.location}\n".encode())
    except OSError as exc:
        raise StorageUnavailable(f"cannot write {settings.state_path / LAST_PATH}: {exc.strerror}") from None


async def prepare(settings: config.Settings) -> None:
    """Create missing topics (where the service's principal may: with ACLs, `stella init` does)."""
    try:
        created = await create_topics(settings)
    except Refused as exc:
        raise Refused(f"{exc}. `stella init` creates the topics and their ACLs") from None
    if created:
        log.info("topics created", topics=created)


def api_token(settings: config.Settings) -> str | None:
    """The API's bearer token; `Refused` when the API would listen beyond loopback without one."""
    token = tokens.read(settings.token_file)
    host = str(settings.get("Service:Host"))
    if token is None and not tokens.is_loopback(host):
        raise Refused(
            f"Service:Host is {host}, beyond loopback, and there is no API token at {settings.token_file}: "
            "`stella init` creates one (or set Service:Host to 127.0.0.1)"
        )
    return token


def main() -> None:
    try:
        settings = config.load().acting_as("service")
        name = settings.worker_name  # a bad config or Service:Worker stops the start here, in one line
    except LockerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    settings.log_path.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_path / f"{name}.log")
    try:
        blobs = open_store(settings)
        index = IndexStore(settings.index_path)
        check_blobs(index, blobs, last_evidence_path(settings))
        blobs.ensure()
        if settings.replica_path is not None:
            if isinstance(blobs, BlobStore) and settings.replica_path.resolve() == blobs.root.resolve():
                raise UsageError(
                    "EvidenceLocker:ReplicaPath is EvidenceLocker:Path: a replica needs its own folder"
                )
            BlobStore(settings.replica_path).ensure()
        remember_evidence_path(settings, blobs)
        token = api_token(settings)
        webserver.limits(settings)  # a bad limit stops the start here, with one line
        removed = blobs.clean_tmp()
        replica = None if settings.replica_path is None else BlobStore(settings.replica_path)

        def delete(ids: list[str]) -> None:
            for store in (blobs, replica):
                if store is not None:
                    store.delete_many(ids)

        deleted = index.finish_deletions(delete)  # expiries a crash cut short before their blobs went
        trees = MerkleStore(settings.merkle_path)
        chain = AnchorStore(settings.chain_path)
        verifications = VerifyStore(settings.verify_path)
        asyncio.run(prepare(settings))
    except LockerError as exc:
        log.error("service cannot start", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    log.info(
        "service starting",
        tmp_removed=removed,
        expired_blobs_deleted=deleted,
        api_url=settings.api_url,
        home=str(settings.home),
        worker=settings.worker,
    )
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
    app = create_app(settings, blobs, index, trees, chain, verifications, signer, token)
    worker = faust.Worker(
        app,
        loglevel="warning",
        logfile=str(settings.log_path / (settings.worker_name.replace("service", "faust") + ".log")),
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
        verifications.close()


if __name__ == "__main__":
    main()
