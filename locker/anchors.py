"""Signed anchors: what an anchor records, how it is signed, and how a chain is checked. Pure.

An anchor records, for every partition of `evidence.events`, the tree size, root and last
offset of its RFC 6962 tree; the SHA-256 of the anchor record before it (`previous`); a
sequence number and the creation time. The body is signed (Ed25519 over its canonical bytes),
and each partition head is also a C2SP checkpoint note signed by the same key. The anchor id is
`sha256:` + SHA-256 of the whole record value as stored on `evidence.anchors`.

The record keeps the signed body's bytes exactly as they were signed, and the signature is
checked over those bytes, never over a re-encoding of the decoded body: a body written by a
newer schema (more fields) still verifies, and so does every old one after `AnchorBody` grows.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import msgspec

from locker import merkle, signing
from locker.decoding import Decoder
from locker.errors import IntegrityError, InvalidInput, NotFound
from locker.times import iso_utc


class PartitionHead(msgspec.Struct, frozen=True, kw_only=True):
    partition: int
    tree_size: int
    root: bytes
    last_offset: int


class AnchorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The signed part of an anchor."""

    chain_id: str
    sequence: int
    previous: bytes = b""  # SHA-256 of the previous anchor record; empty for a chain's first
    created_at: datetime
    origin: str
    partitions: tuple[PartitionHead, ...]
    reason: str = ""  # why a new chain was started
    previous_chain: str = ""  # the chain a new chain continues
    previous_chain_anchor: str = ""  # id of that chain's last good anchor
    schema_version: int = 1


_bodies: Decoder[AnchorBody] = Decoder(AnchorBody, "anchor body")


class AnchorCreated(
    msgspec.Struct, frozen=True, kw_only=True, tag="anchor.created", tag_field="type", dict=True
):
    """A signed anchor. `signed` is its body as stored (JSON field `body`): the exact bytes that
    `signature` covers; `body` is what they decode to."""

    signed: msgspec.Raw = msgspec.field(name="body")
    key_name: str
    signature: bytes
    checkpoints: tuple[str, ...]
    correlation_id: str = ""
    schema_version: int = 1

    @cached_property
    def body(self) -> AnchorBody:
        """The signed body, decoded (`decode` checks that it decodes). Raises `InvalidInput`."""
        return _bodies.decode(bytes(self.signed))


class AnchorRecovered(msgspec.Struct, frozen=True, kw_only=True, tag="anchor.recovered", tag_field="type"):
    """A damaged anchor record, replaced by its copy from a backup (checked before it was sent).

    The log stays append-only: readers substitute `record` for the record at `replaces_offset`.
    """

    record: bytes
    replaces_offset: int
    reason: str
    recovered_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


_encoder = msgspec.json.Encoder(order="sorted")
_decoder: Decoder[AnchorCreated] = Decoder(AnchorCreated, "anchor")
_any_decoder: Decoder[AnchorCreated | AnchorRecovered] = Decoder(
    AnchorCreated | AnchorRecovered, "anchor record"
)


def decode_record(raw: bytes | None) -> AnchorCreated | AnchorRecovered:
    """Any record of `evidence.anchors`. Raises `InvalidInput` (reasons: `locker.decoding`)."""
    record = _any_decoder.decode(raw)
    return _with_body(record) if isinstance(record, AnchorCreated) else record


def encode_recovery(recovery: AnchorRecovered) -> bytes:
    return _encoder.encode(recovery)


def effective_chain(stored: Sequence[StoredAnchor]) -> tuple[list[StoredAnchor], list[dict[str, Any]]]:
    """The anchor records with each recovered one substituted, and what was repaired.

    Recovery records themselves are not anchors and are left out.
    """
    replaced: dict[int, StoredAnchor] = {}
    anchors_only: list[StoredAnchor] = []
    for item in stored:
        try:
            value = decode_record(item.raw)
        except InvalidInput:
            anchors_only.append(item)  # not decodable: verification reports it
            continue
        if isinstance(value, AnchorRecovered):
            replaced[value.replaces_offset] = StoredAnchor(value.replaces_offset, value.record)
        else:
            anchors_only.append(item)
    repaired = [
        {"offset": item.offset, "damaged": item.id, "recovered": replaced[item.offset].id}
        for item in anchors_only
        if item.offset in replaced
    ]
    return [replaced.get(item.offset, item) for item in anchors_only], repaired


