"""`stella backup create|list` on a real broker, real blobs and the real signing key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from commands import service
from locker import backups, config, signing
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import BackupCreated, BackupRestored
from streams.kafka import end_offsets
from streams.topics import Topics
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

    # Self-describing: every file is in the manifest with its digest, every blob is in the pack,
    # and the manifest's signature checks out with the anchor key.
    folder = Path(one["path"])
    raw = (folder / "manifest.json").read_bytes()
    manifest = backups.decode_manifest(raw)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == one["manifest_sha256"]
    for name, entry in manifest.files.items():
        assert "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry.sha256
    assert {"events.records", "anchors.records", "config.toml", "blobs.pack", "blobs.index"} <= set(
        manifest.files
    )
    assert any(name.startswith("anchor-backups/") for name in manifest.files)
    placed = backups.decode_blob_index((folder / "blobs.index").read_bytes())
    assert sorted(b.artifact_id for b in placed) == sorted(digest_of(c) for c in first)
    assert {b.pack for b in placed} == {one["backup_id"]} and set(manifest.packs) == {one["backup_id"]}
    pack = (folder / "blobs.pack").read_bytes()
    assert all(digest_of(pack[b.offset : b.offset + b.size]) == b.artifact_id for b in placed)
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
    assert two["missing_blobs"] == [damaged] and two["earlier_packs"] == [one["backup_id"]]
    placed_two = backups.decode_blob_index((Path(two["path"]) / "blobs.index").read_bytes())
    assert damaged not in {b.artifact_id for b in placed_two}
    assert len((Path(two["path"]) / "blobs.pack").read_bytes()) == 4 * 500  # only the new blobs

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

    # The second backup reads the first one's pack: damage it, and restoring the second stops,
    # naming that pack, before it looks at anything else.
    first_pack = folder / "blobs.pack"
    data = bytearray(first_pack.read_bytes())
    data[7] ^= 0xFF
    first_pack.write_bytes(bytes(data))
    args = ["--backup-id", two["backup_id"], "--backup-root", str(root), "--target", str(tmp_path / "t")]
    refused = run_cli("evidence", "restore", *args, check=False)
    assert refused.returncode == 1 and str(first_pack) in refused.stderr, refused.stderr


def test_backup_needs_the_anchor_key_and_a_known_type(settings: Settings) -> None:
    no_key = run_cli("backup", "create", check=False)
    assert no_key.returncode == 2 and "stella init" in no_key.stderr
    wrong = run_cli("backup", "create", "--type", "database", check=False)
    assert wrong.returncode == 2 and "evidence-locker" in wrong.stderr


def _fresh_broker_view(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The same locker home against an empty broker: new topics, and consumer groups that have never
    seen the old ones (a new topic prefix and group id stand for a new broker)."""
    tag = os.urandom(4).hex()
    monkeypatch.setenv("STELLA_KAFKA__TOPICPREFIX", f"restored-{tag}.")
    monkeypatch.setenv("STELLA_KAFKA__GROUPID", f"restored-{tag}")
    return config.load()


def test_disaster_recovery_drill(
    anchoring: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = [os.urandom(300) for _ in range(20)]
    ingest(anchoring, contents)
    anchor = cli_json("evidence", "anchor", "create")
    live = cli_json("evidence", "index", "status", "--checksum")["checksum"]
    made = cli_json("backup", "create", "--output", str(tmp_path / "backups"))
    assert made["index_checksum"] == live

    # Disaster: the service, the topics and the storage are gone.
    service.stop(anchoring)
    shutil.rmtree(anchoring.evidence_path)
    fresh = _fresh_broker_view(monkeypatch)
    target = tmp_path / "new-disk" / "evidence"
    args = [
        "evidence",
        "restore",
        "--backup-id",
        made["backup_id"],
        "--backup-root",
        str(tmp_path / "backups"),
    ]

    # A damaged backup stops before anything is written, naming the file.
    damaged_root = tmp_path / "damaged"
    shutil.copytree(tmp_path / "backups", damaged_root)
    stream = damaged_root / made["backup_id"] / "events.records"
    data = bytearray(stream.read_bytes())
    data[len(data) // 2] ^= 1
    stream.write_bytes(bytes(data))
    damaged_args = [*args[:-1], str(damaged_root)]  # the same restore, from the damaged copy
    broken = run_cli(*damaged_args, "--target", str(target), check=False)
    assert broken.returncode == 1 and "events.records" in broken.stderr, broken.stderr
    assert not target.exists() and not sum(
        asyncio.run(end_offsets(fresh.acting_as("admin"), Topics(fresh.topic_prefix).events)).values()
    )

    restored = cli_json(*args, "--target", str(target))
    assert (restored["events"], restored["anchors"], restored["artifacts"]) == (20, 1, 20)
    assert restored["matches_backup"] and restored["index_checksum"] == made["index_checksum"]
    recorded = [e for e in events(fresh, 20 + 1) if isinstance(e, BackupRestored)]
    assert [(e.backup_id, e.events, e.anchors) for e in recorded] == [(made["backup_id"], 20, 1)]

    # Onto topics that now hold records: refused, nothing changes.
    again = run_cli(*args, "--target", str(tmp_path / "other"), check=False)
    assert again.returncode == 5 and "already holds" in again.stderr

    run_cli("config", "set", "EvidenceLocker:Path", str(target))
    service.start(config.load())
    try:
        assert cli_json("evidence", "index", "status", "--checksum")["checksum"] == made["index_checksum"]
        assert cli_json("evidence", "verify", "--mode", "full")["run"]["ok"] == 20
        assert cli_json("evidence", "anchor", "verify", "--all")["verified"]
        ingest(config.load(), [b"after the restore"])
        after = cli_json("evidence", "anchor", "create")
        assert after["chain_id"] == anchor["chain_id"] and after["sequence"] == anchor["sequence"] + 1
        assert cli_json("evidence", "anchor", "verify", "--all")["verified"]
    finally:
        service.stop(config.load())


def test_a_restore_that_would_fork_the_log_needs_a_new_chain(
    anchoring: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(anchoring, [b"early %d" % i for i in range(5)])
    made = cli_json("backup", "create", "--output", str(tmp_path / "backups"))
    ingest(anchoring, [b"late %d" % i for i in range(5)])
    old_chain = cli_json("evidence", "anchor", "create")["chain_id"]  # covers events the backup lacks
    service.stop(anchoring)
    _fresh_broker_view(monkeypatch)
    backup = ["--backup-id", made["backup_id"], "--backup-root", str(tmp_path / "backups")]
    args = ["evidence", "restore", *backup, "--target", str(tmp_path / "target")]
    refused = run_cli(*args, check=False)
    assert refused.returncode == 5 and "fork" in refused.stderr and "--new-chain" in refused.stderr
    assert not (tmp_path / "target").exists()
    accepted = cli_json(*args, "--new-chain", "restored from an older backup")
    assert accepted["forks"] and accepted["matches_backup"]
    # The restore started a new chain that names the break, before the service ever runs; the
    # service then takes it as the chain to continue.
    run_cli("config", "set", "EvidenceLocker:Path", str(tmp_path / "target"))
    service.start(config.load())
    try:
        first = cli_json("evidence", "anchor", "inspect", accepted["new_chain_anchor"])
        assert first["chain_id"] != old_chain and "restored from an older backup" in json.dumps(first)
        after = cli_json("evidence", "anchor", "create")
        assert (after["chain_id"], after["sequence"]) == (first["chain_id"], 1)
        assert cli_json("evidence", "anchor", "verify", "--all")["verified"]
    finally:
        service.stop(config.load())
