"""`stella evidence anchor ...` and `stella evidence proof`: read, check and request anchors.

Creating an anchor is a command on `evidence.commands`; the service (the single writer) makes
it, and the CLI waits for the record with its correlation id on `evidence.anchors`. Everything
else reads the anchors topic, the Merkle store (read-only) and the events topic.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from commands import queries
from locker import anchors, merkle, requests, signing
from locker.anchors import AnchorCreated, StoredAnchor
from locker.config import Settings
from locker.errors import InvalidInput, NotFound, TimedOut, UsageError
from locker.merkle import Frontier
from projections.merkle_store import MerkleStore
from streams.kafka import assign_all, consumer, producer
from streams.topics import Topics


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def verifier(settings: Settings) -> signing.Verifier:
    """The trusted verifier key: the public half of the locker's signing key."""
    return signing.load_signer(settings.key_file, settings.origin).verifier


def ensure_key(settings: Settings) -> bool:
    """Create the anchor signing key if there is none; True if it was created."""
    if settings.key_file.exists():
        return False
    signing.create_key(settings.key_file)
    return True


async def read_anchors(settings: Settings) -> list[StoredAnchor]:
    tp = TopicPartition(Topics(settings.topic_prefix).anchors, 0)
    out: list[StoredAnchor] = []
    async with consumer(settings) as c:
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        while await c.position(tp) < end:
            for records in (await c.getmany(tp, timeout_ms=1000)).values():
                out += [StoredAnchor(r.offset, r.value) for r in records if r.offset < end]
    return out


