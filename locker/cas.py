"""Content-addressed blob storage: the `Blobs` protocol, its filesystem store, and `open_store`.

`EvidenceLocker:Backend` picks the store: `filesystem` (`BlobStore`, below) or `s3`
(`locker.s3store.S3BlobStore`, objects in a bucket). Callers take a `Blobs` from `open_store`;
only what is about files by nature (`storage migrate`, temp-file cleanup, provisioning a folder)
asks for a `BlobStore` with `on_filesystem`.

Filesystem layout under the evidence path:

    blobs/sha256/<first two hex>/<64 hex>   the artifacts, read-only once renamed in
    tmp/                                     files being written; never referenced by an event

A blob is durable before `put_many` returns: each file is written to tmp/ while its digest is
computed, checked against the expected id, fsynced, renamed into place, and then every
directory that received a rename is fsynced once (group fsync for the whole batch).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Protocol, cast

from locker import verification
from locker.digests import parse_digest
from locker.errors import ArtifactNotFound, IntegrityError, InvalidInput, Refused, StorageUnavailable
from locker.files import fsync_dir

if TYPE_CHECKING:
    from locker.config import Settings

_CHUNK = 1 << 20


class DiskUsage(NamedTuple):
    total: int
    free: int  # for an unprivileged writer


class Blobs(Protocol):
    """What callers use of a blob store. Every write is durable before it returns; a missing blob
    is `ArtifactNotFound`, bytes that do not hash to their id `IntegrityError`, and a store that
    cannot be reached or written `StorageUnavailable` (which the loops retry)."""

    location: str  # where the blobs are, for messages: a folder, or s3://bucket/prefix

    def ensure(self) -> None:
        """Make the store ready to take blobs (idempotent); `StorageUnavailable` if it cannot be."""

    def where(self, artifact_id: str) -> str:
        """Where the blob of `artifact_id` is (a path, or an s3:// URL), for people to read."""

    def exists(self, artifact_id: str) -> bool: ...

    def read(self, artifact_id: str) -> bytes: ...

    def open(self, artifact_id: str) -> BinaryIO:
        """The stored bytes to read in pieces (the caller closes it)."""

    def size(self, artifact_id: str) -> int: ...

    def hash_of(self, artifact_id: str) -> str:
        """The digest of the stored bytes, read as a stream."""

    def verify(self, artifact_id: str) -> None:
        """Raise `IntegrityError` unless the stored bytes hash to `artifact_id`."""

    def read_checked(self, artifact_id: str) -> bytes:
        """`read`, and raise `IntegrityError` unless the bytes hash to `artifact_id`."""

    def check(self, artifact_id: str, expected_size: int) -> verification.Found:
        """Read the blob once and judge it (a verification run's check). Raises only
        `StorageUnavailable` for a store that cannot be reached (S3), so that the run retries."""

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Make every `(artifact_id, data)` durable; blobs already there are left alone."""

    def restore(self, artifact_id: str, data: bytes) -> None:
        """Replace the blob of `artifact_id` (damaged, or gone) with `data`, durably."""

    def delete_many(self, artifact_ids: Sequence[str]) -> None:
        """Delete these blobs (gone already is fine), durably."""

    def iter_ids(self) -> Iterator[str]: ...

    def usage(self) -> tuple[int, int]:
        """(blob count, total bytes)."""

    def free_bytes(self) -> int | None:
        """Free bytes for new blobs; None if the store has no such limit or it is unknown."""

    def disk_usage(self) -> DiskUsage | None: ...

    def readiness(self, room: int) -> dict[str, object]:
        """Can the store take one more blob of `room` bytes? `{"writable": bool, ...}` (`/healthz`)."""

    def clean_tmp(self) -> int:
        """Delete leftovers of interrupted writes; returns how many. Call with no writer running."""


def open_store(settings: Settings) -> Blobs:
    """The blob store `EvidenceLocker:Backend` names: `BlobStore(EvidenceLocker:Path)` or the
    S3 bucket of the `S3:*` keys. `UsageError` for a bad backend or S3 config."""
    if settings.backend == "s3":
        from locker.s3store import S3BlobStore  # boto3 loads only for an s3 backend (CLI start-up)

        return S3BlobStore.from_settings(settings)
    return BlobStore(settings.evidence_path)


def checked(artifact_id: str, data: bytes, what: str = "content") -> bytes:
    """`data`, if it hashes to `artifact_id`; `IntegrityError` about `what` otherwise."""
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != artifact_id:
        raise IntegrityError(what, artifact_id, actual)
    return data


def on_filesystem(store: Blobs, what: str) -> BlobStore:
    """`store` if it is a filesystem store; `Refused` saying that `what` needs one otherwise."""
    if isinstance(store, BlobStore):
        return store
    raise Refused(
        f"{what} works on a filesystem blob store, and EvidenceLocker:Backend is s3 ({store.location})"
    )


class BlobStore:
    def __init__(self, root: Path, *, group_sync: bool = True) -> None:
        self.root = root
        self.location = str(root)
        self.group_sync = group_sync and _libc_syncfs is not None
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        """Create the folder layout (idempotent), fanout folders included."""
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            for i in range(256):
                (self.blobs / f"{i:02x}").mkdir(parents=True, exist_ok=True)
            for folder in (self.blobs, self.blobs.parent, self.root):
                fsync_dir(folder)
        except OSError as exc:
            raise StorageUnavailable(f"cannot prepare storage at {self.root}: {exc}") from exc

    def path(self, artifact_id: str) -> Path:
        hexdigest = parse_digest(artifact_id, what="artifact id")[len("sha256:") :]
        return self.blobs / hexdigest[:2] / hexdigest

    def where(self, artifact_id: str) -> str:
        return str(self.path(artifact_id))

    def check(self, artifact_id: str, expected_size: int) -> verification.Found:
        try:
            path = self.path(artifact_id)
        except InvalidInput:  # not an artifact id (a task this worker did not write): nothing there
            path = self.blobs / "not-an-artifact-id"
        return verification.check(path, artifact_id, expected_size)

    def readiness(self, room: int) -> dict[str, object]:
        try:
            stat = os.statvfs(self.tmp)
        except OSError as exc:
            return {"writable": False, "detail": f"{self.root}: {exc.strerror}"}
        free = stat.f_bavail * stat.f_frsize
        if not os.access(self.tmp, os.W_OK):
            return {"writable": False, "free_bytes": free, "detail": f"{self.tmp} is not writable"}
        if free < room:
            detail = f"{self.root}: less than one artifact free"
            return {"writable": False, "free_bytes": free, "detail": detail}
        return {"writable": True, "free_bytes": free}

    def free_bytes(self) -> int | None:
        """Free bytes for an unprivileged writer on this store's file system; None if unknown."""
        usage = self.disk_usage()
        return None if usage is None else usage.free

    def disk_usage(self) -> DiskUsage | None:
        """Size and free bytes of this store's file system; None if unknown."""
        try:
            total, _, free = shutil.disk_usage(self.root)
        except OSError:
            return None
        return DiskUsage(total, free)

    def exists(self, artifact_id: str) -> bool:
        return self.path(artifact_id).is_file()

    @contextlib.contextmanager
    def _reading(self, artifact_id: str) -> Iterator[None]:
        """A missing blob is `ArtifactNotFound`; any other failure to read it `StorageUnavailable`."""
        try:
            yield
        except FileNotFoundError:
            raise ArtifactNotFound(artifact_id) from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {artifact_id}: {exc}") from exc

    def read(self, artifact_id: str) -> bytes:
        with self._reading(artifact_id):
            return self.path(artifact_id).read_bytes()

    def open(self, artifact_id: str) -> BinaryIO:
        """The stored bytes as a file to read in pieces (the caller closes it)."""
        with self._reading(artifact_id):
            return self.path(artifact_id).open("rb")

    def size(self, artifact_id: str) -> int:
        with self._reading(artifact_id):
            return self.path(artifact_id).stat().st_size

    def hash_of(self, artifact_id: str) -> str:
        """The digest of the stored bytes, computed by streaming the file."""
        hasher = hashlib.sha256()
        with self.open(artifact_id) as fh, self._reading(artifact_id):
            while chunk := fh.read(_CHUNK):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()

    def verify(self, artifact_id: str) -> None:
        """Raise `IntegrityError` unless the stored bytes hash to `artifact_id`."""
        actual = self.hash_of(artifact_id)
        if actual != artifact_id:
            raise IntegrityError(f"blob {artifact_id}", artifact_id, actual)

    def put(self, artifact_id: str, data: bytes) -> None:
        self.put_many([(artifact_id, data)])

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Make every `(artifact_id, data)` durable; blobs already present are left alone.

        Raises `IntegrityError` if some data does not hash to its id and `StorageUnavailable` on
        I/O errors; in both cases no temp file of the batch is left behind.
        """
        blobs = str(self.blobs)
        todo: list[tuple[str, str, bytes]] = []
        for artifact_id, data in items:
            hexdigest = parse_digest(artifact_id, what="artifact id")[len("sha256:") :]
            final = f"{blobs}/{hexdigest[:2]}/{hexdigest}"
            if not os.path.exists(final):
                todo.append((final, artifact_id, data))
        if not todo:
            return
        tmps: list[str] = []
        try:
            for _, artifact_id, data in todo:
                tmps.append(self._write_tmp(artifact_id, data, fsync=not self.group_sync))
            if self.group_sync:
                _syncfs(self.root)  # every temp file's data is durable ...
            for tmp, (final, _, _) in zip(tmps, todo, strict=True):
                os.replace(tmp, final)
            tmps.clear()
            if self.group_sync:
                _syncfs(self.root)  # ... and so is every rename, before anyone hears of them
            else:
                for folder in {os.path.dirname(final) for final, _, _ in todo}:
                    fsync_dir(Path(folder))
        except OSError as exc:
            raise StorageUnavailable(f"cannot write to {self.root}: {exc}") from exc
        finally:
            for tmp in tmps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _write_tmp(self, artifact_id: str, data: bytes, *, fsync: bool) -> str:
        """Write `data` to a new temp file, checking its digest on the way; fsync if asked."""
        # The writer's pid in the name: `clean_tmp` leaves the files of live writers alone.
        tmp = f"{self.tmp}/{artifact_id[7:]}.{os.getpid()}-{os.urandom(8).hex()}.tmp"
        hasher = hashlib.sha256()
        view = memoryview(data)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            for start in range(0, len(view), _CHUNK):
                chunk = view[start : start + _CHUNK]
                hasher.update(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk) :]
            actual = "sha256:" + hasher.hexdigest()
            if actual != artifact_id:
                raise IntegrityError("content", artifact_id, actual)
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def restore(self, artifact_id: str, data: bytes) -> None:
        """Replace the blob of `artifact_id` (damaged, or gone) with `data`, durably: checked
        against the id, written to a temp file, fsynced, renamed over the old one, directory
        fsynced. Raises `IntegrityError` (nothing changed) or `StorageUnavailable`."""
        final = self.path(artifact_id)
        try:
            tmp = self._write_tmp(artifact_id, data, fsync=True)
            try:
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            fsync_dir(final.parent)
        except OSError as exc:
            raise StorageUnavailable(f"cannot restore {artifact_id} in {self.root}: {exc}") from exc

    def delete_many(self, artifact_ids: Sequence[str]) -> None:
        """Delete these blobs (gone already is fine), durably: one group sync for all of them.
        Many are unlinked by a few threads at once (unlink waits on the file system, not the GIL)."""
        blobs = str(self.blobs)
        paths = []
        for artifact_id in artifact_ids:
            hexdigest = parse_digest(artifact_id, what="artifact id")[len("sha256:") :]
            paths.append(f"{blobs}/{hexdigest[:2]}/{hexdigest}")
        try:
            if len(paths) < _PARALLEL_ABOVE:
                for path in paths:
                    _unlink(path)
            else:
                with ThreadPoolExecutor(_UNLINKERS) as pool:
                    list(pool.map(_unlink, paths, chunksize=256))
            if paths and self.group_sync:
                _syncfs(self.root)
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete blobs in {self.root}: {exc}") from exc

    def clean_tmp(self) -> int:
        """Delete leftovers of interrupted writes: temp files whose writing process is gone (other
        workers may be writing into the same store); returns how many."""
        removed = 0
        for leftover in self.tmp.glob("*.tmp"):
            if _writer_alive(leftover.name):
                continue
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def tmp_files(self) -> list[Path]:
        return sorted(self.tmp.glob("*.tmp"))

    def iter_ids(self) -> Iterator[str]:
        for fanout in sorted(self.blobs.iterdir()):
            for blob in sorted(fanout.iterdir()):
                yield "sha256:" + blob.name

    def read_checked(self, artifact_id: str) -> bytes:
        """`read`, and raise `IntegrityError` unless the bytes hash to `artifact_id`."""
        return checked(artifact_id, self.read(artifact_id), f"the blob of {artifact_id}")

    def usage(self) -> tuple[int, int]:
        """(blob count, total bytes)."""
        count = size = 0
        for fanout in self.blobs.iterdir():
            for blob in fanout.iterdir():
                count += 1
                size += blob.stat().st_size
        return count, size


_PARALLEL_ABOVE = 512
_UNLINKERS = 4


def _writer_alive(name: str) -> bool:
    """Is the process that wrote temp file `name` (`<hex>.<pid>-<random>.tmp`) still running?"""
    pid, dash, _ = name.split(".")[1].partition("-") if name.count(".") == 2 else ("", "", "")
    if not (dash and pid.isdigit()):
        return False  # not a name this store writes now
    if int(pid) == os.getpid():
        return False  # its own: a leftover of an earlier process with this pid
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user has that pid
    try:  # a writer killed with its worker may linger as a zombie until something reaps it
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        return cast(Callable[[int], int], ctypes.CDLL(None, use_errno=True).syncfs)
    except (OSError, AttributeError):  # not Linux
        return None


_libc_syncfs = _load_syncfs()


def _syncfs(folder: Path) -> None:
    """Flush the whole filesystem holding `folder` and wait for it (Linux `syncfs(2)`)."""
    assert _libc_syncfs is not None
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    finally:
        os.close(fd)
