"""Small durable file writes (temp file, fsync, rename, directory fsync)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def write_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make the entries of `folder` (a rename, a new or removed file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_secret(path: Path, data: bytes) -> bool:
    """Write `data` to a new file at `path` that only its owner may read (mode 0600 from the
    start; a folder made for it is 0700); False, writing nothing, if the file is there already."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return True


@contextlib.contextmanager
def new_file(target: Path) -> Iterator[BinaryIO]:
    """A file to write `target` through: a temp file beside it, fsynced when the block ends, then
    linked into place (`FileExistsError` if `target` appeared meanwhile: never overwritten) and the
    folder fsynced. The temp file is gone afterwards, whatever happened."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with tmp.open("xb") as raw:
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.link(tmp, target)
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
