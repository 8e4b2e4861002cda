"""Blob storage operations: `stella storage migrate --to PATH` and `stella evidence storage provision`.

Migrate moves the locker's blobs to a new evidence path.

With the service stopped (it writes the blob store): every blob is read from the current
`EvidenceLocker:Path` and written under the new one by the blob store's own durable write
(`BlobStore.put_many`: temp file, digest checked on the way, fsync, rename, directory fsync),
in batches; then each blob at the new path is read back and hashed again. A blob already at the
new path is not copied again but is checked the same way, so an interrupted migration is simply
run again. Only when every blob is verified is `EvidenceLocker:Path` set in the config file. The
old folder is left as it was: delete it once the service runs from the new one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from commands import service
from locker import config
from locker.cas import BlobStore, on_filesystem, open_store
from locker.config import Settings
from locker.errors import IntegrityError, Refused, StorageUnavailable
from locker.files import write_durably
from locker.sizes import human, parse_size
from locker.times import now_iso

# A batch is made durable with one group sync: up to this many blobs or bytes (read into memory).
BATCH_BLOBS = 512
BATCH_BYTES = 64 * 1024 * 1024
KEY = "EvidenceLocker:Path"

Progress = Callable[[int, int], None]  # (blobs done, blobs in all)


@dataclass
class Migration:
    """What `migrate` did."""

    source: str
    target: str
    blobs: int
    bytes: int
    copied: int
    already_there: int
    verified: int
    config_file: str
    seconds: float
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        if not self.note:
            out.pop("note")
        return out


def migrate(settings: Settings, to: Path, progress: Progress | None = None) -> Migration:
    """Copy every blob to `to`, verify each there, then point `EvidenceLocker:Path` at `to`.

    Raises `Refused` while the service runs or for a target that is (inside) the current path,
    `StorageUnavailable` if the current path holds no blob store, `IntegrityError` for a blob
    whose bytes do not match its id (the config file is then left unchanged).
    """
    started = time.monotonic()
    source = on_filesystem(open_store(settings), "`stella storage migrate`")
    target = BlobStore(to.expanduser().resolve())
    _check_can_migrate(settings, source, target)
    total, size = source.usage()
    target.ensure()
    copied = verified = 0
    for batch in _batches(source):
        copied += _copy(source, target, batch)
        for artifact_id in batch:
            target.verify(artifact_id)
            verified += 1
            if progress is not None:
                progress(verified, total)
    config.write_value(settings.home, KEY, str(target.root))
    return Migration(
        source=str(source.root),
        target=str(target.root),
        blobs=total,
        bytes=size,
        copied=copied,
        already_there=verified - copied,
        verified=verified,
        config_file=str(settings.config_file),
        seconds=round(time.monotonic() - started, 3),
        note=_overridden(settings, target.root),
    )


def _check_can_migrate(settings: Settings, source: BlobStore, target: BlobStore) -> None:
    pid = service.any_pid(settings)
    if pid is not None:
        raise Refused(f"the service is running (pid {pid}); stop it first: `stella service stop`")
    here, there = source.root.resolve(), target.root
    if here == there:
        raise Refused(
            f"--to {there} is {KEY} already; if the blobs are in another folder, "
            f"set {KEY} back to it first (`stella config set {KEY} <folder>`)"
        )
    if here in there.parents or there in here.parents:
        raise Refused(f"--to {there} must lie outside the current {KEY} {here}, and not contain it")
    if not source.blobs.is_dir():
        raise StorageUnavailable(f"there is no blob store at {KEY} = {source.root} to migrate from")


def _batches(source: BlobStore) -> Iterator[list[str]]:
    """The source's artifact ids, a batch at a time (bounded in count and in bytes)."""
    batch: list[str] = []
    size = 0
    for artifact_id in source.iter_ids():
        batch.append(artifact_id)
        size += source.path(artifact_id).stat().st_size
        if len(batch) >= BATCH_BLOBS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _copy(source: BlobStore, target: BlobStore, batch: list[str]) -> int:
    """Make the blobs of `batch` that `target` lacks durable there; returns how many it lacked."""
    todo = [artifact_id for artifact_id in batch if not target.exists(artifact_id)]
    try:
        target.put_many([(artifact_id, source.read(artifact_id)) for artifact_id in todo])
    except IntegrityError as exc:  # the source's bytes do not hash to their id: say where they are
        raise IntegrityError(f"blob {source.path(exc.expected)}", exc.expected, exc.actual) from None
    return len(todo)


def _overridden(settings: Settings, path: Path) -> str:
    """A warning when the environment, not the config file, sets the evidence path."""
    source = settings.sources.get(KEY, "")
    if not source.startswith("env"):
        return ""
    return f"{source} overrides the config file: set it to {path} too, or unset it"


# `stella evidence storage provision --size <size> [--path DIR]` (runbook DR-001, step 1).
MARKER = ".stella-storage.json"  # in a provisioned root: what was asked for, and when


def provision(settings: Settings, size: str, path: Path | None = None) -> dict[str, object]:
    """Prepare a storage root for blobs: the folder layout, owner-only permissions, a check that
    it is writable (a probe file written, fsynced, removed) and that the filesystem has `size`
    free; a marker file records it. With `path`, `EvidenceLocker:Path` is set to it in the config
    file (the service picks it up on restart). Refused (exit 5) when there is not enough room."""
    wanted = parse_size(size)
    on_filesystem(open_store(settings), "`stella evidence storage provision`")
    root = (path or settings.evidence_path).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise Refused(f"{root} exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if free < wanted:
            raise Refused(f"{root} has {human(free)} free, less than the {human(wanted)} asked for")
        store = BlobStore(root)
        store.ensure()
        for folder in (root, store.tmp, store.blobs.parent):
            folder.chmod(0o750)
        write_durably(root / ".probe", b"probe")
        (root / ".probe").unlink()
        marker = {
            "size_bytes": wanted,
            "provisioned_at": now_iso(),
        }
        write_durably(root / MARKER, json.dumps(marker).encode())
    except OSError as exc:
        raise StorageUnavailable(f"cannot provision {root}: {exc.strerror or exc}") from None
    out: dict[str, object] = {
        "path": str(root),
        "size_bytes": wanted,
        "free_bytes": free,
        "blobs_present": sum(1 for _ in store.iter_ids()),
        "config_file": None,
    }
    if path is not None:
        config.write_value(settings.home, KEY, str(root))
        out["config_file"] = str(settings.config_file)
        if note := _overridden(settings, root):
            out["note"] = note
    return out
