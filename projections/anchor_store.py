"""The anchor chain projection in RocksDB: latest anchor, by id, by time, by chain, link status.

Written by the worker's chain loop with the fold of `projections.anchor_chain`, one record per
write batch (anchors are few), each with its applied position; read by the API, the anchor
writer and the CLI, so that the latest anchor, one anchor by id, and a page of anchors cost
O(1) or O(k) reads instead of a rescan of `evidence.anchors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from locker import signing
from locker.anchors import AnchorCreated, StoredAnchor
from locker.errors import NotFound
from projections.anchor_chain import (
    ANCHOR,
    BY_ID,
    BY_TIME,
    ENTRY,
    GOOD,
    JUNK,
    LATEST,
    ChainEntry,
    apply,
    decode_entry,
    entry_key,
    member_prefix,
    rows,
    time_key,
)
from projections.tracking import TrackedStore


class AnchorStore(TrackedStore):
    what = "anchor chain store"

    # The fold's reads (`projections.anchor_chain.ChainRows`).
    def entry(self, offset: int) -> ChainEntry | None:
        raw = self.get_raw(entry_key(offset))
        return None if raw is None else decode_entry(raw)

    def offset_of(self, anchor_id: str) -> int | None:
        raw = self.get_raw(BY_ID + anchor_id.removeprefix("sha256:").encode())
        return None if raw is None else int(raw)

    def neighbour(self, chain_id: str, offset: int, *, after: bool) -> int | None:
        prefix = member_prefix(chain_id)
        start = b"%020d" % (offset + 1 if after else offset - 1)
        if offset == 0 and not after:
            return None
        for key, _ in self.scan(prefix, start, reverse=not after):
            return int(key[len(prefix) :])
        return None

    # Queries.
    def latest(self) -> ChainEntry | None:
        """The anchor with the highest offset (recovery records and junk are not anchors)."""
        raw = self.get_raw(LATEST)
        return None if raw is None else self.entry(int(raw))

    def caught_up_to(self, end: int) -> bool:
        """Has every record before offset `end` (the topic's end) been applied?"""
        return self.resume_at(0) >= end

    def find(self, anchor_id: str | None) -> tuple[StoredAnchor, AnchorCreated]:
        """The anchor with this id or unique id prefix (`sha256:` optional), else the latest."""
        if anchor_id is None:
            entry = self.latest()
            if entry is None:
                raise NotFound("there is no anchor yet; run `stella evidence anchor create`")
            return entry.stored, entry.anchor()
        wanted = anchor_id.removeprefix("sha256:").encode()
        matches = [int(value) for _, value in _first(self.scan(BY_ID + wanted), 2)]
        if len(matches) != 1 or not wanted:
            detail = "is ambiguous" if len(matches) > 1 else "not found"
            raise NotFound(f"anchor {anchor_id} {detail}")
        entry = self.entry(matches[0])
        assert entry is not None
        return entry.stored, entry.anchor()

    def entries(self, *, kinds: Sequence[str] = (ANCHOR,), limit: int | None = None) -> Iterator[ChainEntry]:
        """Entries in log order."""
        count = 0
        for _, value in self.scan(ENTRY):
            if limit is not None and count >= limit:
                return
            entry = decode_entry(value)
            if entry.kind in kinds:
                yield entry
                count += 1

    def anchors(self, *, before: datetime | None = None, limit: int | None = None) -> list[ChainEntry]:
        """Anchors in log order; with `before`, only those created before it (by the time index)."""
        if before is None:
            return list(self.entries(limit=limit))
        stop = time_key(before)
        offsets: list[int] = []
        for key, _ in self.scan(BY_TIME):
            if key >= stop or (limit is not None and len(offsets) >= limit):
                break
            offsets.append(int(key.rsplit(b"/", 1)[1]))
        found = [self.entry(offset) for offset in sorted(offsets)]
        return [entry for entry in found if entry is not None]

    def broken_links(self) -> int:
        """Anchors of the latest anchor's chain that fail their checks, and unreadable records
        since that chain's first anchor: 0 when the chain verifies. Chains a new chain replaced
        keep their breaks on record and are not counted."""
        latest = self.latest()
        if latest is None:
            return 0
        prefix = member_prefix(latest.chain_id)
        offsets = [int(key[len(prefix) :]) for key, _ in self.scan(prefix)]
        entries = (self.entry(offset) for offset in offsets)
        broken = sum(1 for e in entries if e is not None and e.status not in GOOD)
        start = b"%020d" % offsets[0] if offsets else b""
        junk = sum(1 for _, value in self.scan(ENTRY, start) if decode_entry(value).kind == JUNK)
        return broken + junk

    # The one writer.
    def apply(self, offset: int, raw: bytes, verifier: signing.Verifier | None) -> list[ChainEntry]:
        """Fold one record into the chain, with its position, in one write batch."""
        if offset < self.resume_at(0):
            return []  # applied already: replay is a no-op
        wb = self.new_batch()
        changed = apply(self, offset, raw, verifier)
        latest = self.latest()
        for entry in changed:
            old = self.entry(entry.offset)
            old_rows = {} if old is None else rows(old)
            new_rows = rows(entry)
            for key in old_rows.keys() - new_rows.keys():
                wb.delete(key)
            for key, value in new_rows.items():
                wb.put(key, value)
            if entry.kind == ANCHOR and (latest is None or entry.offset >= latest.offset):
                wb.put(LATEST, b"%d" % entry.offset)
                latest = entry
        self.commit(wb, {0: offset})
        return changed


def _first(items: Iterator[tuple[bytes, bytes]], n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out
