"""Retention on a real index and real blobs: the dry run lists exactly what would go and changes
nothing; a held artifact is never listed, even by the aggressive tier."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from typing import Any

import pytest

from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, produce, submission, wait_for

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


def listing(settings: Settings) -> list[tuple[str, int]]:
    blobs = BlobStore(settings.evidence_path)
    return sorted((p.name, p.stat().st_size) for p in blobs.blobs.rglob("*") if p.is_file())


def scans_and_sboms(settings: Settings, scans: int, sboms: int) -> tuple[list[bytes], list[bytes], str]:
    """Ingest that many scans and SBOMs, hold the first scan, and let every one grow older than
    2 s; returns the contents and the held artifact's id."""
    scan = [os.urandom(200 + i) for i in range(scans)]
    sbom = [os.urandom(300 + i) for i in range(sboms)]
    records = [(digest_of(c).encode(), submission(c, kind="scan")) for c in scan]
    records += [(digest_of(c).encode(), submission(c, kind="sbom")) for c in sbom]
    asyncio.run(produce(settings, Topics(settings.topic_prefix).submissions, records))
    wait_for(lambda: index_count(settings) == len(records), what="all indexed")
    held = digest_of(scan[0])
    run_cli("evidence", "hold", "set", held, "--reason", "case 7")
    time.sleep(2.1)
    return scan, sbom, held


def test_a_dry_run_lists_what_would_go_and_changes_nothing(
    running: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans, _, held = scans_and_sboms(running, 4, 3)
    monkeypatch.setenv("STELLA_RETENTION__SCAN", "2s")  # the default keeps everything else
    before = (cli_json("evidence", "index", "status", "--checksum")["checksum"], listing(running))
    plan = cli_json("evidence", "cleanup", "--apply-retention", "--dry-run")
    assert (plan["artifacts"], plan["bytes"]) == (3, sum(len(c) for c in scans[1:]))
    assert plan["by_kind"] == [{"kind": "scan", "artifacts": 3, "bytes": plan["bytes"]}]
    assert {a["artifact_id"] for a in plan["artifacts_listed"]} == {digest_of(c) for c in scans[1:]}
    assert (
        plan["held_skipped"] == 1 and plan["policy"]["scan"] == "2s" and plan["policy"]["sbom"] == "forever"
    )
    assert plan["oldest"] <= plan["newest"]

    monkeypatch.setenv("STELLA_RETENTION__AGGRESSIVE", "1s")
    aggressive = cli_json("evidence", "cleanup", "--apply-retention", "--dry-run", "--aggressive")
    assert aggressive["artifacts"] == 6 and held not in {
        a["artifact_id"] for a in aggressive["artifacts_listed"]
    }
    after = (cli_json("evidence", "index", "status", "--checksum")["checksum"], listing(running))
    assert after == before  # nothing changed: index and storage listing identical

    monkeypatch.setenv("STELLA_RETENTION__SCAN", "soon")
    bad = run_cli("evidence", "cleanup", "--apply-retention", "--dry-run", check=False)
    assert bad.returncode == 2 and "Retention:scan" in bad.stderr


def rfc6962_root(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162, 2.1.3.2, written here from the RFC: independent of `locker.merkle`."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise AssertionError("proof too long")
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0, "proof too short"
    return r


def test_cleanup_expires_past_the_policy_deletes_blobs_and_keeps_proofs(
    anchoring: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans, sboms, held = scans_and_sboms(anchoring, 4, 2)
    monkeypatch.setenv("STELLA_RETENTION__SCAN", "2s")
    blobs = BlobStore(anchoring.evidence_path)

    done = cli_json("evidence", "cleanup", "--apply-retention")
    gone = [digest_of(c) for c in scans[1:]]
    assert (done["expired"], done["bytes"], done["deletions_pending"]) == (
        3,
        sum(len(c) for c in scans[1:]),
        0,
    )
    assert not any(blobs.exists(i) for i in gone)
    assert blobs.exists(held) and all(blobs.exists(digest_of(c)) for c in sboms)
    record = cli_json("evidence", "index", "lookup", gone[0])
    assert record["status"] == "expired" and "2s" in record["status_reason"]

    # Aggressive: everything not held goes; the held artifact survives every tier.
    monkeypatch.setenv("STELLA_RETENTION__AGGRESSIVE", "1s")
    aggressive = cli_json("evidence", "cleanup", "--apply-retention", "--aggressive")
    assert aggressive["expired"] == 2 and blobs.exists(held)
    assert cli_json("evidence", "index", "lookup", held)["status"] == "ingested"

    # Verification skips expired artifacts without calling them missing.
    run = cli_json("evidence", "verify", "--mode", "full")["run"]
    assert (run["planned"], run["ok"], run["failed"]) == (1, 1, 0)

    # The log is untouched: an expired artifact's ingest is still proven by the next anchor.
    cli_json("evidence", "anchor", "create")
    proof = cli_json("evidence", "proof", gone[0])
    value = base64.b64decode(proof["leaf_value"])
    assert json.loads(value)["artifact_id"] == gone[0]
    leaf = hashlib.sha256(b"\x00" + value).digest()
    root = rfc6962_root(
        proof["leaf_index"], proof["tree_size"], leaf, [base64.b64decode(p) for p in proof["proof"]]
    )
    assert root == base64.b64decode(proof["root"])

    # Submitted again, expired content is ingested again.
    again = [(gone[0].encode(), submission(scans[1], kind="scan"))]
    asyncio.run(produce(anchoring, Topics(anchoring.topic_prefix).submissions, again))
    wait_for(lambda: cli_json("evidence", "index", "lookup", gone[0])["status"] == "ingested", what="revived")
    assert blobs.hash_of(gone[0]) == gone[0]
