"""The index projection in RocksDB: artifacts by id, by subject and by kind.

`apply` folds a batch of events with the pure fold of `projections.index` and writes the changed
rows together with the applied positions in one write batch (`projections.tracking`). Replaying
an event at or below its partition's applied position is a no-op.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import msgspec
from rocksdict import WriteBatch

from locker.events import Event
from projections.index import (
    ARTIFACT,
    COUNT,
    KIND,
    SUBJECT,
    TOTAL_BYTES,
    ArtifactRecord,
    Position,
    apply,
    artifact_of,
    decode_record,
    rows,
)
from projections.tracking import TrackedStore, wipe

__all__ = ["Applied", "IndexStore", "wipe"]

# (partition, offset, event). `event` is None for a record that is not a valid event: it
# changes no row but its position is still applied, so it is never looked at twice.
Applied = tuple[int, int, Event | None]


class _Size(msgspec.Struct):
    size: int


_sizes = msgspec.json.Decoder(_Size)


class IndexStore(TrackedStore):
    """The index. A `bulk` store (a rebuild into a fresh folder) remembers the ids it wrote, so
    that folding a new artifact never reads the store (`TrackedStore`: bulk writers avoid reads);
    ~100 MB a million artifacts, for the rebuild's lifetime."""

    what = "index"

    def __init__(
        self, path: Path, *, readonly: bool = False, unlogged: bool = False, bulk: bool = False
    ) -> None:
        super().__init__(path, readonly=readonly, unlogged=unlogged, bulk=bulk)
        self._written: set[str] | None = set() if bulk else None
        self._totals: tuple[int, int] | None = None  # (count, bytes), the writer's own cache

    # Queries.
    def get(self, artifact_id: str) -> ArtifactRecord | None:
        raw = self.get_raw(ARTIFACT + artifact_id.encode())
        return None if raw is None else self._record(raw, artifact_id)

    def _record(self, raw: bytes, artifact_id: str) -> ArtifactRecord:
        try:
            return decode_record(raw)
        except msgspec.DecodeError:
            raise self.damaged(f"the row of {artifact_id} is unreadable") from None

    def count(self) -> int:
        raw = self.get_raw(COUNT)
        return 0 if raw is None else int(raw)

    def total_bytes(self) -> int:
        """Sum of the sizes of the indexed artifacts."""
        raw = self.get_raw(TOTAL_BYTES)
        return 0 if raw is None else int(raw)

    def by_subject(self, subject: str, limit: int | None = None) -> list[str]:
        return self._ids(SUBJECT + subject.encode() + b"/", limit)

    def by_kind(self, kind: str, limit: int | None = None) -> list[str]:
        return self._ids(KIND + kind.encode() + b"/", limit)

    def _ids(self, prefix: bytes, limit: int | None) -> list[str]:
        out: list[str] = []
        for key, _ in self.scan(prefix):
            if limit is not None and len(out) >= limit:
                break
            out.append(key[len(prefix) :].decode())
        return out

    def sample_ids(self, *, ends: int = 3, randoms: int = 20) -> list[str]:
        """Indexed artifact ids to spot-check: the first and last `ends` by id, and `randoms` more
        (fewer only in a smaller index) from seeks to random places, whatever the index's size."""
        keys = {key for key, _ in islice(self.scan(ARTIFACT), ends)}
        keys |= {key for key, _ in islice(self.scan(ARTIFACT, reverse=True), ends)}
        wanted = len(keys) + randoms
        for _ in range(4 * randoms):  # a small index repeats itself: bounded tries
            if len(keys) >= wanted:
                break
            start = b"sha256:" + secrets.token_hex(32).encode()
            keys |= {key for key, _ in islice(self.scan(ARTIFACT, start), 1)}
        return sorted(key[len(ARTIFACT) :].decode() for key in keys)

    def ids_and_sizes(self) -> Iterator[tuple[str, int]]:
        """(artifact id, size) of every artifact, in id order: what a verification run plans from
        (reading just these two fields costs a fraction of decoding whole records)."""
        for key, value in self.scan(ARTIFACT):
            try:
                size = _sizes.decode(value).size
            except msgspec.DecodeError:
                raise self.damaged(
                    f"the row of {key[len(ARTIFACT) :].decode(errors='replace')} is unreadable"
                ) from None
            yield key[len(ARTIFACT) :].decode(), size

    def records(self) -> Iterator[ArtifactRecord]:
        for key, value in self.scan(ARTIFACT):
            yield self._record(value, key[len(ARTIFACT) :].decode(errors="replace"))

    # The one writer.
    def apply(self, batch: Sequence[Applied]) -> int:
        """Fold a batch of events into the store in one write batch; returns events applied."""
        wb = self.new_batch()
        positions: dict[int, int] = {}
        fresh: list[tuple[Position, Event, str]] = []
        done = 0
        for partition, offset, event in batch:
            if offset <= positions.get(partition, self._applied.get(partition, -1)):
                continue  # already applied: replay is a no-op
            positions[partition] = offset
            done += 1
            artifact_id = None if event is None else artifact_of(event)
            if event is not None and artifact_id is not None:
                fresh.append((Position(partition, offset), event, artifact_id))
        if not done:
            return 0
        count_delta, bytes_delta = self._fold_into(wb, fresh)
        if self._totals is None:
            self._totals = (self.count(), self.total_bytes())
        totals = (self._totals[0] + count_delta, self._totals[1] + bytes_delta)
        if count_delta or bytes_delta:
            wb.put(COUNT, b"%d" % totals[0])
            wb.put(TOTAL_BYTES, b"%d" % totals[1])
        self.commit(wb, positions)
        self._totals = totals
        return done

    def _fold_into(self, wb: WriteBatch, fresh: list[tuple[Position, Event, str]]) -> tuple[int, int]:
        """Put the row changes of `fresh` into `wb`; returns the change in records and in bytes."""
        ids = list(dict.fromkeys(artifact_id for _, _, artifact_id in fresh))
        known = ids if self._written is None else [i for i in ids if i in self._written]
        stored = self.get_many([ARTIFACT + artifact_id.encode() for artifact_id in known])
        before: dict[str, ArtifactRecord | None] = dict.fromkeys(ids)
        for artifact_id, raw in zip(known, stored, strict=True):
            before[artifact_id] = None if raw is None else self._record(raw, artifact_id)
        current = dict(before)
        for position, event, artifact_id in fresh:
            current[artifact_id] = apply(event, current[artifact_id], position)
        delta = size_delta = 0
        for artifact_id, new in current.items():
            old = before[artifact_id]
            if new is old:
                continue
            new_rows = {} if new is None else rows(new)
            if old is None:  # the common case: a new artifact, nothing to compare
                for key, value in new_rows.items():
                    wb.put(key, value)
            else:
                old_rows = rows(old)
                for key in old_rows.keys() - new_rows.keys():
                    wb.delete(key)
                for key, value in new_rows.items():
                    if old_rows.get(key) != value:
                        wb.put(key, value)
            delta += (new is not None) - (old is not None)
            size_delta += (new.size if new is not None else 0) - (old.size if old is not None else 0)
        if self._written is not None:
            self._written.update(ids)
        return delta, size_delta
