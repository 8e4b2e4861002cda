"""The anchor chain as a pure fold over the records of `evidence.anchors`. No I/O here.

Each record becomes a `ChainEntry` at its offset: an anchor (with the status of its own checks and
of its link to the anchor before it in its chain), a recovery record, or junk that does not
decode. A recovery record (`anchor.recovered`) puts its checked copy in place of the damaged
record it names, and the anchor after that one in its chain is checked again. `apply` returns the
entries to write; `rows` is an entry's layout in the key-value store, so the store decides nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec

from locker import anchors, signing
from locker.anchors import AnchorCreated, AnchorRecovered, StoredAnchor
from locker.errors import InvalidInput

ANCHOR, RECOVERY, JUNK = "anchor", "recovery", "junk"
UNCHECKED = "ok (signature not checked: no key)"
GOOD = ("ok", UNCHECKED)  # the statuses of an anchor that passed every check made


class ChainEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What the chain holds at one offset of `evidence.anchors`."""

    offset: int
    raw: bytes  # the record the chain reads here: a recovered copy where one replaced the original
    anchor_id: str
    kind: str  # anchor | recovery | junk
    status: str = "ok"  # "ok", UNCHECKED, or the first finding as "<check>: <detail>"
    chain_id: str = ""
    sequence: int = -1
    created_at: datetime | None = None
    recovered_from: str = ""  # id of the damaged record this copy stands in for
    replaces: int = -1  # a recovery record: the offset it repaired

    @property
    def stored(self) -> StoredAnchor:
        return StoredAnchor(self.offset, self.raw)

    def anchor(self) -> AnchorCreated:
        """The decoded anchor (only for kind `anchor`)."""
        return anchors.decode(self.raw)


class ChainRows(Protocol):
    """What the fold reads of the chain applied so far."""

    def entry(self, offset: int) -> ChainEntry | None: ...

    def offset_of(self, anchor_id: str) -> int | None: ...

    def neighbour(self, chain_id: str, offset: int, *, after: bool) -> int | None:
        """The offset of the chain's anchor right before (or after) `offset`."""
        ...


def apply(rows: ChainRows, offset: int, raw: bytes, verifier: signing.Verifier | None) -> list[ChainEntry]:
    """The entries that change when the record `raw` at `offset` joins the chain."""
    try:
        record = anchors.decode_record(raw)
    except InvalidInput as exc:
        return [
            ChainEntry(offset=offset, raw=raw, anchor_id=anchors.anchor_id(raw), kind=JUNK, status=str(exc))
        ]
    if isinstance(record, AnchorCreated):
        return [evaluate(rows, offset, raw, verifier)]
    return _recover(rows, offset, raw, record, verifier)


def _recover(
    rows: ChainRows, offset: int, raw: bytes, record: AnchorRecovered, verifier: signing.Verifier | None
) -> list[ChainEntry]:
    own = ChainEntry(
        offset=offset,
        raw=raw,
        anchor_id=anchors.anchor_id(raw),
        kind=RECOVERY,
        replaces=record.replaces_offset,
    )
    damaged = rows.entry(record.replaces_offset) if record.replaces_offset < offset else None
    if damaged is None:
        return [
            msgspec.structs.replace(own, status=f"recovery: no record at offset {record.replaces_offset}")
        ]
    copy = evaluate(
        rows,
        damaged.offset,
        record.record,
        verifier,
        recovered_from=damaged.recovered_from or damaged.anchor_id,
    )
    out = [own, copy]
    if copy.kind == ANCHOR:
        following = rows.neighbour(copy.chain_id, copy.offset, after=True)
        entry = None if following is None else rows.entry(following)
        if entry is not None:
            out.append(
                evaluate(
                    rows, entry.offset, entry.raw, verifier, before=copy, recovered_from=entry.recovered_from
                )
            )
    return out


def evaluate(
    rows: ChainRows,
    offset: int,
    raw: bytes,
    verifier: signing.Verifier | None,
    *,
    before: ChainEntry | None = None,
    recovered_from: str = "",
) -> ChainEntry:
    """The entry of the anchor `raw` at `offset`, checked on its own and against the anchor before
    it in its chain (`before`, else looked up)."""
    aid = anchors.anchor_id(raw)
    try:
        anchor = anchors.decode(raw)
    except InvalidInput as exc:
        return ChainEntry(
            offset=offset, raw=raw, anchor_id=aid, kind=JUNK, status=str(exc), recovered_from=recovered_from
        )
    body = anchor.body
    if before is None:
        previous = rows.neighbour(body.chain_id, offset, after=False)
        before = None if previous is None else rows.entry(previous)
    link = None if before is None else (before.anchor(), before.stored)
    findings = [] if verifier is None else anchors.check_anchor(anchor, aid, verifier)
    findings += anchors.check_link(aid, anchor, link, continues(rows, anchor, offset))
    status = f"{findings[0].check}: {findings[0].detail}" if findings else ("ok" if verifier else UNCHECKED)
    return ChainEntry(
        offset=offset,
        raw=raw,
        anchor_id=aid,
        kind=ANCHOR,
        status=status,
        chain_id=body.chain_id,
        sequence=body.sequence,
        created_at=body.created_at,
        recovered_from=recovered_from,
    )


def continues(rows: ChainRows, anchor: AnchorCreated, offset: int) -> bool:
    """For a chain's first anchor that continues another chain: is the anchor it names one of
    that chain's, earlier in the log?"""
    body = anchor.body
    if not body.previous_chain:
        return True
    named = rows.offset_of(body.previous_chain_anchor)
    entry = None if named is None or named >= offset else rows.entry(named)
    return entry is not None and entry.chain_id == body.previous_chain


# Row layout. Keys are bytes; index rows have empty values.
ENTRY = b"e/"
BY_ID = b"i/"
MEMBER = b"m/"
BY_TIME = b"t/"
LATEST = b"~latest"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ChainEntry)


def entry_key(offset: int) -> bytes:
    return ENTRY + b"%020d" % offset


def member_prefix(chain_id: str) -> bytes:
    return MEMBER + chain_id.encode() + b"/"


def time_key(created_at: datetime) -> bytes:
    return BY_TIME + created_at.isoformat().encode() + b"/"


def rows(entry: ChainEntry) -> dict[bytes, bytes]:
    """Every row an entry owns: itself, and for an anchor its id, chain and time index rows."""
    owned = {entry_key(entry.offset): _encoder.encode(entry)}
    if entry.kind == ANCHOR:
        owned[BY_ID + entry.anchor_id.removeprefix("sha256:").encode()] = b"%d" % entry.offset
        owned[member_prefix(entry.chain_id) + b"%020d" % entry.offset] = b""
        if entry.created_at is not None:
            owned[time_key(entry.created_at) + b"%020d" % entry.offset] = b""
    return owned


def decode_entry(raw: bytes) -> ChainEntry:
    return _decoder.decode(raw)
