"""`stella backup create|list --type evidence-locker` (runbook DR-001).

A backup is consistent as of the end offsets of `evidence.events` and `evidence.anchors` when it
starts: every record up to them (blobs are durable before their events, so every artifact those
events ingested has its blob), the blobs of those artifacts, the anchor backup copies and the
config file. Blobs are appended to the backup's `blobs.pack`, unless the latest earlier backup in
the same root (its signature good, its files there) holds them already: its pack is read instead
(incremental), and `blobs.index` says where each blob is. One pack file instead of a file per blob
makes a backup a sequential write (a million small files cost a million file creations). Each
blob is checked against its id on the way in; one that is missing or damaged in storage is listed
in the manifest (`missing_blobs`), not copied. The manifest names every file with its SHA-256,
and every earlier pack it reads, and is signed with the anchor key; then the service records
`backup.created`. Runs while the service runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from commands.anchors import signer as anchor_signer
from commands.sending import send_and_await_event
from locker import anchors, backups, config, requests, signing
from locker.anchors import StoredAnchor
from locker.backups import BACKUP_TYPE, BackedUpRecord, FileEntry, Manifest, PackedBlob
from locker.cas import Blobs, BlobStore, open_store
from locker.config import Settings
from locker.digests import is_digest
from locker.errors import (
    ArtifactNotFound,
    InvalidInput,
    LockerError,
    StorageUnavailable,
    StoreUnreachable,
    UsageError,
)
from locker.events import Event, decode
from locker.files import write_durably
from locker.times import iso_utc
from projections.store import IndexStore
from streams.kafka import assign_all, consumer, end_offsets
from streams.topics import Topics

Progress = Callable[[str, int, int], None]  # (stage, done, of)

BLOB_BATCH = 256
FRAME_RECORDS = 5000


def create(
    settings: Settings,
    backup_type: str = BACKUP_TYPE,
    output: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    if backup_type != BACKUP_TYPE:
        raise UsageError(f"--type {backup_type!r}: the one type is {BACKUP_TYPE}")
    signer = anchor_signer(settings, "the backup")
    root = (output or settings.backups_path).expanduser().resolve()
    started = time.monotonic()
    backup_id = f"elb-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    folder = root / backup_id
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise StorageUnavailable(f"cannot write a backup under {root}: {exc.strerror or exc}") from None
    try:
        topics = Topics(settings.topic_prefix)
        ends = asyncio.run(_ends(settings, [topics.events, topics.anchors]))
        events = _save_topic(
            settings, topics.events, ends[topics.events], folder / "events.records", progress
        )
        chain = _save_topic(
            settings, topics.anchors, ends[topics.anchors], folder / "anchors.records", progress
        )
        phases = {"records": time.monotonic() - started}
        mark = time.monotonic()
        live = _live_index(settings, ends[topics.events])
        ids, index_checksum = live if live is not None else fold(folder / "events.records")
        phases["index"], mark = time.monotonic() - mark, time.monotonic()
        earlier, earlier_packs = _earlier_blobs(root, backup_id, signer.verifier)
        copied, missing, placed = _pack_blobs(open_store(settings), folder, backup_id, ids, earlier, progress)
        write_durably(folder / backups.BLOB_INDEX, backups.encode_blob_index(placed))
        phases["blobs"], mark = time.monotonic() - mark, time.monotonic()
        packs = {name: earlier_packs[name] for name in sorted({b.pack for b in placed} - {backup_id})}
        _copy_anchor_backups(settings.anchor_backup_path, folder / "anchor-backups")
        _copy_config(settings, folder / "config.toml")
        _sync_tree(folder)  # every file durable before the manifest that vouches for them
        manifest = Manifest(
            backup_id=backup_id,
            created_at=datetime.now(UTC),
            topic_prefix=settings.topic_prefix,
            ends={
                "events": _by_partition(ends[topics.events]),
                "anchors": _by_partition(ends[topics.anchors]),
            },
            events=events,
            anchors=chain,
            artifacts=len(placed),
            blob_bytes=sum(b.size for b in placed),
            missing_blobs=tuple(sorted(missing)),
            files=(files := {name: file_entry(folder / name) for name in _files(folder)}),
            packs=packs | ({backup_id: files[backups.PACK]} if backups.PACK in files else {}),
            index_checksum=index_checksum,
            latest_anchor=latest.id if (latest := latest_anchor(folder / "anchors.records")) else "",
            verifier_key=signer.verifier.vkey,
        )
        raw = backups.encode_manifest(manifest)
        write_durably(folder / "manifest.json", raw)
        write_durably(folder / "manifest.sig", base64.b64encode(signer.sign(raw)) + b"\n")
        phases["manifest"], mark = time.monotonic() - mark, time.monotonic()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half backup that looks like one
        raise
    manifest_sha256 = "sha256:" + hashlib.sha256(raw).hexdigest()
    command = requests.RecordBackup(
        command_id=requests.new_id(),
        requested_at=datetime.now(UTC),
        backup_id=backup_id,
        backup_type=BACKUP_TYPE,
        manifest_sha256=manifest_sha256,
        events=events,
        anchors=chain,
        artifacts=manifest.artifacts,
        blobs_copied=copied,
        latest_anchor=manifest.latest_anchor,
        requested_by=requests.actor(),
    )
    partition, offset, _ = send_and_await_event(settings, command, backup_id.encode(), "backup record")
    phases["recorded"] = time.monotonic() - mark
    return {
        "backup_id": backup_id,
        "path": str(folder),
        "events": events,
        "anchors": chain,
        "artifacts": manifest.artifacts,
        "blobs_copied": copied,
        "blobs_already_there": manifest.artifacts - copied,
        "earlier_packs": sorted(packs),
        "missing_blobs": list(manifest.missing_blobs),
        "bytes": sum(e.size for e in manifest.files.values()),
        "latest_anchor": manifest.latest_anchor,
        "index_checksum": manifest.index_checksum,
        "manifest_sha256": manifest_sha256,
        "recorded_at": f"{topics.events}[{partition}]@{offset}",
        "seconds": round(time.monotonic() - started, 3),
        "phases": {name: round(seconds, 3) for name, seconds in phases.items()},
    }


def listing(
    settings: Settings, backup_type: str = BACKUP_TYPE, root: Path | None = None
) -> list[dict[str, Any]]:
    """The backups in the root, oldest first, each with whether its signature checks out."""
    if backup_type != BACKUP_TYPE:
        raise UsageError(f"--type {backup_type!r}: the one type is {BACKUP_TYPE}")
    base = (root or settings.backups_path).expanduser()
    trusted = _verifier(settings)
    rows: list[dict[str, Any]] = []
    for folder in sorted(base.glob("elb-*")) if base.is_dir() else []:
        try:
            raw = (folder / "manifest.json").read_bytes()
            manifest = backups.decode_manifest(raw)
            signature = base64.b64decode((folder / "manifest.sig").read_bytes(), validate=False)
        except (OSError, ValueError) as exc:
            rows.append({"backup_id": folder.name, "signature": f"unreadable: {exc}"})
            continue
        check = (
            "unchecked (no signing key here)"
            if trusted is None
            else ("ok" if trusted.verify(raw, signature) else "BAD")
        )
        rows.append(
            {
                "backup_id": manifest.backup_id,
                "created_at": iso_utc(manifest.created_at),
                "bytes": sum(e.size for e in manifest.files.values()),
                "artifacts": manifest.artifacts,
                "reads_packs_of": sorted(set(manifest.packs) - {manifest.backup_id}),
                "events": manifest.events,
                "latest_anchor": manifest.latest_anchor,
                "signature": check,
            }
        )
    return rows


# Pieces.
def _verifier(settings: Settings) -> signing.Verifier | None:
    try:
        return signing.load_signer(settings.key_file, settings.origin).verifier
    except LockerError:
        return None


async def _ends(settings: Settings, names: list[str]) -> dict[str, dict[int, int]]:
    return {name: await end_offsets(settings, name) for name in names}


def _by_partition(ends: dict[int, int]) -> tuple[int, ...]:
    return tuple(ends.get(p, 0) for p in range(max(ends, default=-1) + 1))


def _save_topic(
    settings: Settings, topic: str, ends: dict[int, int], path: Path, progress: Progress | None
) -> int:
    """Every record of `topic` below `ends`, as it is (null values, headers, timestamps), into
    `path` in framed chunks; returns how many."""
    with open(path, "wb") as out:
        count = asyncio.run(_stream(settings, topic, ends, out, progress))
        out.flush()
        os.fsync(out.fileno())
    return count


async def _stream(
    settings: Settings, topic: str, ends: dict[int, int], out: BinaryIO, progress: Progress | None
) -> int:
    total = sum(ends.values())
    done = 0
    async with consumer(settings) as c:
        tps = await assign_all(c, topic, [p for p, end in ends.items() if end > 0])
        if not tps:
            return 0
        firsts = await c.beginning_offsets(tps)
        if any(firsts[tp] > 0 for tp in tps):
            raise StorageUnavailable(
                f"{topic} no longer starts at offset 0: records were deleted, a backup would not be whole"
            )
        await c.seek_to_beginning(*tps)
        remaining = set(tps)
        while remaining:
            chunk: list[BackedUpRecord] = []
            for tp, records in (
                await c.getmany(*remaining, timeout_ms=1000, max_records=FRAME_RECORDS)
            ).items():
                for r in records:
                    if r.offset < ends[tp.partition]:
                        chunk.append(
                            BackedUpRecord(
                                r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers)
                            )
                        )
            for tp in list(remaining):  # by position: the last offsets may be transaction markers
                if await c.position(tp) >= ends[tp.partition]:
                    remaining.discard(tp)
                    c.pause(tp)
            if chunk:
                out.write(backups.frame(chunk))
                done += len(chunk)
                if progress is not None:
                    progress(topic.rsplit(".", 1)[-1], done, total)
    return done


def read_records(path: Path) -> Iterator[BackedUpRecord]:
    """The records of a stream file, a frame at a time (a stream can be far larger than memory)."""
    with open(path, "rb") as stream:
        left = os.fstat(stream.fileno()).st_size
        while header := stream.read(backups.FRAME_HEADER):
            left -= len(header)
            size = backups.frame_size(header) if len(header) == backups.FRAME_HEADER else -1
            # A header can claim up to 4 GiB, and read(n) allocates n bytes before it reads: a
            # claim beyond the end of the file is refused unread.
            body = stream.read(size) if 0 <= size <= left else b""
            left -= len(body)
            if size < 0 or len(body) != size:
                raise StorageUnavailable(f"{path} is cut short at byte {stream.tell()}")
            try:
                yield from backups.decode_frame(body)
            except ValueError as exc:
                raise StorageUnavailable(f"{path}: {exc}") from None


def _earlier_blobs(
    root: Path, backup_id: str, trusted: signing.Verifier
) -> tuple[dict[str, PackedBlob], dict[str, FileEntry]]:
    """Where the latest earlier backup in `root` has each blob, and the packs that holds them; empty
    when there is none whose signature, blob index and packs check out (everything is copied)."""
    for folder in sorted(root.glob("elb-*"), reverse=True):
        if folder.name >= backup_id:
            continue
        try:
            raw = (folder / "manifest.json").read_bytes()
            signature = base64.b64decode((folder / "manifest.sig").read_bytes(), validate=False)
            manifest = backups.decode_manifest(raw)
            index = folder / backups.BLOB_INDEX
            if not trusted.verify(raw, signature) or file_entry(index) != manifest.files.get(
                backups.BLOB_INDEX
            ):
                continue
            if any(
                (root / name / backups.PACK).stat().st_size != e.size for name, e in manifest.packs.items()
            ):
                continue
            placed = backups.decode_blob_index(index.read_bytes())
        except (OSError, ValueError):
            continue  # not a backup this locker can build on: look further back
        return {b.artifact_id: b for b in placed}, dict(manifest.packs)
    return {}, {}


def _pack_blobs(
    source: Blobs,
    folder: Path,
    backup_id: str,
    ids: list[str],
    earlier: dict[str, PackedBlob],
    progress: Progress | None,
) -> tuple[int, set[str], list[PackedBlob]]:
    """Append to the backup's pack the blobs `earlier` lacks, each checked against its id. Returns
    (copied, ids missing or damaged in storage, where every blob the backup holds is)."""
    copied, missing, placed = 0, set(), []
    pack = folder / backups.PACK
    offset = 0
    read = _reader(source)
    with open(pack, "wb") as out:
        for n, artifact_id in enumerate(ids, 1):
            known = earlier.get(artifact_id)
            if known is not None:
                placed.append(known)
                continue
            data = read(artifact_id) if is_digest(artifact_id) else None
            if data is None:
                missing.add(artifact_id)
                continue
            if "sha256:" + hashlib.sha256(data).hexdigest() != artifact_id:
                missing.add(artifact_id)  # damaged in storage: never backed up under its id
                continue
            out.write(data)
            placed.append(PackedBlob(artifact_id, backup_id, offset, len(data)))
            offset += len(data)
            copied += 1
            if progress is not None and n % BLOB_BATCH == 0:
                progress("blobs", n, len(ids))
    if not copied:
        pack.unlink()
    if progress is not None:
        progress("blobs", len(ids), len(ids))
    return copied, missing, placed


def _reader(source: Blobs) -> Callable[[str], bytes | None]:
    """Reads a blob's bytes; None when it is missing or unreadable. An unreachable S3 server stops
    the backup (`StoreUnreachable`): a blob is never called missing because the network was down."""
    if isinstance(source, BlobStore):
        stored = str(source.blobs)  # paths as strings: pathlib costs more than reading a small blob

        def read_file(artifact_id: str) -> bytes | None:
            hexdigest = artifact_id.removeprefix("sha256:")
            try:
                with open(f"{stored}/{hexdigest[:2]}/{hexdigest}", "rb") as blob:
                    return blob.read()
            except OSError:
                return None

        return read_file

    def read_object(artifact_id: str) -> bytes | None:
        try:
            return source.read(artifact_id)
        except StoreUnreachable:
            raise
        except (ArtifactNotFound, StorageUnavailable):  # not there, or this one unreadable
            return None

    return read_object


def _copy_anchor_backups(source: Path, target: Path) -> None:
    target.mkdir()
    if source.is_dir():
        for copy in sorted(source.glob("*.json")):
            shutil.copy2(copy, target / copy.name)


def _copy_config(settings: Settings, target: Path) -> None:
    """The config file without secrets (none of its keys is secret today: `config.SECRET_KEYS`)."""
    values = config.read_file(settings.config_file) if settings.config_file.exists() else {}
    lines = [f"{key} = {value!r}" for key, value in sorted(values.items()) if key not in config.SECRET_KEYS]
    write_durably(
        target, ("# the config file at backup time, keys as Section:Key\n" + "\n".join(lines) + "\n").encode()
    )


def _sync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
        _fsync(path)
    _fsync(folder)
    _fsync(folder.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "manifest.sig")
    )


def file_entry(path: Path) -> FileEntry:
    """The SHA-256 and size of a file, read a MiB at a time."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return FileEntry(sha256="sha256:" + hasher.hexdigest(), size=path.stat().st_size)


