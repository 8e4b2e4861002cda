"""`stella evidence provenance show <id>`: an artifact's chain of custody, from the log
(`streams.provenance`, shared with the API), with the index and the anchor chain read-only."""

from __future__ import annotations

from commands import queries
from commands.anchors import chain_view
from locker.config import Settings
from locker.digests import parse_digest
from streams.provenance import Provenance, provenance


def show(settings: Settings, artifact_id: str) -> Provenance:
    parse_digest(artifact_id, what="artifact id")
    with queries.index_store(settings) as index:
        return provenance(settings, index, lambda: chain_view(settings), artifact_id)
