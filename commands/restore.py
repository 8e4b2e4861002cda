"""`stella evidence restore --backup-id <id> --target <path>` (runbook DR-001, step 2).

Everything is checked before anything is written: the manifest's signature (against this locker's
anchor key), the SHA-256 and size of every file and of every earlier backup's pack it reads, that
the blob index places every blob inside those packs, and the target: the service stopped,
`evidence.events` and `evidence.anchors` empty (records are produced again in their original order
per partition, so every Merkle root comes out the same; appending to records already there could
not), and no blob in the target folder unless `--force`. No fork: an anchor the locker already
published (the backup's anchor copies, this locker's `Anchors:BackupPath`, and each `--known-anchor
FILE`) whose tree of a partition is longer than the backup holds would be contradicted by the
restored log: refused unless `--new-chain <reason>`, which `backup.restored` records and which
starts a new anchor chain: its first anchor, signed here over the restored records, names the
break and continues the backup's latest anchor, so no anchor of the old chain can follow.

Then the blobs go to the target (durable, each checked against its id again), the records to the
topics followed by a `backup.restored` event (the restore is a fact on the log too), the local
projection stores are removed (the service folds them again from the restored log when it starts),
and the backup's record stream is folded once (in a child process, meanwhile) to check that the
index checksum is the backup's: every record is checked to have landed at its old offset, so the
restored log folds to the same index.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from commands import access, service
from commands.anchors import read_anchor_file
from commands.backup import file_entry, fold_checksum, latest_anchor, read_records
from locker import anchors, backups, merkle, requests, signing
from locker.anchors import PartitionHead
from locker.backups import BackedUpRecord, Manifest, PackedBlob
from locker.cas import Blobs, BlobStore, open_store
from locker.config import Settings
from locker.errors import IntegrityError, InvalidInput, LockerError, NotFound, Refused, UsageError
from locker.events import BackupRestored, encode
from projections.store import wipe
from streams.anchoring import back_up
from streams.children import SPAWN, exit_with
from streams.kafka import end_offsets, producer
from streams.topics import Topics, anchor_writer_id

BLOB_BATCH = 256
Progress = Callable[[str, int, int], None]  # (stage, done, of)


def restore(
    settings: Settings,
    backup_id: str,
    target: Path,
    *,
    root: Path | None = None,
    force: bool = False,
    known_anchors: Iterable[Path] = (),
    new_chain: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    folder = (root or settings.backups_path).expanduser() / backup_id
    if not (folder / "manifest.json").is_file():
        raise NotFound(f"no backup {backup_id} in {folder.parent}")
    manifest = _checked_manifest(settings, folder)
    _check_files(folder, manifest)
    placed = _checked_blob_index(folder, manifest)
    forks = _forks(
        manifest, [*sorted((folder / "anchor-backups").glob("*.json")), *_copies(settings), *known_anchors]
    )
    if forks and not new_chain:
        raise Refused(
            f"restoring {backup_id} would fork the log: {forks[0]}; give --new-chain <reason> to start a "
            "new anchor chain that names the break"
        )
    blobs = _target_store(settings, target)
    access.set_up(settings)  # the topics (empty, if new) and their ACLs, for the check to read
    _check_target(settings, blobs, force)
    phases = {"check": time.monotonic() - started}

    mark = time.monotonic()
    # The restored log will hold exactly the backed-up records, each at its old offset (checked as
    # it is produced), so the index it folds to is the fold of the backup's record stream: folded
    # by a child process while this one writes blobs and produces records.
    with _folding(folder / "events.records", heads=bool(new_chain)) as folded:
        mark = time.monotonic()
        blobs.ensure()
        _unpack(folder.parent, placed, blobs, progress)
        phases["blobs"], mark = time.monotonic() - mark, time.monotonic()
        topics = Topics(settings.topic_prefix)
        # The restored records are the service's: it alone may write these topics (commands/access.py).
        writer = settings.acting_as("service")
        events = asyncio.run(
            _produce(
                writer, topics.events, read_records(folder / "events.records"), manifest.events, progress
            )
        )
        chain = asyncio.run(
            _produce_anchors(writer, topics.anchors, list(read_records(folder / "anchors.records")))
        )
        restored = BackupRestored(
            backup_id=backup_id,
            manifest_sha256="sha256:" + hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest(),
            events=events,
            anchors=chain,
            artifacts=manifest.artifacts,
            target=blobs.location,
            new_chain=new_chain,
            actor=requests.actor(),
            restored_at=datetime.now(UTC),
            correlation_id=requests.new_id(),
        )
        asyncio.run(_record(writer, topics.events, backup_id, restored))
        phases["records"], mark = time.monotonic() - mark, time.monotonic()
        for store in (settings.index_path, settings.merkle_path, settings.chain_path, settings.verify_path):
            wipe(store)  # folded again from the restored log by the service
        shutil.rmtree(settings.plans_path, ignore_errors=True)
        checksum, heads = folded()
        new_chain_anchor = ""
        if new_chain:
            new_chain_anchor = asyncio.run(_start_chain(writer, folder / "anchors.records", heads, new_chain))
    phases["index"] = time.monotonic() - mark
    return {
        "backup_id": backup_id,
        "target": blobs.location,
        "artifacts": manifest.artifacts,
        "events": events,
        "anchors": chain,
        "index_checksum": checksum,
        "matches_backup": checksum == manifest.index_checksum,
        "forks": forks,
        "new_chain": new_chain,
        "new_chain_anchor": new_chain_anchor,
        "next": _next_steps(settings, blobs, new_chain),
        "seconds": round(time.monotonic() - started, 3),
        "phases": {name: round(seconds, 3) for name, seconds in phases.items()},
    }


Folded = tuple[str, tuple[PartitionHead, ...]]


@contextlib.contextmanager
def _folding(events: Path, *, heads: bool) -> Iterator[Callable[[], Folded]]:
    """A function that returns the checksum of the index `events` folds to, and with `heads` each
    partition's Merkle tree head over them, which a child process computes meanwhile; the child is
    killed if the caller leaves early."""
    receiving, sending = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(
        target=_fold_to, args=(events, heads, sending, os.getpid()), name="stella-restore-fold", daemon=True
    )
    child.start()
    sending.close()

    def result() -> Folded:
        try:
            answer = receiving.recv()
        except EOFError:
            raise LockerError(f"folding {events} ended (exit code {child.exitcode})") from None
        if isinstance(answer, LockerError):
            raise answer
        checksum, found = answer
        return str(checksum), tuple(found)

    try:
        yield result
    finally:
        receiving.close()
        if child.is_alive():
            child.kill()
        child.join()


def _fold_to(events: Path, heads: bool, pipe: Connection, parent: int) -> None:
    exit_with(parent)
    try:
        pipe.send((fold_checksum(events), _heads(events) if heads else ()))
    except LockerError as error:
        pipe.send(LockerError(str(error)))
    except Exception as error:  # noqa: BLE001 - anything else still reaches the parent as one line
        pipe.send(LockerError(f"folding {events} failed: {error!r}"))
    finally:
        pipe.close()


def _heads(events: Path) -> tuple[PartitionHead, ...]:
    """Each partition's Merkle tree head over a record stream (the trees the service will build)."""
    frontiers: dict[int, merkle.Frontier] = {}
    lasts: dict[int, int] = {}
    for r in read_records(events):
        frontiers[r.partition], _ = frontiers.get(r.partition, merkle.Frontier()).append(
            merkle.leaf_hash(r.value or b"")
        )
        lasts[r.partition] = r.offset
    return tuple(
        PartitionHead(partition=p, tree_size=f.size, root=f.root(), last_offset=lasts[p])
        for p, f in sorted(frontiers.items())
    )


