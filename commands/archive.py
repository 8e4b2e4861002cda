"""`stella evidence archive --older-than AGE [--output FILE] [--compress]` and
`stella evidence recover --id ID --source archive --input FILE` (runbook SP-004 and INC-004).

Archiving moves old evidence out of the locker without losing what proves it:
1. the index gives the artifacts ingested before now - AGE that are `ingested` and not held;
2. the anchor is the latest one if it covers the whole log, else a new one the service makes; it
   is checked (signature, link, roots) like `anchor verify --latest`;
3. their events are read from the log up to that anchor, with inclusion proofs from the Merkle
   store;
4. the archive (`locker.archives`) is written to a temp file beside FILE, every blob hashed as it
   is read (one that does not hash to its id stays out, and is reported), fsynced, renamed into
   place, its folder fsynced;
5. the whole file is read back and checked as `recover` checks it: every member against the
   signed manifest, every blob against its id, every proof against the anchor;
6. only then is `archive.record` sent (in parts), the service records `artifact.archived` for
   each artifact still ingested and not held, and the projection deletes their blobs (the
   pending-deletion rows of `projections.store`); the CLI waits for the deletions.
A crash before 6 leaves a complete archive and every blob; after it, the log says what was
archived, and the service finishes the deletions when it starts.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import zstandard

from commands import anchors as anchor_ops
from commands import queries
from commands.archive_read import damaged, read_archive
from commands.integrity import changed_by
from commands.proving import Events, Prover, anchor_stops, covering_anchor, histories
from commands.retention import wait_for_deletions
from commands.sending import send_and_await_event, send_and_wait
from locker import anchors, archives, requests, signing
from locker.anchors import AnchorCreated, StoredAnchor
from locker.archives import ArchivedArtifact, Manifest
from locker.cas import Blobs, open_store
from locker.config import Settings
from locker.digests import parse_digest
from locker.errors import ArtifactNotFound, IntegrityError, NotFound, StorageUnavailable, UsageError
from locker.events import ArchiveRecorded
from locker.files import new_file
from locker.sizes import human, parse_age
from locker.times import iso_utc
from projections.index import ARCHIVED, GONE, INGESTED, ArtifactRecord
from projections.merkle_store import MerkleStore

Progress = Callable[[str, int, int | None], None]
PART = 10_000  # artifact ids in one `archive.record` command (about 750 kB)


class ArchiveResult(msgspec.Struct, kw_only=True):
    """What `stella evidence archive` did (its `--format json`)."""

    archive_id: str
    output: str  # "" when nothing was old enough: no file is written
    sha256: str
    file_bytes: int
    compressed: bool
    older_than: str
    cutoff: str
    anchor: str
    artifacts: int  # recorded as archived: their local blobs are deleted
    blob_bytes: int
    events: int  # event records (with proofs) in the archive
    held_skipped: int  # old enough, but under legal hold
    not_good_skipped: int  # old enough, but failed verification or marked corrupted
    skipped: dict[str, str]  # chosen, but not archived: why (their blobs stay)
    deletions_pending: int | None
    phases: dict[str, float]  # seconds each step took


class RecoveredResult(msgspec.Struct, kw_only=True):
    artifact_id: str
    source: str
    archive: str
    archive_id: str
    archive_sha256: str
    matches_log: bool | None  # the file is the archive `artifact.archived` names (None: not archived)
    anchor: str
    events_proven: int
    record: dict[str, Any]


# Archiving.
def create(
    settings: Settings,
    older_than: str,
    output: Path | None,
    *,
    compress: bool = False,
    progress: Progress | None = None,
) -> ArchiveResult:
    report = progress or (lambda stage, done, total: None)
    age = parse_age(older_than, what="--older-than")
    if age is None:
        raise UsageError("--older-than forever: nothing is older than forever; give an age such as 365d")
    signer = anchor_ops.signer(settings, "the archive")
    now = datetime.now(UTC)
    target = _target(settings, output, compress, now)
    header = _Header(
        archive_id=f"ela-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}",
        created_at=now,
        older_than=older_than,
        cutoff=now - age,
    )
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        phases[name] = round(time.monotonic() - clock, 3)
        clock = time.monotonic()

    chosen, held, not_good = _choose(settings, header.cutoff)
    phase("choose")
    result = ArchiveResult(
        archive_id=header.archive_id, output="", sha256="", file_bytes=0, compressed=compress,
        older_than=older_than, cutoff=iso_utc(header.cutoff), anchor="", artifacts=0, blob_bytes=0,
        events=0, held_skipped=held, not_good_skipped=not_good, skipped={}, deletions_pending=0,
        phases=phases,
    )  # fmt: skip
    if not chosen:
        return result
    _check_room(target, chosen, compress)
    stored, anchor = covering_anchor(settings)
    result.anchor = stored.id
    phase("anchor")
    events = histories(settings, chosen, anchor_stops(anchor), report)
    phase("events")
    written = _write(settings, target, compress, signer, header, (stored, anchor), chosen, events, report)
    phase("write")
    contents = read_archive(
        target, signer.verifier, max_blob=max(settings.max_content_bytes, written.largest), prove_all=True,
        progress=lambda done, total: report("checking", done, total),
    )  # fmt: skip
    if contents.manifest_sha256 != written.manifest_sha256:
        raise StorageUnavailable(f"{target} reads back with another manifest than the one written")
    phase("check")
    ids = [a.artifact_id for a in contents.manifest.artifacts]
    archived, archived_bytes, refused = _record(
        settings, header, str(target), contents.sha256, stored.id, ids
    )
    phase("record")
    result.deletions_pending = wait_for_deletions(settings)
    phase("delete")
    result.output, result.sha256, result.file_bytes = str(target), contents.sha256, contents.file_bytes
    result.artifacts, result.blob_bytes = archived, archived_bytes
    result.events = sum(a.events for a in contents.manifest.artifacts)
    result.skipped = {**written.skipped, **refused}
    return result


class _Header(msgspec.Struct, frozen=True, kw_only=True):
    archive_id: str
    created_at: datetime
    older_than: str
    cutoff: datetime


def _target(settings: Settings, output: Path | None, compress: bool, now: datetime) -> Path:
    """The archive's absolute path: `output`, or a new name in `Archive:Path`; never one that exists."""
    if output is None:
        output = settings.archive_path / f"evidence-{now:%Y%m%dT%H%M%SZ}.tar{'.zst' if compress else ''}"
    target = output.expanduser().absolute()
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} exists: an archive is never overwritten; choose another --output")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailable(f"cannot create {target.parent}: {exc}") from exc
    return target


