"""`stella backup create|list` on a real broker, real blobs and the real signing key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from locker import backups, signing
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import BackupCreated
from tests.conftest import run_cli
from tests.integration.helpers import events, ingest

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


def test_backups_are_consistent_signed_incremental_and_recorded(anchoring: Settings, tmp_path: Path) -> None:
    first = [os.urandom(500) for _ in range(20)]
    ingest(anchoring, first)
    anchor = cli_json("evidence", "anchor", "create")["anchor_id"]
    root = tmp_path / "backups"
    live = cli_json("evidence", "index", "status", "--checksum")["checksum"]  # before backup.created
    one = cli_json("backup", "create", "--type", "evidence-locker", "--output", str(root))
    assert (one["events"], one["artifacts"], one["blobs_copied"], one["missing_blobs"]) == (20, 20, 20, [])
    assert one["anchors"] == 1 and one["latest_anchor"] == anchor
    assert one["index_checksum"] == live  # the fold of the backed-up events is the live index

    # Self-describing: every file is in the manifest with its digest, every blob is in the pool,
    # and the manifest's signature checks out with the anchor key.
    folder = Path(one["path"])
    raw = (folder / "manifest.json").read_bytes()
    manifest = backups.decode_manifest(raw)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == one["manifest_sha256"]
    for name, entry in manifest.files.items():
        assert "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry.sha256
    assert {"events.records", "anchors.records", "config.toml"} <= set(manifest.files)
    assert any(name.startswith("anchor-backups/") for name in manifest.files)
    pool = BlobStore(root)
    assert sorted(manifest.artifacts) == sorted(digest_of(c) for c in first)
    assert all(pool.hash_of(i) == i for i in manifest.artifacts)
    signer = signing.load_signer(anchoring.key_file, anchoring.origin)
    assert signer.verifier.verify(raw, base64.b64decode((folder / "manifest.sig").read_bytes()))
    records = list(backups.unframe((folder / "events.records").read_bytes()))
    for partition in {r.partition for r in records}:  # each partition whole and in order
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))

    # Incremental: the second backup copies only the new blobs; a damaged blob is listed, not copied.
    second = [os.urandom(500) for _ in range(5)]
    ingest(anchoring, second)
    damaged = digest_of(second[0])
    path = BlobStore(anchoring.evidence_path).path(damaged)
    path.chmod(0o644)
    path.write_bytes(b"rot")
    two = cli_json("backup", "create", "--output", str(root))
    assert (two["artifacts"], two["blobs_copied"], two["blobs_already_there"]) == (24, 4, 20)
    assert two["missing_blobs"] == [damaged] and not pool.exists(damaged)

    # Listed, signatures checked; and each backup is a fact on the log.
    listed = json.loads(
        run_cli("backup", "list", "--type", "evidence-locker", "--root", str(root), "--format", "json").stdout
    )
    assert [(b["backup_id"], b["signature"]) for b in listed] == [
        (one["backup_id"], "ok"),
        (two["backup_id"], "ok"),
    ]
    recorded = [e for e in events(anchoring, 25 + 2) if isinstance(e, BackupCreated)]
    assert {(e.backup_id, e.manifest_sha256) for e in recorded} == {
        (one["backup_id"], one["manifest_sha256"]),
        (two["backup_id"], two["manifest_sha256"]),
    }


def test_backup_needs_the_anchor_key_and_a_known_type(settings: Settings) -> None:
    no_key = run_cli("backup", "create", check=False)
    assert no_key.returncode == 2 and "stella init" in no_key.stderr
    wrong = run_cli("backup", "create", "--type", "database", check=False)
    assert wrong.returncode == 2 and "evidence-locker" in wrong.stderr
