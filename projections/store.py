"""The index projection in RocksDB (rocksdict).

Each `apply` writes the changed rows *and* the applied positions in one write batch, so a crash
can never leave rows without their position or the reverse. Replaying an event at or below the
applied position of its partition is a no-op. Readers open the store read-only; only the
processor (or a rebuild) writes.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

from locker.errors import StorageUnavailable
from locker.events import Event
from projections.index import (
    ARTIFACT,
    COUNT,
    KIND,
    POSITION,
    SUBJECT,
    TOTAL_BYTES,
    ArtifactRecord,
    Position,
    apply,
    artifact_of,
    decode_record,
    position_key,
    rows,
)

# (partition, offset, event). `event` is None for a record that is not a valid event: it
# changes no row but its position is still applied, so it is never looked at twice.
Applied = tuple[int, int, Event | None]


class IndexStore:
    def __init__(self, path: Path, *, readonly: bool = False, unlogged: bool = False) -> None:
        """Open the store at `path`.

        `unlogged` skips RocksDB's write-ahead log: for a rebuild into a fresh folder, which is
        flushed on `close` and swapped in only then (a crash just means rebuilding again).
        """
        self.path = path
        self.readonly = readonly
        self.unlogged = unlogged
        options = Options(raw_mode=True)
        try:
            if readonly:
                if not (path / "CURRENT").exists():
                    self._db: Rdict | None = None
                    return
                self._db = Rdict(str(path), options, access_type=AccessType.read_only())
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                options.create_if_missing(True)
                self._db = Rdict(str(path), options)
                if unlogged:
                    write_options = WriteOptions()
                    write_options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property at runtime
                    self._db.set_write_options(write_options)
        except Exception as exc:  # rocksdict raises plain Exception on lock/IO errors
            raise StorageUnavailable(f"cannot open index at {path}: {exc}") from exc

    def close(self) -> None:
        if self._db is not None:
            if self.unlogged:
                self._db.flush()
            self._db.close()
            self._db = None

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Queries.
    def _get(self, key: bytes) -> bytes | None:
        return None if self._db is None else self._db.get(key)

    def get(self, artifact_id: str) -> ArtifactRecord | None:
        raw = self._get(ARTIFACT + artifact_id.encode())
        return None if raw is None else decode_record(raw)

    def applied(self) -> dict[int, int]:
        """partition -> last applied offset."""
        return {int(key[len(POSITION) :]): int(value) for key, value in self._scan(POSITION)}

    def count(self) -> int:
        raw = self._get(COUNT)
        return 0 if raw is None else int(raw)

    def total_bytes(self) -> int:
        """Sum of the sizes of the indexed artifacts."""
        raw = self._get(TOTAL_BYTES)
        return 0 if raw is None else int(raw)

    def by_subject(self, subject: str) -> list[str]:
        prefix = SUBJECT + subject.encode() + b"/"
        return [key[len(prefix) :].decode() for key, _ in self._scan(prefix)]

    def by_kind(self, kind: str) -> list[str]:
        prefix = KIND + kind.encode() + b"/"
        return [key[len(prefix) :].decode() for key, _ in self._scan(prefix)]

    def records(self) -> Iterator[ArtifactRecord]:
        for _, value in self._scan(ARTIFACT):
            yield decode_record(value)

    def checksum(self) -> str:
        """SHA-256 over every row in key order: equal checksums mean identical projections."""
        hasher = hashlib.sha256()
        for key, value in self._scan(b""):
            hasher.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return "sha256:" + hasher.hexdigest()

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self._db is None:
            return
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()

    # The one writer.
    def apply(self, batch: Sequence[Applied]) -> int:
        """Fold a batch of events into the store in one write batch; returns events applied."""
        if self._db is None or self.readonly:
            raise StorageUnavailable("index store is open read-only")
        positions = self.applied()
        fresh: list[tuple[Position, Event, str]] = []
        done = 0
        for partition, offset, event in batch:
            if offset <= positions.get(partition, -1):
                continue  # already applied: replay is a no-op
            positions[partition] = offset
            done += 1
            artifact_id = None if event is None else artifact_of(event)
            if event is not None and artifact_id is not None:
                fresh.append((Position(partition, offset), event, artifact_id))
        if not done:
            return 0
        wb = WriteBatch(raw_mode=True)
        count_delta, bytes_delta = self._fold_into(wb, fresh)
        for partition, offset in positions.items():
            wb.put(position_key(partition), b"%d" % offset)
        wb.put(COUNT, b"%d" % (self.count() + count_delta))
        wb.put(TOTAL_BYTES, b"%d" % (self.total_bytes() + bytes_delta))
        self._db.write(wb)
        return done

    def _fold_into(self, wb: WriteBatch, fresh: list[tuple[Position, Event, str]]) -> tuple[int, int]:
        """Put the row changes of `fresh` into `wb`; returns the change in records and in bytes."""
        assert self._db is not None
        ids = list(dict.fromkeys(artifact_id for _, _, artifact_id in fresh))
        stored = cast(
            list[bytes | None], self._db.get([ARTIFACT + artifact_id.encode() for artifact_id in ids])
        )
        current: dict[str, ArtifactRecord | None] = {
            artifact_id: None if raw is None else decode_record(raw)
            for artifact_id, raw in zip(ids, stored, strict=True)
        }
        before = dict(current)
        for position, event, artifact_id in fresh:
            current[artifact_id] = apply(event, current[artifact_id], position)
        delta = size_delta = 0
        for artifact_id, new in current.items():
            old = before[artifact_id]
            if new == old:
                continue
            old_rows = rows(old) if old is not None else {}
            new_rows = rows(new) if new is not None else {}
            for key in old_rows.keys() - new_rows.keys():
                wb.delete(key)
            for key, value in new_rows.items():
                if old_rows.get(key) != value:
                    wb.put(key, value)
            delta += (new is not None) - (old is not None)
            size_delta += (new.size if new is not None else 0) - (old.size if old is not None else 0)
        return delta, size_delta


def wipe(path: Path) -> None:
    """Delete the store's files; the next writer starts from nothing."""
    shutil.rmtree(path, ignore_errors=True)