PER_ARTIFACT = 2048  # bytes an artifact adds besides its blob: two tar headers, its events and proofs


def _check_room(target: Path, chosen: list[ArtifactRecord], compress: bool) -> None:
    """Refuse before any work when the archive's file system cannot hold it uncompressed (its
    size is not known beforehand compressed, so that is only checked as it is written)."""
    if compress:
        return
    needed = sum(r.size + 511 for r in chosen) + PER_ARTIFACT * len(chosen)
    free = shutil.disk_usage(target.parent).free
    if needed > free:
        raise StorageUnavailable(
            f"the archive needs about {human(needed)} and {target.parent} has {human(free)} free: "
            "choose another --output, or a larger --older-than"
        )


def _choose(settings: Settings, cutoff: datetime) -> tuple[list[ArtifactRecord], int, int]:
    """The artifacts to archive, in log order; how many old enough were held, and how many were
    not good (failed verification, marked corrupted): those are never archived as evidence."""
    chosen: list[ArtifactRecord] = []
    held = not_good = 0
    with queries.index_store(settings) as index:
        for record in index.records():
            if record.ingested_at >= cutoff or record.status in GONE:
                continue
            if record.hold:
                held += 1
            elif record.status != INGESTED:
                not_good += 1
            else:
                chosen.append(record)
    chosen.sort(key=lambda r: (r.partition, r.offset))
    return chosen, held, not_good


