"""`stella evidence anchor ...` and `stella evidence proof`: read, check and request anchors.

Creating an anchor is a command on `evidence.commands`; the service (the single writer) makes
it, and the CLI waits for the record with its correlation id on `evidence.anchors`. Everything
else reads the anchors topic, the Merkle store (read-only) and the events topic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from commands import queries, service
from commands.sending import exchange
from locker import anchors, merkle, requests, signing
from locker.anchors import AnchorCreated, StoredAnchor
from locker.config import Settings
from locker.errors import IntegrityError, InvalidInput, LockerError, NotFound, Refused, UsageError
from locker.merkle import Frontier
from projections import anchor_chain, proofs
from projections.anchor_store import AnchorStore
from projections.merkle_store import MerkleStore
from projections.proofs import b64
from streams.anchoring import read_anchors, read_records
from streams.kafka import fetch_value, read_to_end, record_ends
from streams.topics import Topics


@contextlib.contextmanager
def chain_view(settings: Settings) -> Iterator[AnchorStore]:
    """The anchor chain projection holding every record now on `evidence.anchors`.

    That is the service's store, read-only, once it has caught up (waiting up to
    `Commands:Timeout` while the service runs). With no service to bring it up to date, the
    chain is folded here from the whole topic into a temporary store instead: O(anchors), once.
    """
    end = asyncio.run(record_ends(settings, Topics(settings.topic_prefix).anchors)).get(0, 0)
    deadline = time.monotonic() + settings.timeout
    while True:
        with AnchorStore(settings.chain_path, readonly=True) as store:
            if store.caught_up_to(end):
                yield store
                return
        if service.daemon(settings).pid() is None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    trusted = verifier(settings) if settings.key_file.exists() else None
    with (
        tempfile.TemporaryDirectory(prefix="stella-chain-") as tmp,
        AnchorStore(Path(tmp) / "chain", unlogged=True) as copy,
    ):
        for stored in asyncio.run(read_records(settings)):
            copy.apply(stored.offset, stored.raw, trusted)
        yield copy


def verifier(settings: Settings) -> signing.Verifier:
    """The trusted verifier key: the public half of the locker's signing key."""
    return signing.load_signer(settings.key_file, settings.origin).verifier


def signer(settings: Settings, what: str) -> signing.Signer:
    """The locker's signing key, to sign `what` (a backup, an archive) with; `UsageError` if none."""
    try:
        return signing.load_signer(settings.key_file, settings.origin)
    except LockerError:
        missing = f"there is no anchor key at {settings.key_file} to sign {what} with"
        raise UsageError(f"{missing}: run `stella init`") from None


def ensure_key(settings: Settings) -> bool:
    """Create the anchor signing key if there is none; True if it was created."""
    if settings.key_file.exists():
        return False
    signing.create_key(settings.key_file)
    return True


async def _request(
    settings: Settings, command: requests.CreateAnchor | requests.RecoverAnchor
) -> tuple[StoredAnchor, AnchorCreated | anchors.AnchorRecovered]:
    """Send `command`; return the anchors record that answers it (its correlation id), or raise
    `Refused` with the reason the service dead-lettered it for."""

    def answer(record: Any) -> tuple[StoredAnchor, AnchorCreated | anchors.AnchorRecovered] | None:
        try:
            reply = anchors.decode_record(record.value)
        except InvalidInput:
            return None
        return (
            (StoredAnchor(record.offset, record.value), reply)
            if reply.correlation_id == command.command_id
            else None
        )

    anchors_topic = Topics(settings.topic_prefix).anchors  # one partition: any key names it
    return await exchange(settings, command, "anchor request", watch=(anchors_topic, b""), answer=answer)


def create(settings: Settings, new_chain_reason: str = "") -> dict[str, Any]:
    verifier(settings)  # fail early, with a clear error, where there is no key
    continue_from = (last_good(settings) or "") if new_chain_reason else ""
    item, anchor = asyncio.run(_request(settings, requests.create_anchor(new_chain_reason, continue_from)))
    assert isinstance(anchor, AnchorCreated)
    return anchors.full(item, anchor)


def listing(settings: Settings, *, before: datetime | None = None) -> list[dict[str, Any]]:
    """Anchors in log order, each summary with its `link`: "ok" or the first finding about it."""
    with chain_view(settings) as chain:
        return [
            {**anchors.summary(entry.stored, entry.anchor()), "link": entry.status}
            for entry in chain.anchors(before=before)
        ]


@dataclass
class LogRoots:
    """Roots of each events partition recomputed from the log, at the sizes anchors name."""

    roots: dict[tuple[int, int], bytes]

    def __call__(self, partition: int, size: int) -> bytes | None:
        return self.roots.get((partition, size))


