"""Point-in-time recovery (runbook DR-002) on a real broker, real blobs and the running service:
`stella evidence restore --to-anchor` voids what came after an anchor without rewriting the log."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from locker.config import Settings
from locker.digests import digest_of
from streams.kafka import end_offsets
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, ingest, wait_for

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


def records_on_the_log(settings: Settings) -> int:
    return sum(asyncio.run(end_offsets(settings, Topics(settings.topic_prefix).events)).values())


def status_of(artifact_id: str) -> str:
    return str(cli_json("evidence", "index", "lookup", artifact_id)["status"])


def test_a_restore_to_an_anchor_voids_what_came_after_it(anchoring: Settings) -> None:
    good = [os.urandom(300) for _ in range(12)]
    ingest(anchoring, good)
    wait_for(lambda: index_count(anchoring) == 12, what="12 artifacts indexed")
    anchor_a = cli_json("evidence", "anchor", "create")["anchor_id"]
    at_a = cli_json("evidence", "index", "status", "--checksum")["checksum"]

    # What went wrong after A: a bad ingest, and a good artifact marked corrupted by mistake.
    bad = [os.urandom(300) for _ in range(5)]
    ingest(anchoring, bad)
    mistaken = digest_of(good[0])
    run_cli("evidence", "mark-corrupted", "--id", mistaken, "--reason", "wrong host")
    wait_for(lambda: status_of(mistaken) == "corrupted", what="the mistaken corruption folded")
    wait_for(lambda: index_count(anchoring) == 17, what="the bad ingest folded")
    on_log = records_on_the_log(anchoring)

    # `anchor list --before` finds A; the restore names it by a prefix.
    listed = cli_json("evidence", "anchor", "list", "--before", "2999-01-01T00:00:00")
    assert anchor_a in [a["anchor_id"] for a in listed]
    restored = cli_json("evidence", "restore", "--to-anchor", anchor_a[:24], "--reason", "bad scanner run")
    assert restored["anchor"] == anchor_a
    assert cli_json("evidence", "index", "status", "--checksum")["checksum"] == at_a  # as it was at A
    assert sorted(restored["artifacts_voided"]) == sorted(digest_of(b) for b in bad)
    assert restored["voided_records"] == 6  # five ingests and the corruption
    partitions = len(restored["partitions"])
    assert sum(p["records"] for p in restored["partitions"]) == 6

    # Nothing was rewritten: the voided records are still there, plus one restore record a partition.
    assert records_on_the_log(anchoring) == on_log + partitions
    assert status_of(mistaken) == "ingested"
    gone = run_cli("evidence", "index", "lookup", digest_of(bad[0]), "--format", "json", check=False)
    assert gone.returncode == 1
    provenance = cli_json("evidence", "provenance", "show", digest_of(bad[0]))
    assert provenance["status"] == "voided"
    assert [s["what"] for s in provenance["steps"]] == [
        f"ingested (voided by the restore to anchor {anchor_a})"
    ]

    # The next anchor is consistent with A, and the whole chain verifies against the log.
    anchor_b = cli_json("evidence", "anchor", "create")["anchor_id"]
    assert cli_json("evidence", "anchor", "consistency", anchor_a, anchor_b)["consistent"]
    run_cli("evidence", "anchor", "verify", "--all")

    # DR-002 step 3: a full run as of A checks A's artifacts and A's roots.
    verified = cli_json("evidence", "verify", "--mode", "full", "--to-anchor", anchor_a)
    assert verified["anchor"]["id"] == anchor_a and verified["anchor"]["verified"]
    assert (verified["run"]["planned"], verified["run"]["ok"], verified["run"]["to_anchor"]) == (
        12,
        12,
        anchor_a,
    )

    # A rebuild from offset 0 folds the restore records the same way.
    rebuilt = cli_json("evidence", "index", "rebuild")
    assert rebuilt["checksum"] == at_a and rebuilt["matches_live"]

    # The same content submitted again after the restore is ingested again.
    ingest(anchoring, bad[:1])
    wait_for(lambda: index_count(anchoring) == 13, what="the resubmission indexed")
    assert status_of(digest_of(bad[0])) == "ingested"


def test_a_restore_refuses_an_unknown_anchor_and_mixed_options(anchoring: Settings) -> None:
    unknown = run_cli("evidence", "restore", "--to-anchor", "sha256:" + "0" * 64, check=False)
    assert unknown.returncode != 0 and "not found" in unknown.stderr
    both = run_cli("evidence", "restore", "--to-anchor", "x", "--backup-id", "y", check=False)
    assert both.returncode == 2 and "exactly one" in both.stderr
    quick = run_cli("evidence", "verify", "--mode", "quick", "--to-anchor", "x", check=False)
    assert quick.returncode == 2 and "--mode full" in quick.stderr
