"""The index projection in RocksDB: artifacts by id, by subject and by kind.

`apply` folds a batch of events with the pure fold of `projections.index` and writes the changed
rows together with the applied positions in one write batch (`projections.tracking`). Replaying
an event at or below its partition's applied position is a no-op.

A `state.restored` record is applied in a write batch of its own: the records it voids are read
back from the log (`LogRange`, the caller's reader: this module does no Kafka I/O), listed as
`v/` rows, and the artifacts they touched are folded again from the records before them
(`projections.index.as_of`). Positions and those rows are not the index's content: `checksum`
leaves them out, so an index restored to an anchor has the checksum it had at that anchor.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TypeVar

import msgspec
from rocksdict import WriteBatch

from locker.errors import InvalidInput
from locker.events import Event, StateRestored, decode
from projections.index import (
    ARTIFACT,
    CONTENT,
    COUNT,
    DEPENDENCY,
    GONE,
    KIND,
    RANGES,
    SUBJECT,
    TOTAL_BYTES,
    UNLINK,
    VOIDED,
    ArtifactRecord,
    Position,
    Voided,
    VoidedRange,
    apply,
    artifact_of,
    as_of,
    counts,
    decode_range,
    decode_record,
    decode_voided,
    encode_row,
    range_key,
    rows,
    voided_key,
    voided_range,
)
from projections.tracking import TrackedStore, wipe

__all__ = ["Applied", "IndexStore", "LogRange", "wipe"]

# (partition, offset, event). `event` is None for a record that is not a valid event: it
# changes no row but its position is still applied, so it is never looked at twice.
Applied = tuple[int, int, Event | None]
# (partition, start, end) -> (offset, value) of that partition's records from start up to end.
LogRange = Callable[[int, int, int], Iterable[tuple[int, bytes]]]
T = TypeVar("T")


class _Size(msgspec.Struct):
    size: int
    partition: int
    offset: int
    status: str


_sizes = msgspec.json.Decoder(_Size)
RECENT = 100_000  # records a bulk store keeps (~50 MB)


class IndexStore(TrackedStore):
    """The index. A `bulk` store (a rebuild into a fresh folder) remembers the ids it wrote, so
    that folding a new artifact never reads the store (`TrackedStore`: bulk writers avoid reads);
    ~100 MB a million artifacts, for the rebuild's lifetime."""

    what = "index"

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        unlogged: bool = False,
        bulk: bool = False,
        follow: Path | None = None,
    ) -> None:
        super().__init__(path, readonly=readonly, unlogged=unlogged, bulk=bulk, follow=follow)
        self._written: set[str] | None = set() if bulk else None
        # A bulk store's records written lately: a later event of the same artifact (its
        # description, seconds of log after its ingest) is folded from here, not read back from
        # a vector memtable, which a read would scan whole.
        self._recent: OrderedDict[str, ArtifactRecord] | None = OrderedDict() if bulk else None
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

    def by_dependency(self, digest: str, limit: int | None = None) -> list[str]:
        """Artifacts that depend on `digest` (a material or dependency their bytes name)."""
        return self._ids(DEPENDENCY + digest.encode() + b"/", limit)

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

    def ids_and_sizes(self, as_of: Mapping[int, int] | None = None) -> Iterator[tuple[str, int]]:
        """(artifact id, size) of every artifact but the expired and archived ones, in id order: what a
        verification run plans from
        (reading just these fields costs a fraction of decoding whole records). With `as_of`
        (partition -> last offset of an anchor's tree), only the artifacts ingested within it."""
        for key, value in self.scan(ARTIFACT):
            try:
                row = _sizes.decode(value)
            except msgspec.DecodeError:
                raise self.damaged(
                    f"the row of {key[len(ARTIFACT) :].decode(errors='replace')} is unreadable"
                ) from None
            if row.status in GONE:
                continue  # no blob to check: expired or archived on purpose, not missing
            if as_of is None or row.offset <= as_of.get(row.partition, -1):
                yield key[len(ARTIFACT) :].decode(), row.size

    def artifact_ids(self) -> Iterator[str]:
        """Every indexed artifact id, in id order."""
        for key, _ in self.scan(ARTIFACT):
            yield key[len(ARTIFACT) :].decode()

    def records(self) -> Iterator[ArtifactRecord]:
        for key, value in self.scan(ARTIFACT):
            yield self._record(value, key[len(ARTIFACT) :].decode(errors="replace"))

    # Blob deletions of expired and archived artifacts.
    def pending_deletions(self) -> list[str]:
        return [key[len(UNLINK) :].decode() for key, _ in self.scan(UNLINK)]

    def finish_deletions(self, delete: Callable[[list[str]], object]) -> int:
        """Delete the blobs of expired or archived artifacts whose deletion is pending, then forget
        those rows: run after every batch that expires or archives artifacts and when the service
        starts, so a crash between an `artifact.expired` (or `artifact.archived`) and its blob's
        deletion is finished on restart. Returns how many. An artifact ingested again (or
        recovered) since keeps its blob."""
        ids = self.pending_deletions()
        if not ids:
            return 0
        records = self._stored(ids)
        delete([i for i in ids if (r := records[i]) is not None and r.status in GONE])
        wb = self.new_batch()
        for artifact_id in ids:
            wb.delete(UNLINK + artifact_id.encode())
        self.commit(wb, {})
        return len(ids)

    # Point-in-time restores.
    def voided_ranges(self, partition: int | None = None) -> list[VoidedRange]:
        """What `state.restored` records voided (of `partition`, default all), in log order."""
        prefix = RANGES if partition is None else RANGES + b"%05d/" % partition
        return [self._row(decode_range, key, value) for key, value in self.scan(prefix)]

    def voided(self, restore_id: str | None = None) -> Iterator[Voided]:
        """The records restores voided (those of `restore_id`, default all), by position."""
        for key, value in self.scan(VOIDED):
            row = self._row(decode_voided, key, value)
            if restore_id is None or row.restore_id == restore_id:
                yield row

    def _row(self, decode: Callable[[bytes], T], key: bytes, value: bytes) -> T:
        try:
            return decode(value)
        except msgspec.DecodeError:
            raise self.damaged(f"the row {key.decode(errors='replace')} is unreadable") from None

    def checksum(self) -> str:
        """SHA-256 over the index's content rows (artifacts, by subject, by kind, the totals) in key
        order: equal checksums mean the same artifacts in the same states, whatever positions the
        two stores were applied to and whatever restores they folded on the way."""
        hasher = hashlib.sha256()
        for prefix in CONTENT:
            for key, value in self.scan(prefix):
                hasher.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return "sha256:" + hasher.hexdigest()

    # The one writer.
    def apply(self, batch: Sequence[Applied], log: LogRange | None = None) -> int:
        """Fold a batch of events into the store; returns events applied. Each `state.restored`
        is applied on its own, after what comes before it, reading the log it voids with `log`
        (a store that meets one without `log` raises `TypeError`)."""
        done, start = 0, 0
        for i, (partition, offset, event) in enumerate(batch):
            if isinstance(event, StateRestored):
                done += self._apply(batch[start:i]) + self._restore(partition, offset, event, log)
                start = i + 1
        return done + self._apply(batch[start:])

    def _apply(self, batch: Sequence[Applied]) -> int:
        """Fold events (no restores) in one write batch with their positions."""
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
        self._commit_counted(wb, positions, self._fold_into(wb, fresh))
        return done

    def _commit_counted(self, wb: WriteBatch, positions: dict[int, int], delta: tuple[int, int]) -> None:
        """Commit `wb` with `positions` and the totals moved by `delta` (records, bytes)."""
        if self._totals is None:
            self._totals = (self.count(), self.total_bytes())
        totals = (self._totals[0] + delta[0], self._totals[1] + delta[1])
        if delta != (0, 0):
            wb.put(COUNT, b"%d" % totals[0])
            wb.put(TOTAL_BYTES, b"%d" % totals[1])
        self.commit(wb, positions)
        self._totals = totals

    def _fold_into(self, wb: WriteBatch, fresh: list[tuple[Position, Event, str]]) -> tuple[int, int]:
        """Put the row changes of `fresh` into `wb`; returns the change in records and in bytes."""
        ids = list(dict.fromkeys(artifact_id for _, _, artifact_id in fresh))
        known = ids if self._written is None else [i for i in ids if i in self._written]
        before: dict[str, ArtifactRecord | None] = dict.fromkeys(ids)
        if self._recent is not None:
            before.update({i: self._recent[i] for i in known if i in self._recent})
            known = [i for i in known if i not in self._recent]
            if known and self._db is not None:
                self._db.flush()  # reads come next: out of the vector memtables (see TrackedStore)
        before.update(self._stored(known))
        current = dict(before)
        for position, event, artifact_id in fresh:
            current[artifact_id] = apply(event, current[artifact_id], position)
        if self._written is not None:
            self._written.update(ids)
        if self._recent is not None:
            for artifact_id in ids:
                record = current[artifact_id]
                if record is not None:
                    self._recent[artifact_id] = record
                    self._recent.move_to_end(artifact_id)
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return self._changes(wb, before, current)

    def _stored(self, ids: list[str]) -> dict[str, ArtifactRecord | None]:
        raws = self.get_many([ARTIFACT + artifact_id.encode() for artifact_id in ids])
        return {
            artifact_id: None if raw is None else self._record(raw, artifact_id)
            for artifact_id, raw in zip(ids, raws, strict=True)
        }

    @staticmethod
    def _changes(
        wb: WriteBatch, before: dict[str, ArtifactRecord | None], after: dict[str, ArtifactRecord | None]
    ) -> tuple[int, int]:
        """Put the row changes from `before` to `after` into `wb`; the change in records and bytes.
        A record that became expired or archived also gets its pending blob deletion row
        (`finish_deletions`)."""
        delta = size_delta = 0
        for artifact_id, new in after.items():
            old = before[artifact_id]
            if new is old:
                continue
            if new is not None and new.status in GONE and (old is None or old.status != new.status):
                wb.put(UNLINK + artifact_id.encode(), b"")
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
        return delta, size_delta

    def _restore(self, partition: int, offset: int, event: StateRestored, log: LogRange | None) -> int:
        """Apply one `state.restored` record: undo what the records it voids did, list them, and
        record the range, with its position, in one write batch."""
        if offset <= self._applied.get(partition, -1):
            return 0
        voided = voided_range(event, Position(partition, offset))
        wb = self.new_batch()
        delta = (0, 0)
        if voided is not None:
            if log is None:
                raise TypeError("folding state.restored needs the log it voids")
            if self._db is not None and self.bulk:
                self._db.flush()  # reads come next: out of the vector memtables (see TrackedStore)
            if self._recent is not None:
                self._recent.clear()  # the restore rewrites records this cache may hold
            delta = self._void(wb, voided, log)
            wb.put(range_key(voided), encode_row(voided))
        self._commit_counted(wb, {partition: offset}, delta)
        return 1

    def _void(self, wb: WriteBatch, voided: VoidedRange, log: LogRange) -> tuple[int, int]:
        p = voided.partition
        earlier = self.voided_ranges(p)
        touched: set[str] = set()
        for offset, value in log(p, voided.start, voided.end):
            if not counts(offset, earlier):
                continue  # an earlier restore voided it already
            event = _event(value)
            artifact_id = None if event is None else artifact_of(event)
            if artifact_id is not None:
                touched.add(artifact_id)
            wb.put(
                voided_key(p, offset),
                encode_row(
                    Voided(
                        partition=p,
                        offset=offset,
                        type="not an event" if event is None else _tag(event),
                        artifact_id=artifact_id or "",
                        run_id=str(getattr(event, "run_id", "")),
                        restore_id=voided.restore_id,
                        anchor_id=voided.anchor_id,
                    )
                ),
            )
        before = self._stored(sorted(touched))
        # An artifact ingested on another partition (impossible while keys pick partitions) has
        # its history there: it is left as it is.
        redo = {i for i, r in before.items() if r is None or r.partition == p}
        firsts = [r.offset for i, r in before.items() if i in redo and r is not None]
        history: list[tuple[Position, Event]] = []
        if firsts and min(firsts) < voided.start:
            for offset, value in log(p, min(firsts), voided.start):
                event = _event(value) if counts(offset, earlier) else None
                if event is not None and artifact_of(event) in redo:
                    history.append((Position(p, offset), event))
        after = as_of(redo, history)
        return self._changes(wb, {i: before[i] for i in redo}, after)


def _event(value: bytes) -> Event | None:
    try:
        return decode(value)
    except InvalidInput:
        return None


def _tag(event: Event) -> str:
    return str(type(event).__struct_config__.tag)