class _Written(msgspec.Struct):
    manifest_sha256: str
    largest: int  # bytes of the largest blob
    skipped: dict[str, str]  # chosen artifacts whose blob was not good: why


def _write(
    settings: Settings,
    target: Path,
    compress: bool,
    signer: signing.Signer,
    header: _Header,
    anchored: tuple[StoredAnchor, AnchorCreated],
    chosen: list[ArtifactRecord],
    events: Events,
    report: Progress,
) -> _Written:
    """Write the archive through `locker.files.new_file`: synced, linked into place (never over a
    file that appeared meanwhile)."""
    stored, anchor = anchored
    mtime = int(header.created_at.timestamp())
    files: dict[str, archives.FileEntry] = {}
    listed: list[ArchivedArtifact] = []
    skipped: dict[str, str] = {}
    largest = 0
    try:
        with (
            new_file(target) as raw,
            _compressing(raw, compress) as stream,
            tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
            MerkleStore(settings.merkle_path, readonly=True) as trees,
        ):
            document = anchors.export_document(stored, anchor, signer.verifier.vkey)
            files[archives.ANCHOR] = _add(
                tar, archives.ANCHOR, json.dumps(document, indent=1).encode(), mtime
            )
            prove = Prover(trees, anchor)
            groups = _groups(chosen, open_store(settings), skipped)
            for group, members in enumerate(groups):
                lines = prove([(r.artifact_id, events.get(r.artifact_id, [])) for r, _ in members])
                name = archives.events_member(group)
                files[name] = _add(tar, name, archives.encode_lines(lines), mtime)
                for (record, data), line in zip(members, lines, strict=True):
                    _add(tar, archives.blob_member(record.artifact_id), data, mtime)
                    largest = max(largest, len(data))
                    listed.append(_listed(record, len(line.events)))
                report("writing", len(listed) + len(skipped), len(chosen))
            if not listed:
                raise NotFound("no chosen artifact has a good blob; nothing was archived")
            manifest = Manifest(
                archive_id=header.archive_id, created_at=header.created_at, created_by=requests.actor(),
                older_than=header.older_than, cutoff=header.cutoff, origin=settings.origin,
                anchor_id=stored.id, verifier_key=signer.verifier.vkey, artifacts=tuple(listed),
                blob_bytes=sum(a.size for a in listed), files=files,
            )  # fmt: skip
            raw_manifest = archives.encode_manifest(manifest)
            _add(tar, archives.MANIFEST, raw_manifest, mtime)
            _add(tar, archives.SIGNATURE, base64.b64encode(signer.sign(raw_manifest)) + b"\n", mtime)
    except FileExistsError:
        raise UsageError(
            f"{target} exists: an archive is never overwritten; choose another --output"
        ) from None
    except OSError as exc:
        raise StorageUnavailable(f"cannot write the archive {target}: {exc}") from exc
    return _Written(manifest_sha256=archives.entry_of(raw_manifest).sha256, largest=largest, skipped=skipped)


@contextlib.contextmanager
def _compressing(raw: IO[bytes], compress: bool) -> Iterator[IO[bytes]]:
    """`raw`, or a zstd stream into it (one frame, with its checksum) if `compress`."""
    if not compress:
        yield raw
        return
    zstd = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with zstd.stream_writer(raw, closefd=False) as stream:
        yield stream  # type: ignore[misc]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> archives.FileEntry:
    """Append a plain-file member with fixed metadata; its digest and size."""
    tar.addfile(archives.tar_info(name, len(data), mtime), io.BytesIO(data))
    return archives.entry_of(data)