def encode(anchor: AnchorCreated) -> bytes:
    return _encoder.encode(anchor)


def decode(raw: bytes | None) -> AnchorCreated:
    """An `anchor.created` record. Raises `InvalidInput` (reasons: `locker.decoding`)."""
    return _with_body(_decoder.decode(raw))


def _with_body(anchor: AnchorCreated) -> AnchorCreated:
    """`anchor`, once its signed body has decoded (and is cached as `anchor.body`)."""
    _ = anchor.body
    return anchor


def anchor_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def origin_of(origin: str, partition: int) -> str:
    """The checkpoint origin of one partition's tree."""
    return f"{origin}/{partition}"


def next_body(
    previous: StoredAnchor | None,
    heads: tuple[PartitionHead, ...],
    *,
    origin: str,
    created_at: datetime,
    new_chain_id: str,
    new_chain_reason: str = "",
) -> AnchorBody:
    """The body of the anchor after `previous` (None: the first one): the next of its chain, or
    with `new_chain_reason` the first of chain `new_chain_id`, which names the anchor it continues.
    A chain's very first anchor is a new chain too (it keeps a reason, if one is given)."""
    common = {"created_at": created_at, "origin": origin, "partitions": heads}
    if previous is None:
        return AnchorBody(chain_id=new_chain_id, sequence=0, reason=new_chain_reason, **common)  # type: ignore[arg-type]
    before = decode(previous.raw)
    if new_chain_reason:
        return AnchorBody(
            chain_id=new_chain_id,
            sequence=0,
            reason=new_chain_reason,
            previous_chain=before.body.chain_id,
            previous_chain_anchor=previous.id,
            **common,  # type: ignore[arg-type]
        )
    return AnchorBody(
        chain_id=before.body.chain_id,
        sequence=before.body.sequence + 1,
        previous=hashlib.sha256(previous.raw).digest(),
        **common,  # type: ignore[arg-type]
    )


def sign(body: AnchorBody, signer: signing.Signer, correlation_id: str = "") -> AnchorCreated:
    """`body` signed by `signer`: its canonical bytes, the signature over them, and a signed
    checkpoint per partition."""
    signed = _encoder.encode(body)
    checkpoints = tuple(
        signing.sign_note(
            signing.checkpoint_text(origin_of(body.origin, head.partition), head.tree_size, head.root), signer
        )
        for head in body.partitions
    )
    return AnchorCreated(
        signed=msgspec.Raw(signed),
        key_name=signer.name,
        signature=signer.sign(signed),
        checkpoints=checkpoints,
        correlation_id=correlation_id,
    )


@dataclass(frozen=True)
class Finding:
    """One thing wrong with an anchor; `anchor` is its id, `sequence` its position in the chain."""

    anchor: str
    sequence: int
    check: str  # signature | checkpoint | link | sequence | monotonic | consistency | root
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"anchor": self.anchor, "sequence": self.sequence, "check": self.check, "detail": self.detail}


# (partition, old size, new size) -> consistency proof between the two sizes.
ConsistencySource = Callable[[int, int, int], list[bytes]]
# (partition, size) -> the root recomputed from the log at that size, or None if the log is shorter.
RootSource = Callable[[int, int], bytes | None]


@dataclass(frozen=True)
class StoredAnchor:
    offset: int
    raw: bytes

    @property
    def id(self) -> str:
        return anchor_id(self.raw)


def check_anchor(anchor: AnchorCreated, aid: str, verifier: signing.Verifier) -> list[Finding]:
    """Signature, checkpoint and hash-size checks of one anchor on its own.

    The signature is checked over the body's bytes as stored.
    """
    seq = anchor.body.sequence
    found = _malformed_hashes(aid, anchor.body)
    if anchor.key_name != verifier.name or not verifier.verify(bytes(anchor.signed), anchor.signature):
        found.append(Finding(aid, seq, "signature", f"not signed by {verifier.vkey}"))
    if len(anchor.checkpoints) != len(anchor.body.partitions):
        found.append(Finding(aid, seq, "checkpoint", "one checkpoint per partition expected"))
    for head, note in zip(anchor.body.partitions, anchor.checkpoints, strict=False):
        try:
            text = signing.open_note(note, verifier)
        except (IntegrityError, InvalidInput) as exc:
            found.append(Finding(aid, seq, "checkpoint", f"partition {head.partition}: {exc}"))
            continue
        expected = signing.checkpoint_text(
            origin_of(anchor.body.origin, head.partition), head.tree_size, head.root
        )
        if text != expected:
            found.append(
                Finding(aid, seq, "checkpoint", f"partition {head.partition}: note differs from the anchor")
            )
    return found