def _checked_manifest(settings: Settings, folder: Path) -> Manifest:
    try:
        trusted = signing.load_signer(settings.key_file, settings.origin).verifier
    except LockerError:
        raise UsageError(
            f"a backup is trusted through the locker's anchor key, and there is none at {settings.key_file}: "
            "put the key back (it is never in a backup) before restoring"
        ) from None
    raw = (folder / "manifest.json").read_bytes()
    try:
        signature = base64.b64decode((folder / "manifest.sig").read_bytes(), validate=False)
    except (OSError, ValueError):
        signature = b""
    if not trusted.verify(raw, signature):
        raise IntegrityError(
            f"the signature {folder / 'manifest.sig'}", "a signature by the anchor key", "none that verifies"
        )
    try:
        return backups.decode_manifest(raw)
    except ValueError as exc:
        raise IntegrityError(
            f"the manifest {folder / 'manifest.json'}", "a backup manifest", str(exc)
        ) from None


def _check_files(folder: Path, manifest: Manifest) -> None:
    """Every file of the backup, and every earlier pack it reads, has its SHA-256 and size."""
    wanted = {folder / name: entry for name, entry in manifest.files.items()}
    wanted |= {folder.parent / name / backups.PACK: entry for name, entry in manifest.packs.items()}
    for path, entry in wanted.items():
        try:
            actual = file_entry(path)
        except OSError:
            raise IntegrityError(f"the backup file {path}", entry.sha256, "no such file") from None
        if actual != entry:
            raise IntegrityError(f"the backup file {path}", entry.sha256, actual.sha256)