def _groups(
    chosen: list[ArtifactRecord], blobs: Blobs, skipped: dict[str, str]
) -> Iterator[list[tuple[ArtifactRecord, bytes]]]:
    """The chosen artifacts with their blobs, in groups of at most `GROUP_ARTIFACTS` and (but for
    one large blob) `GROUP_BYTES`; an artifact whose blob is missing or does not hash to its id
    is left out and put in `skipped`."""
    group: list[tuple[ArtifactRecord, bytes]] = []
    size = 0
    for record in chosen:
        try:
            data = blobs.read_checked(record.artifact_id)
        except ArtifactNotFound:
            skipped[record.artifact_id] = "its blob is missing (run `stella evidence verify`)"
            continue
        except IntegrityError:
            skipped[record.artifact_id] = "its blob does not hash to its id (run `stella evidence verify`)"
            continue
        if group and (len(group) >= archives.GROUP_ARTIFACTS or size + len(data) > archives.GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append((record, data))
        size += len(data)
    if group:
        yield group


def _listed(record: ArtifactRecord, events: int) -> ArchivedArtifact:
    return ArchivedArtifact(
        artifact_id=record.artifact_id, size=record.size, kind=record.kind, subjects=record.subjects,
        producer=record.producer, media_type=record.media_type, ingested_at=record.ingested_at,
        partition=record.partition, offset=record.offset, events=events,
    )  # fmt: skip


def _record(
    settings: Settings, header: _Header, location: str, sha256: str, anchor_id: str, ids: list[str]
) -> tuple[int, int, dict[str, str]]:
    """Send `archive.record` in parts and wait for each `archive.recorded`; (archived, bytes, skipped)."""
    parts = max(1, -(-len(ids) // PART))
    archived = size = 0
    skipped: dict[str, str] = {}
    for part in range(parts):
        command = requests.record_archive(
            header.archive_id, location, sha256, anchor_id, ids[part * PART : (part + 1) * PART],
            part=part + 1, parts=parts,
        )  # fmt: skip
        _, _, event = send_and_await_event(settings, command, command.command_id.encode(), "archive record")
        assert isinstance(event, ArchiveRecorded)
        archived, size = archived + event.archived, size + event.bytes
        skipped.update(event.skipped)
    return archived, size, skipped


# Recovering one artifact.
def recover(settings: Settings, artifact_id: str, path: Path) -> RecoveredResult:
    """Check the archive at `path` (`read_archive`; and that it is the archive the log names, where
    the artifact is archived), put the blob back durably, and have the service record
    `artifact.recovered`; the artifact's record once it shows."""
    parse_digest(artifact_id, what="artifact id")
    record = queries.find(settings, artifact_id)
    if not path.is_file():
        raise UsageError(f"--input {path}: no such file")
    contents = read_archive(
        path, anchor_ops.verifier(settings), max_blob=max(settings.max_content_bytes, record.size),
        wanted=frozenset([artifact_id]),
    )  # fmt: skip
    if artifact_id not in contents.blobs:
        raise NotFound(f"{path} holds no artifact {artifact_id}")
    named = record.archive
    matches = None if named is None else named.sha256 == contents.sha256
    if named is not None and record.status == ARCHIVED and not matches:
        raise damaged(
            path,
            f"it is not the archive the log names for {artifact_id} ({named.location}, {named.sha256}): "
            f"this file hashes to {contents.sha256}",
        )
    open_store(settings).restore(artifact_id, contents.blobs[artifact_id])
    command = requests.recover_artifact(artifact_id, "archive")
    after = send_and_wait(settings, command, changed_by(settings, artifact_id, command), "recover")
    return RecoveredResult(
        artifact_id=artifact_id, source="archive", archive=str(path.absolute()),
        archive_id=contents.manifest.archive_id, archive_sha256=contents.sha256, matches_log=matches,
        anchor=contents.anchor_id, events_proven=len(contents.histories[artifact_id].events), record=after,
    )  # fmt: skip
