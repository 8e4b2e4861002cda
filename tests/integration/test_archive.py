"""Archive on a real locker: old evidence moves to a checked archive file, its local blobs go once
`artifact.archived` is on the log, its proofs still verify, and it comes back from the archive;
an archive with a flipped byte anywhere is refused, and nothing changes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from commands.sending import send_and_await_event
from locker import requests
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArchiveRecorded
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import dead_letters, index_count, produce, submission, wait_for
from tests.integration.test_retention import rfc6962_root

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


def ingest(settings: Settings, contents: list[bytes], kind: str = "sbom") -> list[str]:
    records = [(digest_of(c).encode(), submission(c, kind=kind)) for c in contents]
    before = index_count(settings)
    asyncio.run(produce(settings, Topics(settings.topic_prefix).submissions, records))
    wait_for(lambda: index_count(settings) == before + len(records), what="all indexed")
    return [digest_of(c) for c in contents]


def members(path: Path) -> dict[str, bytes]:
    """The archive's members, read with the standard library and zstd's own binding."""
    raw = path.read_bytes()
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def test_archive_moves_old_evidence_out_and_recover_brings_it_back(
    anchoring: Settings, tmp_path: Path
) -> None:
    old = ingest(anchoring, [os.urandom(300 + i) for i in range(5)])
    held, corrupted = old[0], old[1]
    run_cli("evidence", "hold", "set", held, "--reason", "case 12")
    run_cli("evidence", "mark-corrupted", "--id", corrupted, "--reason", "hash-mismatch")
    time.sleep(2.1)
    young = ingest(anchoring, [os.urandom(200)], kind="scan")
    blobs = BlobStore(anchoring.evidence_path)

    target = tmp_path / "out" / "evidence-2026.tar.zst"
    done = cli_json("evidence", "archive", "--older-than", "2s", "--output", str(target), "--compress")
    moved = old[2:]
    assert done["artifacts"] == 3 and done["compressed"] and done["output"] == str(target)
    assert (done["held_skipped"], done["not_good_skipped"], done["skipped"]) == (1, 1, {})
    assert (
        done["deletions_pending"] == 0
        and done["sha256"] == "sha256:" + hashlib.sha256(target.read_bytes()).hexdigest()
    )
    assert not any(blobs.exists(i) for i in moved)
    assert all(blobs.exists(i) for i in [held, corrupted, *young])

    # Read with tools that are not the locker's: every blob is there, named by its digest.
    found = members(target)
    for artifact_id in moved:
        data = found["blobs/sha256/" + artifact_id.removeprefix("sha256:")]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == artifact_id
    manifest = json.loads(found["manifest.json"])
    assert {a["artifact_id"] for a in manifest["artifacts"]} == set(moved)
    assert manifest["anchor_id"] == done["anchor"]

    # Status says archived, and where; proofs of the archived events verify independently.
    record = cli_json("evidence", "index", "lookup", moved[0])
    assert record["status"] == "archived" and str(target) in record["status_reason"]
    inspected = cli_json("evidence", "inspect", moved[0])
    assert inspected["archive"] == {
        "archive_id": done["archive_id"],
        "location": str(target),
        "sha256": done["sha256"],
    }
    anchor = json.loads(found["anchor.json"])
    roots = {h["partition"]: h for h in anchor["anchor"]["partitions"]}
    lines = [
        json.loads(line)
        for name, raw in found.items()
        if name.startswith("events/")
        for line in raw.splitlines()
    ]
    history = next(h for h in lines if h["artifact_id"] == moved[0])
    for event in history["events"]:
        value = base64.b64decode(event["value"])
        leaf = hashlib.sha256(b"\x00" + value).digest()
        head = roots[event["partition"]]
        root = rfc6962_root(
            event["leaf_index"], head["tree_size"], leaf, [base64.b64decode(p) for p in event["proof"]]
        )
        assert base64.b64encode(root).decode() == head["root"]
    assert json.loads(base64.b64decode(history["events"][0]["value"]))["type"] == "artifact.ingested"
    proof = cli_json("evidence", "proof", moved[0])  # still served from the log and the trees
    assert json.loads(base64.b64decode(proof["leaf_value"]))["artifact_id"] == moved[0]

    # Verification skips archived artifacts without calling them missing.
    run = cli_json("evidence", "verify", "--mode", "full")["run"]
    assert run["planned"] == 3 and run["missing"] == 0

    # Nothing that old: no file is written.
    again = cli_json("evidence", "archive", "--older-than", "1h", "--output", str(tmp_path / "second.tar"))
    assert again["artifacts"] == 0 and again["output"] == "" and not (tmp_path / "second.tar").exists()

    # Back from the archive: checked, restored, recorded.
    back = cli_json("evidence", "recover", "--id", moved[0], "--source", "archive", "--input", str(target))
    assert back["matches_log"] is True and back["record"]["status"] == "ingested"
    assert blobs.hash_of(moved[0]) == moved[0]
    assert "recovered from the archive" in cli_json("evidence", "index", "lookup", moved[0])["status_reason"]


def test_an_archive_with_a_flipped_byte_is_refused_on_recovery(anchoring: Settings, tmp_path: Path) -> None:
    ids = ingest(anchoring, [os.urandom(700 + i) for i in range(3)])
    time.sleep(1.1)
    target = tmp_path / "evidence.tar"
    done = cli_json("evidence", "archive", "--older-than", "1s", "--output", str(target))
    assert done["artifacts"] == 3 and not done["compressed"]
    good = target.read_bytes()
    blobs = BlobStore(anchoring.evidence_path)
    blob_at = good.index(blobs_member := b"blobs/sha256/" + ids[0].removeprefix("sha256:").encode())
    assert blobs_member
    # A byte of the wanted blob, of another blob's header, of the manifest, of tar padding.
    places = [blob_at + 512 + 10, blob_at + 100, good.index(b'"artifacts"'), len(good) - 700]
    for place in places:
        flipped = bytearray(good)
        flipped[place] ^= 0x01
        bad = tmp_path / f"flipped-{place}.tar"
        bad.write_bytes(bytes(flipped))
        proc = run_cli(
            "evidence", "recover", "--id", ids[0], "--source", "archive", "--input", str(bad), check=False
        )
        assert proc.returncode == 5 and "archive-damaged" in proc.stderr, (place, proc.stderr)
        assert not blobs.exists(ids[0])
    assert cli_json("evidence", "index", "lookup", ids[0])["status"] == "archived"

    # Compressed, a flipped byte breaks the frame or its checksum.
    packed = tmp_path / "packed.tar.zst"
    packed.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(good))
    raw = bytearray(packed.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    packed.write_bytes(bytes(raw))
    proc = run_cli(
        "evidence", "recover", "--id", ids[0], "--source", "archive", "--input", str(packed), check=False
    )
    assert proc.returncode == 5 and "archive-damaged" in proc.stderr

    # The intact file recovers.
    run_cli("evidence", "recover", "--id", ids[0], "--source", "archive", "--input", str(target))
    assert blobs.hash_of(ids[0]) == ids[0]


def test_forged_archive_commands_are_refused_or_change_nothing_they_may_not(anchoring: Settings) -> None:
    """What a writer of `evidence.commands` can do with `archive.record` (ACLs are #12): malformed
    ones are dead-lettered; a well-formed one cannot archive a held or unknown artifact."""
    [good, held] = ingest(anchoring, [os.urandom(400), os.urandom(401)])
    run_cli("evidence", "hold", "set", held, "--reason", "case 3")
    anchor = cli_json("evidence", "anchor", "create")["anchor_id"]
    template = requests.record_archive("ela-x", "/a/b.tar", "sha256:" + "7e" * 32, anchor, [good])
    bad = [
        msgspec.structs.replace(template, location="relative/b.tar"),
        msgspec.structs.replace(template, location="/a/\x1b[2Jb.tar"),
        msgspec.structs.replace(template, archive_sha256="md5:x"),
        msgspec.structs.replace(template, artifact_ids=[good] * 20_001),
        msgspec.structs.replace(template, anchor_id="sha256:" + "00" * 32),
    ]
    topics = Topics(anchoring.topic_prefix)
    asyncio.run(produce(anchoring, topics.commands, [(b"x", requests.encode(c)) for c in bad]))
    letters = dead_letters(anchoring, len(bad))
    assert [d.reason for d, _ in letters] == ["schema-invalid"] * 4 + ["not-found"]

    forged = requests.record_archive(
        "ela-x", "/a/b.tar", "sha256:" + "7e" * 32, anchor, [held, "sha256:" + "1" * 64]
    )
    _, _, event = send_and_await_event(anchoring, forged, forged.command_id.encode(), "forged")
    assert isinstance(event, ArchiveRecorded) and event.archived == 0 and len(event.skipped) == 2
    assert BlobStore(anchoring.evidence_path).exists(held)
    assert cli_json("evidence", "index", "lookup", held)["status"] == "ingested"
