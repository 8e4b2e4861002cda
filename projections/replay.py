"""A verdict from an evidence pack alone (`stella replay`). Pure.

Each artifact's state is rebuilt by folding the pack's events of it, in log order, with the fold
the service's index uses (`projections.index.apply`), and its chain of custody with the steps
`stella evidence provenance show` prints (`projections.provenance.step`). The verdict names the
anchor every event was proven in; it holds nothing of the moment it was made, so the same pack
always gives the same bytes (`canonical`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from locker.anchors import AnchorCreated
from locker.archives import History, PackManifest
from locker.errors import InvalidInput
from locker.events import ArtifactVerificationFailed, decode
from locker.times import iso_utc
from projections.index import GONE, INGESTED, ArtifactRecord, Position, apply
from projections.provenance import step

VERDICT_FORMAT = 1


def out_of_order(history: History) -> str | None:
    """Why `history` is not in log order (one partition, offsets rising), or None if it is."""
    positions = [(e.partition, e.offset) for e in history.events]
    if len({p for p, _ in positions}) > 1:
        return "its events are on more than one partition"
    if any(a[1] >= b[1] for a, b in pairwise(positions)):
        return "its events are not in log order"
    return None


def verdict(
    manifest: PackManifest,
    anchor: AnchorCreated,
    anchor_id: str,
    histories: Mapping[str, History],
    pack_sha256: str,
) -> dict[str, Any]:
    """The verdict of a pack whose every check passed (`stella evidence verify --offline`)."""
    artifacts = [_artifact(a.artifact_id, a.blob, histories[a.artifact_id]) for a in manifest.artifacts]
    tally = Counter(a["verdict"] for a in artifacts)
    return {
        "verdict_format": VERDICT_FORMAT,
        "pack": {"subject": manifest.subject, "sha256": pack_sha256},
        "anchor": {
            "id": anchor_id,
            "chain_id": anchor.body.chain_id,
            "sequence": anchor.body.sequence,
            "created_at": iso_utc(anchor.body.created_at),
            "tree_sizes": {str(h.partition): h.tree_size for h in anchor.body.partitions},
        },
        "verifier_key": manifest.verifier_key,
        "artifacts": artifacts,
        "overall": {
            "artifacts": len(artifacts),
            **{kind: tally.get(kind, 0) for kind in ("good", "unavailable", "bad")},
            "verdict": "fail" if tally.get("bad") else "pass",
        },
    }


def _artifact(artifact_id: str, blob: bool, history: History) -> dict[str, Any]:
    record: ArtifactRecord | None = None
    custody: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for proved in history.events:
        try:
            event = decode(proved.value)
        except InvalidInput:
            continue  # proven, but not an event: it changed nothing for the service either
        record = apply(event, record, Position(proved.partition, proved.offset))
        found = step(event)
        if found is not None:
            custody.append({**found, "partition": proved.partition, "offset": proved.offset})
        if isinstance(event, ArtifactVerificationFailed):
            failures.append(
                {
                    "run_id": event.run_id,
                    "outcome": event.outcome,
                    "detail": event.detail,
                    "at": iso_utc(event.verified_at),
                }
            )
    if record is None:
        return {"artifact_id": artifact_id, "status": "unknown", "verdict": "bad", "provenance": custody}
    good = record.status == INGESTED and blob
    return {
        **record.public(),  # what `inspect` and the API show of it
        "blob": "verified" if blob else "not in the pack",
        "events": len(history.events),
        "verification_failures": failures,
        "provenance": custody,
        "verdict": "good" if good else "unavailable" if record.status in GONE else "bad",
    }


def canonical(document: Mapping[str, Any]) -> bytes:
    """JSON with sorted keys and no spaces, UTF-8, one line: the same document, the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