def _live_index(settings: Settings, ends: dict[int, int]) -> tuple[list[str], str] | None:
    """The indexed artifact ids and the index checksum, from the live index if it has applied
    exactly the backed-up events (a read-only view is one point in time); None if it has applied
    fewer or more (events came in), after waiting a little for it to catch up."""
    wanted = {p: end - 1 for p, end in ends.items() if end}
    deadline = time.monotonic() + 2.0
    while True:
        with IndexStore(settings.index_path, readonly=True) as index:
            applied = {p: o for p, o in index.applied().items() if o >= 0}
            if applied == wanted:
                return list(index.artifact_ids()), index.checksum()
        behind = all(applied.get(p, -1) <= o for p, o in wanted.items()) and set(applied) <= set(wanted)
        if not behind or time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def fold(events: Path) -> tuple[list[str], str]:
    """One pass over the backed-up events: the ids of the artifacts they index (in id order), and
    the checksum of the index they fold to (what a restore must give)."""
    with (
        tempfile.TemporaryDirectory(prefix="stella-backup-index-") as tmp,
        IndexStore(Path(tmp) / "index", bulk=True) as index,
    ):
        batch: list[tuple[int, int, Event | None]] = []
        for record in read_records(events):
            try:
                event: Event | None = decode(record.value)
            except InvalidInput:
                event = None
            batch.append((record.partition, record.offset, event))
            if len(batch) >= FRAME_RECORDS:
                index.apply(batch, partial(_read_range, events))
                batch = []
        index.apply(batch, partial(_read_range, events))
        return list(index.artifact_ids()), index.checksum()


def fold_checksum(events: Path) -> str:
    """The checksum of the index a backed-up record stream folds to (for a child process)."""
    return fold(events)[1]


def _read_range(events: Path, partition: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """A `LogRange` over a backed-up record stream, for the `state.restored` records in it (rare:
    each one reads the stream again)."""
    for record in read_records(events):
        if record.partition == partition and start <= record.offset < end:
            yield record.offset, record.value or b""


def latest_anchor(path: Path) -> StoredAnchor | None:
    """The last anchor of a backed-up `evidence.anchors` stream, recovered records substituted."""
    stored = [StoredAnchor(r.offset, r.value or b"") for r in read_records(path)]
    items = anchors.decoded(anchors.effective_chain(stored)[0])
    return items[-1][0] if items else None