def _checked_blob_index(folder: Path, manifest: Manifest) -> list[PackedBlob]:
    """Where each blob is (the index's digest is checked already); every place inside a checked
    pack. Each blob is checked against its id again when it is written (`BlobStore.put_many`)."""
    path = folder / backups.BLOB_INDEX
    try:
        placed = backups.decode_blob_index(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"the blob index {path}", "a blob index", str(exc)) from None
    for blob in placed:
        pack = manifest.packs.get(blob.pack)
        if pack is None or blob.offset < 0 or blob.size < 0 or blob.offset + blob.size > pack.size:
            raise IntegrityError(
                f"the blob index {path}", "places inside the backup's packs", f"{blob.artifact_id} is not"
            )
    if len(placed) != manifest.artifacts:
        raise IntegrityError(f"the blob index {path}", f"{manifest.artifacts} blobs", f"{len(placed)}")
    return placed


def _unpack(root: Path, placed: list[PackedBlob], blobs: Blobs, progress: Progress | None) -> None:
    """Each blob from its pack into `blobs`, durable, in batches, in pack order. (Syncing once at
    the end instead of twice a batch was measured slower here: 240-310 us a blob against 125-180.)
    A blob already in the target (`--force`, or a restore run again after a crash) is kept if it
    hashes to its id and replaced if not."""
    by_pack: dict[str, list[PackedBlob]] = {}
    for blob in placed:
        by_pack.setdefault(blob.pack, []).append(blob)
    for name, items in sorted(by_pack.items()):
        items.sort(key=lambda b: b.offset)
        with open(root / name / backups.PACK, "rb") as pack:
            for start in range(0, len(items), BLOB_BATCH):
                batch = []
                for blob in items[start : start + BLOB_BATCH]:
                    pack.seek(blob.offset)
                    data = pack.read(blob.size)
                    if not blobs.exists(blob.artifact_id):
                        batch.append((blob.artifact_id, data))
                    elif blobs.hash_of(blob.artifact_id) != blob.artifact_id:
                        blobs.restore(blob.artifact_id, data)
                blobs.put_many(batch)
                if progress is not None:
                    progress("blobs", start + len(items[start : start + BLOB_BATCH]), len(placed))


def _copies(settings: Settings) -> list[Path]:
    folder = settings.anchor_backup_path
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _forks(manifest: Manifest, files: Iterable[Path]) -> list[str]:
    """Published anchors whose tree of a partition goes beyond the backup's records."""
    ends = manifest.ends.get("events", ())
    found = []
    for path in files:
        raw = read_anchor_file(path)
        try:
            anchor = anchors.decode(raw)
        except InvalidInput:
            raise IntegrityError(f"the anchor file {path}", "an exported anchor", "unreadable") from None
        for head in anchor.body.partitions:
            held = ends[head.partition] if head.partition < len(ends) else 0
            if head.tree_size > held:
                found.append(
                    f"anchor {anchors.anchor_id(raw)} covers {head.tree_size} events of "
                    f"partition {head.partition}, the backup holds {held}"
                )
                break
    return found


def _target_store(settings: Settings, target: Path) -> Blobs:
    """The store to restore into: a folder, or `s3://bucket/prefix`, which must be the configured
    S3 backend's (`UsageError` otherwise)."""
    named = str(target)
    if not named.startswith("s3:/"):
        return BlobStore(target.expanduser().resolve())
    store = open_store(settings)
    wanted = "s3://" + named.removeprefix("s3:").lstrip("/")
    if isinstance(store, BlobStore) or wanted.rstrip("/") != store.location.rstrip("/"):
        configured = "no S3 backend" if isinstance(store, BlobStore) else store.location
        raise UsageError(
            f"--target {wanted} is not the configured S3 blob store ({configured}): set "
            "EvidenceLocker:Backend = s3 and the S3:* keys first, then restore into that location"
        )
    return store


def _check_target(settings: Settings, blobs: Blobs, force: bool) -> None:
    pid = service.any_pid(settings)
    if pid is not None:
        raise Refused(f"the service is running (pid {pid}); stop it first: `stella service stop`")
    topics = Topics(settings.topic_prefix)
    for topic in (topics.events, topics.anchors):
        held = sum(asyncio.run(end_offsets(settings, topic)).values())
        if held:
            raise Refused(
                f"{topic} already holds {held} records: a restore needs empty topics (a new broker, or a "
                "new Kafka:TopicPrefix), so that every record gets its old offset back"
            )
    laid_out = blobs.blobs.is_dir() if isinstance(blobs, BlobStore) else True
    if laid_out and next(blobs.iter_ids(), None) is not None and not force:
        raise Refused(f"{blobs.location} already holds blobs; give --force to restore into it anyway")