async def recompute_roots(settings: Settings, wanted: set[tuple[int, int]]) -> LogRoots:
    """Replay `evidence.events` from its start, folding each partition into a frontier."""
    sizes: dict[int, set[int]] = {}
    for partition, size in wanted:
        sizes.setdefault(partition, set()).add(size)
    roots: dict[tuple[int, int], bytes] = {}
    frontiers: dict[int, Frontier] = {}
    async for records in read_to_end(settings, Topics(settings.topic_prefix).events, max_records=10000):
        for record in records:
            want = sizes.get(record.partition)
            frontier = frontiers.get(record.partition, Frontier())
            if not want or frontier.size >= max(want):
                continue
            frontier, _ = frontier.append(merkle.leaf_hash(record.value))
            frontiers[record.partition] = frontier
            if frontier.size in want:
                roots[(record.partition, frontier.size)] = frontier.root()
        if len(roots) == len(wanted):
            break
    return LogRoots(roots)


def verify_latest(settings: Settings, anchor_id: str | None = None) -> dict[str, Any]:
    """The latest anchor (or `anchor_id`), from the chain projection: its signature, its link to
    the anchor before it, a consistency proof from that one and its roots, both from the Merkle
    store. O(log n)."""
    trusted = verifier(settings)
    with chain_view(settings) as chain:
        entry = chain.latest() if anchor_id is None else chain.entry(chain.find(anchor_id)[0].offset)
        if entry is None:
            raise NotFound("there is no anchor yet; run `stella evidence anchor create`")
        anchor, aid = entry.anchor(), entry.anchor_id
        findings = anchors.check_anchor(anchor, aid, trusted)
        previous = chain.neighbour(anchor.body.chain_id, entry.offset, after=False)
        before = None if previous is None else chain.entry(previous)
        link = None if before is None else (before.anchor(), before.stored)
        findings += anchors.check_link(aid, anchor, link, anchor_chain.continues(chain, anchor, entry.offset))
        with MerkleStore(settings.merkle_path, readonly=True) as trees:
            if link is not None:
                findings += anchors.check_consistency(aid, anchor, link[0], trees.consistency_proof)
            findings += anchors.check_roots(aid, anchor, _stored_root(trees))
    return {
        "verified": not findings,
        "anchors_checked": 1,
        "breaks": [f.as_dict() for f in findings],
        "recorded_breaks": [],
        "repaired": [],
        "latest": aid,
    }


def _stored_root(trees: MerkleStore) -> anchors.RootSource:
    def root(partition: int, size: int) -> bytes | None:
        return trees.root_at(partition, size) if size <= trees.tree_size(partition) else None

    return root


def verify(settings: Settings, *, latest: bool) -> dict[str, Any]:
    """`--latest`: see `verify_latest`. `--all`: every anchor against the log itself."""
    if latest:
        return verify_latest(settings)
    stored, repaired = anchors.effective_chain(asyncio.run(read_records(settings)))
    if not stored:
        raise NotFound("there is no anchor yet; run `stella evidence anchor create`")
    items = anchors.decoded(stored)
    wanted = {(h.partition, h.tree_size) for _, a in items for h in a.body.partitions if h.tree_size}
    log_roots = asyncio.run(recompute_roots(settings, wanted))
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        findings = anchors.verify_chain(
            stored,
            verifier(settings),
            consistency=lambda p, old, new: trees.consistency_proof(p, old, new),
            log_root=log_roots,
        )
    archived = anchors.archived_ids(items)
    breaks = [f for f in findings if f.anchor not in archived]
    recorded = [f for f in findings if f.anchor in archived]
    return {
        "verified": not breaks,
        "anchors_checked": len(stored),
        "breaks": [f.as_dict() for f in breaks],
        "recorded_breaks": [f.as_dict() for f in recorded],
        "repaired": repaired,
        "latest": stored[-1].id,
    }


def recover(settings: Settings, anchor_id: str, source: str) -> dict[str, Any]:
    """Replace a damaged anchor record by its backup copy, once its signature and links check out."""
    if source != "backup":
        raise UsageError("--source must be 'backup' (the copies the service keeps in Anchors:BackupPath)")
    wanted = anchor_id.removeprefix("sha256:")
    if not wanted or set(wanted) - set("0123456789abcdef"):  # never a glob pattern or a path
        detail = f"anchor id {anchor_id!r} is not sha256:<hex> or a prefix of one"
        raise InvalidInput("invalid-digest", detail)
    copies = sorted(settings.anchor_backup_path.glob(f"{wanted}*.json"))
    if len(copies) != 1:
        raise NotFound(f"{len(copies)} backup copies of anchor {anchor_id} in {settings.anchor_backup_path}")
    raw = read_anchor_file(copies[0])
    rid = anchors.anchor_id(raw)
    copy = anchors.decode(raw)
    trusted = verifier(settings)
    if found := anchors.check_anchor(copy, rid, trusted):
        raise IntegrityError(f"backup copy {copies[0]}", "a validly signed anchor", found[0].detail)
    stored = asyncio.run(read_anchors(settings))
    if any(item.id == rid for item in stored):
        raise Refused(f"anchor {rid} is intact in the log; there is nothing to recover")
    damaged, before, after = _slot(stored, copy, raw)
    expected_previous = b"" if before is None else hashlib.sha256(before.raw).digest()
    if copy.body.previous != expected_previous:
        raise IntegrityError("link to the anchor before", b64(expected_previous), b64(copy.body.previous))
    reason = f"restored {rid} from {copies[0].name}"
    item, _ = asyncio.run(_request(settings, requests.recover_anchor(raw, damaged.offset, reason)))
    return {
        "recovered": rid,
        "replaced_offset": damaged.offset,
        "damaged": damaged.id,
        "next_anchor_links": after is not None,
        "recovery_record_offset": item.offset,
    }