def summary(item: StoredAnchor, anchor: AnchorCreated) -> dict[str, Any]:
    body = anchor.body
    return {
        "anchor_id": item.id,
        "chain_id": body.chain_id,
        "sequence": body.sequence,
        "created_at": body.created_at.isoformat().replace("+00:00", "Z"),
        "previous": b64(body.previous),
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
        "signature": b64(anchor.signature),
        "partitions": [
            {
                "partition": h.partition,
                "tree_size": h.tree_size,
                "root": b64(h.root),
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
            out.append((item, anchors.decode(item.raw)))
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


async def _request(settings: Settings, command: requests.CreateAnchor) -> tuple[StoredAnchor, AnchorCreated]:
    topics = Topics(settings.topic_prefix)
    tp = TopicPartition(topics.anchors, 0)
    async with consumer(settings) as watcher, producer(settings) as sender:
        watcher.assign([tp])
        await watcher.seek_to_end(tp)
        await watcher.position(tp)
        await sender.send_and_wait(
            topics.commands, key=command.command_id.encode(), value=requests.encode(command)
        )
        deadline = time.monotonic() + settings.timeout
        while time.monotonic() < deadline:
            for records in (await watcher.getmany(tp, timeout_ms=500)).values():
                for record in records:
                    try:
                        anchor = anchors.decode(record.value)
                    except InvalidInput:
                        continue
                    if anchor.correlation_id == command.command_id:
                        return StoredAnchor(record.offset, record.value), anchor
    raise TimedOut(
        f"anchor request {command.command_id} sent but not answered within {settings.timeout:.0f}s "
        "(queued; is the service running? `stella service status`)"
    )


def create(settings: Settings, new_chain_reason: str = "") -> dict[str, Any]:
    verifier(settings)  # fail early, with a clear error, where there is no key
    continue_from = (last_good(settings) or "") if new_chain_reason else ""
    item, anchor = asyncio.run(_request(settings, requests.create_anchor(new_chain_reason, continue_from)))
    return full(item, anchor)


def listing(
    settings: Settings, *, before: datetime | None = None
) -> list[tuple[StoredAnchor, AnchorCreated]]:
    items = decoded(asyncio.run(read_anchors(settings)))
    if before is not None:
        items = [(i, a) for i, a in items if a.body.created_at < before]
    return items


def links(settings: Settings, items: list[tuple[StoredAnchor, AnchorCreated]]) -> dict[str, str]:
    """anchor id -> "ok" or the first finding about it."""
    findings = anchors.verify_chain([i for i, _ in items], verifier(settings))
    first: dict[str, str] = {}
    for f in findings:
        first.setdefault(f.anchor, f"{f.check}: {f.detail}")
    return {item.id: first.get(item.id, "ok") for item, _ in items}


@dataclass
class LogRoots:
    """Roots of each events partition recomputed from the log, at the sizes anchors name."""

    roots: dict[tuple[int, int], bytes]

    def __call__(self, partition: int, size: int) -> bytes | None:
        return self.roots.get((partition, size))


async def recompute_roots(settings: Settings, wanted: set[tuple[int, int]]) -> LogRoots:
    """Replay `evidence.events` from its start, folding each partition into a frontier."""
    topic = Topics(settings.topic_prefix).events
    sizes: dict[int, set[int]] = {}
    for partition, size in wanted:
        sizes.setdefault(partition, set()).add(size)
    roots: dict[tuple[int, int], bytes] = {}
    async with consumer(settings) as c:
        tps = await assign_all(c, topic)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        frontiers = {tp.partition: Frontier() for tp in tps}
        remaining = {tp for tp in tps if sizes.get(tp.partition) and await c.position(tp) < ends[tp]}
        while remaining:
            fetched = await c.getmany(*remaining, timeout_ms=1000, max_records=10000)
            for tp, records in fetched.items():
                frontier = frontiers[tp.partition]
                want = sizes[tp.partition]
                for record in records:
                    frontier, _ = frontier.append(merkle.leaf_hash(record.value))
                    if frontier.size in want:
                        roots[(tp.partition, frontier.size)] = frontier.root()
                frontiers[tp.partition] = frontier
                if records[-1].offset >= ends[tp] - 1 or frontier.size >= max(want):
                    remaining.discard(tp)
    return LogRoots(roots)


def verify(settings: Settings, *, latest: bool) -> dict[str, Any]:
    stored = asyncio.run(read_anchors(settings))
    if not stored:
        raise NotFound("there is no anchor yet; run `stella evidence anchor create`")
    items = decoded(stored)
    checked = stored[-1:] if latest else stored
    wanted = {
        (h.partition, h.tree_size) for i, a in items if i in checked for h in a.body.partitions if h.tree_size
    }
    log_roots = asyncio.run(recompute_roots(settings, wanted))
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        findings = anchors.verify_chain(
            stored if not latest else stored[-2:],
            verifier(settings),
            consistency=lambda p, old, new: trees.consistency_proof(p, old, new),
            log_root=log_roots,
        )
    if latest:
        findings = [f for f in findings if f.anchor == stored[-1].id]
    archived = archived_ids(items)
    breaks = [f for f in findings if f.anchor not in archived]
    recorded = [f for f in findings if f.anchor in archived]
    return {
        "verified": not breaks,
        "anchors_checked": len(checked),
        "breaks": [f.as_dict() for f in breaks],
        "recorded_breaks": [f.as_dict() for f in recorded],
        "latest": stored[-1].id,
    }


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


def last_good(settings: Settings) -> str | None:
    """Id of the last anchor with no finding, for `new-chain` to continue from."""
    stored = asyncio.run(read_anchors(settings))
    bad = {f.anchor for f in anchors.verify_chain(stored, verifier(settings))}
    good = [s.id for s in stored if s.id not in bad]
    return good[-1] if good else None


def export(settings: Settings, anchor_id: str | None) -> dict[str, Any]:
    item, anchor = find(asyncio.run(read_anchors(settings)), anchor_id)
    return {
        "anchor": full(item, anchor),
        "record": base64.b64encode(item.raw).decode(),
        "checkpoints": list(anchor.checkpoints),
        "verifier_key": verifier(settings).vkey,
    }


def consistency(settings: Settings, old_id: str, new_id: str) -> dict[str, Any]:
    stored = asyncio.run(read_anchors(settings))
    old_item, old = find(stored, old_id)
    new_item, new = find(stored, new_id)
    if old_item.offset > new_item.offset:
        raise UsageError("the first anchor must be the older one")
    out: list[dict[str, Any]] = []
    ok = True
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        before = {h.partition: h for h in old.body.partitions}
        for head in new.body.partitions:
            was = before.get(head.partition)
            if was is None or was.tree_size == 0:
                continue
            proof = trees.consistency_proof(head.partition, was.tree_size, head.tree_size)
            try:
                merkle.verify_consistency(was.tree_size, head.tree_size, was.root, head.root, proof)
                verdict = "consistent"
            except (merkle.RootMismatch, merkle.ProofError) as exc:
                ok, verdict = False, str(exc)
            out.append(
                {
                    "partition": head.partition,
                    "old_size": was.tree_size,
                    "new_size": head.tree_size,
                    "old_root": b64(was.root),
                    "new_root": b64(head.root),
                    "proof": [b64(p) for p in proof],
                    "verdict": verdict,
                }
            )
    return {"old_anchor": old_item.id, "new_anchor": new_item.id, "consistent": ok, "partitions": out}


async def _record_value(settings: Settings, partition: int, offset: int) -> bytes:
    tp = TopicPartition(Topics(settings.topic_prefix).events, partition)
    async with consumer(settings) as c:
        c.assign([tp])
        c.seek(tp, offset)
        record = await asyncio.wait_for(c.getone(), timeout=settings.timeout)
        return bytes(record.value)


def proof(settings: Settings, artifact_id: str, anchor_id: str | None) -> dict[str, Any]:
    """The inclusion proof of an artifact's ingest event in an anchor's tree of its partition."""
    record = queries.find(settings, artifact_id)
    item, anchor = find(asyncio.run(read_anchors(settings)), anchor_id)
    head = next((h for h in anchor.body.partitions if h.partition == record.partition), None)
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        index = trees.leaf_index(record.partition, record.offset)
        if index is None:
            raise NotFound(f"the event of {artifact_id} is not in the Merkle store yet")
        if head is None or index >= head.tree_size:
            raise NotFound(f"anchor {item.id} does not cover {artifact_id}; create a newer anchor")
        path = trees.inclusion_proof(record.partition, index, head.tree_size)
    value = asyncio.run(_record_value(settings, record.partition, record.offset))
    leaf = merkle.leaf_hash(value)
    merkle.verify_inclusion(index, head.tree_size, leaf, path, head.root)
    return {
        "artifact_id": artifact_id,
        "anchor_id": item.id,
        "partition": record.partition,
        "offset": record.offset,
        "leaf_index": index,
        "tree_size": head.tree_size,
        "leaf_value": b64(value),
        "leaf_hash": b64(leaf),
        "proof": [b64(p) for p in path],
        "root": b64(head.root),
        "checkpoint": anchor.checkpoints[anchor.body.partitions.index(head)],
        "verifier_key": verifier(settings).vkey,
    }