async def _record(settings: Settings, topic: str, backup_id: str, event: BackupRestored) -> None:
    """The restore itself, as the first record after the restored ones."""
    async with producer(settings) as p:
        await p.send_and_wait(topic, encode(event), key=backup_id.encode())


async def _start_chain(
    settings: Settings, backed_up: Path, heads: tuple[PartitionHead, ...], reason: str
) -> str:
    """Sign and append the first anchor of a new chain over the restored records, naming `reason`
    and continuing the backup's latest anchor: before the service starts, so that no anchor of the
    old chain can follow the restore. Returns its id."""
    signer = signing.load_signer(settings.key_file, settings.origin)
    body = anchors.next_body(
        latest_anchor(backed_up),
        heads,
        origin=settings.origin,
        created_at=datetime.now(UTC),
        new_chain_id=str(uuid.uuid4()),
        new_chain_reason=reason,
    )
    anchor = anchors.sign(body, signer, requests.new_id())
    raw = anchors.encode(anchor)
    async with producer(settings) as p:
        await p.send_and_wait(Topics(settings.topic_prefix).anchors, raw, key=body.chain_id.encode())
    back_up(settings, raw, anchor, signer.verifier.vkey)
    return anchors.anchor_id(raw)


async def _produce(
    settings: Settings,
    topic: str,
    records: Iterable[BackedUpRecord],
    total: int = 0,
    progress: Progress | None = None,
) -> int:
    """Each record to its partition in its original order, with its timestamp and headers."""
    count = 0
    async with producer(settings, max_batch_size=1 << 20) as p:  # idempotent, acks=all: order kept
        pending: list[tuple[asyncio.Future[Any], BackedUpRecord]] = []
        for r in records:
            pending.append((await _send(p, topic, r), r))
            count += 1
            if len(pending) >= 5000:
                await _landed(topic, pending)
                pending.clear()
                if progress is not None:
                    progress("records", count, total)
        await _landed(topic, pending)
    return count


async def _send(p: AIOKafkaProducer, topic: str, r: BackedUpRecord) -> asyncio.Future[Any]:
    """Send `r` to its partition as it was (key, timestamp, headers); the future of its offset."""
    sent: asyncio.Future[Any] = await p.send(
        topic, r.value, key=r.key, partition=r.partition, timestamp_ms=r.timestamp, headers=list(r.headers)
    )
    return sent


FILLER = b"stella-restore-filler"  # the key of the aborted records that stand in for a gap


async def _produce_anchors(settings: Settings, topic: str, records: list[BackedUpRecord]) -> int:
    """The anchors topic's records at their old offsets, gaps included: the leader appends each
    anchor in a transaction (streams.anchoring), whose marker takes an offset, and a fenced
    leader's aborted append takes more. `backups.replay_steps` says how to make the same gaps."""
    steps = backups.replay_steps([r.offset for r in records])
    if all(kind == "plain" for kind, _ in steps):
        return await _produce(settings, topic, records)
    async with (
        producer(settings) as plain,
        producer(settings, transactional_id=anchor_writer_id(settings)) as txn,
    ):
        for kind, n in steps:
            if kind == "fill":
                await txn.begin_transaction()
                for _ in range(n):
                    await (await txn.send(topic, b"", key=FILLER, partition=0))
                await txn.abort_transaction()
                continue
            r = records[n]
            if kind == "commit":
                async with txn.transaction():
                    sent = await _send(txn, topic, r)
            else:
                sent = await _send(plain, topic, r)
            await _landed(topic, [(sent, r)])
    return len(records)


async def _landed(topic: str, pending: list[tuple[asyncio.Future[Any], BackedUpRecord]]) -> None:
    """Wait for the records' acknowledgements; each must be at its old offset."""
    for (_, r), where in zip(pending, await asyncio.gather(*(f for f, _ in pending)), strict=True):
        if (where.partition, where.offset) != (r.partition, r.offset):
            raise IntegrityError(
                f"the restored record {topic}[{r.partition}]", f"offset {r.offset}", f"offset {where.offset}"
            )


def _next_steps(settings: Settings, target: Blobs, new_chain: str) -> list[str]:
    steps = []
    if isinstance(target, BlobStore):
        if settings.backend != "filesystem":
            steps.append("stella config set EvidenceLocker:Backend filesystem")
        if target.root != settings.evidence_path.expanduser().resolve():
            steps.append(f"stella config set EvidenceLocker:Path {target.root}")
    steps.append(
        "stella service start  (the index, Merkle trees and anchor chain are folded again from the log)"
    )
    if new_chain:
        steps.append(
            f'stella evidence anchor list  (the new chain\'s first anchor, "{new_chain}", is queued)'
        )
    steps += ["stella evidence verify --mode full", "stella evidence anchor verify --all"]
    return steps
