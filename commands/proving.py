"""What archives and evidence packs share: an anchor that covers the log, the events of chosen
artifacts read back from the log up to it, and their inclusion proofs from the Merkle store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

from commands import anchors as anchor_ops
from commands import queries
from commands.integrity import checked_anchor
from locker import merkle
from locker.anchors import AnchorCreated, StoredAnchor
from locker.archives import History, ProvedEvent
from locker.config import Settings
from locker.errors import InvalidInput, NotFound
from locker.events import decode
from projections.index import ArtifactRecord, artifact_of, counts
from projections.merkle_store import CachedNodes, MerkleStore
from streams.kafka import end_offsets
from streams.reader import read_batches
from streams.topics import Topics

Progress = Callable[[str, int, int | None], None]


def covering_anchor(
    settings: Settings, needs: Mapping[int, int] | None = None
) -> tuple[StoredAnchor, AnchorCreated]:
    """The latest anchor if it covers `needs` (partition -> the last offset it must cover; default
    every record of `evidence.events` now), else a new one the service makes; checked like
    `anchor verify --latest` (`IntegrityError` if it does not verify)."""
    if needs is None:
        ends = asyncio.run(end_offsets(settings, Topics(settings.topic_prefix).events))
        needs = {p: end - 1 for p, end in ends.items() if end}
    anchor_id = None
    with contextlib.suppress(NotFound), anchor_ops.chain_view(settings) as chain:
        stored, latest = chain.find(None)
        heads = {h.partition: h for h in latest.body.partitions}
        if all(p in heads and heads[p].last_offset >= last for p, last in needs.items()):
            anchor_id = stored.id
    for attempt in range(3):
        if anchor_id is not None:
            break
        time.sleep(0.5 * attempt)  # the service's trees may be a moment behind the log just read
        created = anchor_ops.create(settings)
        if _covers(settings, created["anchor_id"], needs):
            anchor_id = created["anchor_id"]
    if anchor_id is None:
        raise NotFound("no anchor covers the events read: the service's Merkle trees lag the log")
    checked = checked_anchor(settings, anchor_id).id
    with anchor_ops.chain_view(settings) as chain:
        return chain.find(checked)


def _covers(settings: Settings, anchor_id: str, needs: Mapping[int, int]) -> bool:
    with anchor_ops.chain_view(settings) as chain:
        _, anchor = chain.find(anchor_id)
    heads = {h.partition: h for h in anchor.body.partitions}
    return all(p in heads and heads[p].last_offset >= last for p, last in needs.items())


def anchor_stops(anchor: AnchorCreated) -> dict[int, int]:
    """partition -> the first offset the anchor's trees do not cover."""
    return {h.partition: h.last_offset + 1 for h in anchor.body.partitions if h.tree_size}


Events = dict[str, list[tuple[int, int, bytes]]]  # artifact id -> (partition, offset, value), in log order


def histories(
    settings: Settings, chosen: list[ArtifactRecord], upto: Mapping[int, int], report: Progress
) -> Events:
    """The counting events of each chosen artifact before `upto` (partition -> offset), read from
    the log: all of an artifact's events are on its partition, from its ingest on."""
    wanted = {r.artifact_id for r in chosen}
    starts: dict[int, int] = {}
    for r in chosen:
        starts[r.partition] = min(starts.get(r.partition, r.offset), r.offset)
    stops = {p: upto[p] for p in starts if p in upto and upto[p] > starts[p]}
    with queries.index_store(settings) as index:
        voided = {p: index.voided_ranges(p) for p in stops}
    found: Events = defaultdict(list)
    total, done = sum(stops[p] - starts[p] for p in stops), 0
    topic = Topics(settings.topic_prefix).events
    for batch in read_batches(settings, topic, starts=starts, stops=stops, partitions=list(stops)):
        for partition, offset, value in batch:
            if named(value) not in wanted or not counts(offset, voided[partition]):
                continue
            try:
                artifact_id = artifact_of(decode(value))
            except InvalidInput:
                continue
            if artifact_id in wanted:
                found[artifact_id].append((partition, offset, value))
        done += len(batch)
        report("reading events", done, total)
    return found


_FIELD = b'"artifact_id":"'


def named(value: bytes) -> str | None:
    """The artifact id an event record names first, found without decoding it (a filter: events
    are canonical JSON, keys sorted, so an artifact event's own id is the first such field)."""
    at = value.find(_FIELD)
    return None if at < 0 else value[at + len(_FIELD) : at + len(_FIELD) + 71].decode(errors="replace")


class Prover:
    """Inclusion proofs of event records in one anchor, from the Merkle store (nodes cached per
    partition: an archive's proofs share most of them)."""

    def __init__(self, trees: MerkleStore, anchor: AnchorCreated) -> None:
        self._trees = trees
        self._sizes = {h.partition: h.tree_size for h in anchor.body.partitions}
        self._nodes: dict[int, CachedNodes] = {}

    def __call__(self, items: list[tuple[str, list[tuple[int, int, bytes]]]]) -> list[History]:
        wanted: dict[int, list[int]] = defaultdict(list)
        for _, records in items:
            for partition, offset, _ in records:
                wanted[partition].append(offset)
        leaves = {
            (p, o): i
            for p, offsets in wanted.items()
            for o, i in zip(offsets, self._trees.leaf_indices(p, offsets), strict=True)
        }
        return [
            History(
                artifact_id=artifact_id,
                events=tuple(self._proved(p, o, v, leaves[p, o]) for p, o, v in records),
            )
            for artifact_id, records in items
        ]

    def _proved(self, partition: int, offset: int, value: bytes, index: int | None) -> ProvedEvent:
        size = self._sizes.get(partition, 0)
        if index is None or index >= size:
            raise NotFound(
                f"record {partition}/{offset} is not in the anchor's tree: rebuild the Merkle store"
            )
        nodes = self._nodes.get(partition)
        if nodes is None:
            nodes = self._nodes[partition] = CachedNodes(self._trees.nodes(partition))
        proof = merkle.inclusion_proof(nodes, index, size)
        return ProvedEvent(
            partition=partition, offset=offset, leaf_index=index, value=value, proof=tuple(proof)
        )