def _malformed_hashes(aid: str, body: AnchorBody) -> list[Finding]:
    """A finding for `previous` (unless empty) and each root that is not a SHA-256 hash."""
    named = [("link", "previous", body.previous)] if body.previous else []
    named += [("root", f"partition {head.partition}: root", head.root) for head in body.partitions]
    found = []
    for check, what, value in named:
        try:
            merkle.require_hash(value, what)
        except merkle.ProofError as exc:
            found.append(Finding(aid, body.sequence, check, exc.detail))
    return found


def check_link(
    aid: str,
    anchor: AnchorCreated,
    before: tuple[AnchorCreated, StoredAnchor] | None,
    continues: bool = True,
) -> list[Finding]:
    """How `anchor` links to `before`, the anchor before it in its chain (None: it is its chain's
    first): the previous hash, the sequence, tree sizes that never shrink. A chain's first anchor
    names no previous anchor, and if it continues another chain, `continues` says whether the
    anchor it names (`previous_chain_anchor`) is one of that chain's."""
    body, seq = anchor.body, anchor.body.sequence
    found = []
    if before is None:
        if body.previous:
            found.append(Finding(aid, seq, "link", "first anchor of its chain names a previous anchor"))
        if body.previous_chain and not continues:
            found.append(Finding(aid, seq, "link", f"continues no anchor of chain {body.previous_chain}"))
        return found
    prev, prev_item = before
    expected = hashlib.sha256(prev_item.raw).digest()
    if body.previous != expected:
        found.append(
            Finding(
                aid,
                seq,
                "link",
                f"previous is {_b64(body.previous)}, the anchor before it ({prev_item.id}) hashes to "
                f"{_b64(expected)}",
            )
        )
    if seq != prev.body.sequence + 1:
        found.append(Finding(aid, seq, "sequence", f"follows sequence {prev.body.sequence}"))
    old = {h.partition: h for h in prev.body.partitions}
    for head in body.partitions:
        was = old.get(head.partition)
        if was is not None and head.tree_size < was.tree_size:
            found.append(
                Finding(
                    aid,
                    seq,
                    "monotonic",
                    f"partition {head.partition} shrank from {was.tree_size} to {head.tree_size}",
                )
            )
    return found


def check_consistency(
    aid: str, anchor: AnchorCreated, prev: AnchorCreated, consistency: ConsistencySource
) -> list[Finding]:
    """A consistency proof from each partition's tree in `prev` to the same tree in `anchor`."""
    found = []
    old = {h.partition: h for h in prev.body.partitions}
    for head in anchor.body.partitions:
        was = old.get(head.partition)
        if was is None or was.tree_size == 0 or head.tree_size < was.tree_size:
            continue
        try:
            proof = consistency(head.partition, was.tree_size, head.tree_size)
            merkle.verify_consistency(was.tree_size, head.tree_size, was.root, head.root, proof)
        except (IntegrityError, InvalidInput, KeyError) as exc:
            found.append(
                Finding(aid, anchor.body.sequence, "consistency", f"partition {head.partition}: {exc}")
            )
    return found


def check_roots(aid: str, anchor: AnchorCreated, root_of: RootSource) -> list[Finding]:
    """Each partition's root in `anchor` against the root `root_of` computes at its size."""
    found = []
    for head in anchor.body.partitions:
        if head.tree_size == 0:
            continue
        actual = root_of(head.partition, head.tree_size)
        if actual != head.root:
            shown = "missing (the log is shorter)" if actual is None else _b64(actual)
            found.append(
                Finding(
                    aid,
                    anchor.body.sequence,
                    "root",
                    f"partition {head.partition} at size {head.tree_size}: anchor has "
                    f"{_b64(head.root)}, the log gives {shown}",
                )
            )
    return found