def read_anchor_file(path: Path) -> bytes:
    """The anchor record kept in a backup copy (an export file)."""
    try:
        return base64.b64decode(json.loads(path.read_bytes())["record"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"backup copy {path}", "an exported anchor file", repr(exc)) from None


def _slot(
    stored: list[StoredAnchor], copy: AnchorCreated, raw: bytes
) -> tuple[StoredAnchor, StoredAnchor | None, StoredAnchor | None]:
    """(damaged record, the chain's anchor before it, the anchor after it) for a backup copy.

    The damaged record is the one just before the anchor that links to the copy's hash, or else
    the record that claims the copy's chain and sequence.
    """
    digest = hashlib.sha256(raw).digest()
    items = {item.offset: anchor for item, anchor in anchors.decoded(stored)}
    chain = [
        s for s in stored if s.offset not in items or items[s.offset].body.chain_id == copy.body.chain_id
    ]
    for index, item in enumerate(chain):
        anchor = items.get(item.offset)
        if anchor is not None and anchor.body.previous == digest and index > 0:
            return chain[index - 1], (chain[index - 2] if index > 1 else None), item
    for index, item in enumerate(chain):
        anchor = items.get(item.offset)
        if anchor is not None and anchor.body.sequence == copy.body.sequence:
            return item, (chain[index - 1] if index > 0 else None), None
    raise NotFound(f"no damaged record in the log for anchor sequence {copy.body.sequence}")


def last_good(settings: Settings) -> str | None:
    """Id of the last anchor with no finding, for `new-chain` to continue from."""
    stored = asyncio.run(read_anchors(settings))
    bad = {f.anchor for f in anchors.verify_chain(stored, verifier(settings))}
    good = [s.id for s in stored if s.id not in bad]
    return good[-1] if good else None


def export(settings: Settings, anchor_id: str | None) -> dict[str, Any]:
    with chain_view(settings) as chain:
        item, anchor = chain.find(anchor_id)
    return anchors.export_document(item, anchor, verifier(settings).vkey)


def consistency(settings: Settings, old_id: str, new_id: str) -> dict[str, Any]:
    with chain_view(settings) as chain, MerkleStore(settings.merkle_path, readonly=True) as trees:
        return proofs.consistency(trees, chain.find(old_id), chain.find(new_id))


def proof(settings: Settings, artifact_id: str, anchor_id: str | None) -> dict[str, Any]:
    """The inclusion proof of an artifact's ingest event in an anchor's tree of its partition."""
    record = queries.find(settings, artifact_id)
    with chain_view(settings) as chain:
        item, anchor = chain.find(anchor_id)
    events = Topics(settings.topic_prefix).events
    value = asyncio.run(fetch_value(settings, events, record.partition, record.offset))
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        out = proofs.inclusion(trees, item, anchor, record.partition, record.offset, value)
    return {"artifact_id": artifact_id, **out, "verifier_key": verifier(settings).vkey}


def inspect(settings: Settings, anchor_id: str) -> dict[str, Any]:
    with chain_view(settings) as chain:
        return anchors.full(*chain.find(anchor_id))


def verify_file(path: Path, key: str | None) -> dict[str, Any]:
    """Check an exported anchor file with no broker, service or store: signature, checkpoints,
    and that the file's parts agree. `key` is the verifier key to trust (else the file's own)."""
    try:
        document = json.loads(path.read_text())
        raw = base64.b64decode(document["record"], validate=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path} is not an exported anchor file: {exc}") from None
    trusted = signing.Verifier.from_vkey(key or document.get("verifier_key", ""))
    aid = anchors.anchor_id(raw)
    anchor = anchors.decode(raw)
    found = [f.as_dict() for f in anchors.check_anchor(anchor, aid, trusted)]
    if document.get("anchor", {}).get("anchor_id") != aid:
        found.append(
            {"anchor": aid, "check": "file", "detail": "the file's anchor_id is not the record's hash"}
        )
    if document.get("checkpoints") != list(anchor.checkpoints):
        found.append(
            {"anchor": aid, "check": "file", "detail": "the file's checkpoints differ from the record's"}
        )
    return {
        "verified": not found,
        "anchor_id": aid,
        "sequence": anchor.body.sequence,
        "tree_sizes": {str(h.partition): h.tree_size for h in anchor.body.partitions},
        "verifier_key": trusted.vkey,
        "key_source": "--key" if key else "the file (pass --key to trust a key you hold)",
        "findings": found,
    }