def verify_chain(
    stored: Sequence[StoredAnchor],
    verifier: signing.Verifier,
    consistency: ConsistencySource | None = None,
    log_root: RootSource | None = None,
) -> list[Finding]:
    """Every break in the chain(s) of `stored`, in log order; an empty list means all is well.

    Checks signatures and checkpoints, links (previous hash, sequence) within each chain,
    monotonic tree sizes, consistency proofs between consecutive anchors (if `consistency` is
    given) and roots recomputed from the log (if `log_root` is given). A new chain's first
    anchor must name an anchor of the chain it continues (its last good one).
    """
    findings: list[Finding] = []
    last: dict[str, tuple[AnchorCreated, StoredAnchor]] = {}
    members: dict[str, set[str]] = {}  # chain id -> ids of its anchors seen so far
    for item in stored:
        aid = item.id
        try:
            anchor = decode(item.raw)
        except InvalidInput as exc:
            findings.append(Finding(aid, -1, "decode", str(exc)))
            continue
        body = anchor.body
        before = last.get(body.chain_id)
        continues = body.previous_chain_anchor in members.get(body.previous_chain, ())
        findings += check_anchor(anchor, aid, verifier)
        findings += check_link(aid, anchor, before, continues)
        if before is not None and consistency is not None:
            findings += check_consistency(aid, anchor, before[0], consistency)
        if log_root is not None:
            findings += check_roots(aid, anchor, log_root)
        last[body.chain_id] = (anchor, item)
        members.setdefault(body.chain_id, set()).add(aid)
    return findings


# Reading a chain: pure helpers shared by the API and the CLI.
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def summary(item: StoredAnchor, anchor: AnchorCreated) -> dict[str, Any]:
    body = anchor.body
    return {
        "anchor_id": item.id,
        "chain_id": body.chain_id,
        "sequence": body.sequence,
        "created_at": iso_utc(body.created_at),
        "previous": _b64(body.previous),
        "offset": item.offset,
        "tree_sizes": {str(h.partition): h.tree_size for h in body.partitions},
        **(
            {"reason": body.reason, "previous_chain_anchor": body.previous_chain_anchor}
            if body.reason
            else {}
        ),
    }


def full(item: StoredAnchor, anchor: AnchorCreated) -> dict[str, Any]:
    body = anchor.body
    return {
        **summary(item, anchor),
        "origin": body.origin,
        "key_name": anchor.key_name,
        "signature": _b64(anchor.signature),
        "partitions": [
            {
                "partition": h.partition,
                "tree_size": h.tree_size,
                "root": _b64(h.root),
                "last_offset": h.last_offset,
            }
            for h in body.partitions
        ],
        "checkpoints": list(anchor.checkpoints),
    }


def decoded(stored: list[StoredAnchor]) -> list[tuple[StoredAnchor, AnchorCreated]]:
    out = []
    for item in stored:
        try:
            out.append((item, decode(item.raw)))
        except InvalidInput:
            continue  # reported by verify
    return out


def find(stored: list[StoredAnchor], anchor_id: str | None) -> tuple[StoredAnchor, AnchorCreated]:
    items = decoded(stored)
    if not items:
        raise NotFound("there is no anchor yet; run `stella evidence anchor create`")
    if anchor_id is None:
        return items[-1]
    for item, anchor in items:
        if item.id == anchor_id or item.id.removeprefix("sha256:").startswith(
            anchor_id.removeprefix("sha256:")
        ):
            return item, anchor
    raise NotFound(f"anchor {anchor_id} not found")


def archived_ids(items: list[tuple[StoredAnchor, AnchorCreated]]) -> set[str]:
    """Anchors of a chain after the point where a later `new-chain` anchor continued it."""
    archived: set[str] = set()
    for item, anchor in items:
        body = anchor.body
        if not body.previous_chain:
            continue
        seen_continuation = False
        for other, other_anchor in items:
            if other.offset >= item.offset:
                break
            if other_anchor.body.chain_id != body.previous_chain:
                continue
            if seen_continuation:
                archived.add(other.id)
            if other.id == body.previous_chain_anchor:
                seen_continuation = True
    return archived


def export_document(item: StoredAnchor, anchor: AnchorCreated, vkey: str) -> dict[str, Any]:
    """A self-contained anchor file: the anchor, its exact record, its checkpoints, the key."""
    return {
        "anchor": full(item, anchor),
        "record": _b64(item.raw),
        "checkpoints": list(anchor.checkpoints),
        "verifier_key": vkey,
    }
