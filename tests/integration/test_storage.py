"""Changing `EvidenceLocker:Path` under indexed artifacts: the service refuses to start, saying why
and what to do; `stella storage migrate` moves the blobs, and the service serves them from there."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from commands import service
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, produce, submission, wait_for


def ingest(settings: Settings, contents: list[bytes]) -> None:
    before = index_count(settings)
    topic = Topics(settings.topic_prefix).submissions
    asyncio.run(produce(settings, topic, [(digest_of(c).encode(), submission(c)) for c in contents]))
    wait_for(lambda: index_count(settings) == before + len(contents), what="ingest")


def served(settings: Settings, artifact_id: str) -> bytes:
    with urllib.request.urlopen(f"{settings.api_url}/artifacts/{artifact_id}", timeout=10) as resp:
        return bytes(resp.read())


def test_a_changed_evidence_path_refuses_to_start_until_the_blobs_are_migrated(
    running: Settings, tmp_path
) -> None:
    old, new = running.evidence_path, tmp_path / "new-disk" / "evidence"
    contents = [b"kept evidence %d" % i for i in range(7)]
    ingest(running, contents)
    service.stop(running)

    run_cli("config", "set", "EvidenceLocker:Path", str(new))
    started = time.monotonic()
    refused = run_cli("service", "start", check=False)
    assert refused.returncode == 4 and refused.stdout == "", refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: service exited during start-up (exit code 4): refusing to start")
    assert f"EvidenceLocker:Path = {new}, which was {old} when the service last ran" in line
    assert f"stella config set EvidenceLocker:Path {old}" in line
    assert f"stella storage migrate --to {new}" in line
    assert time.monotonic() - started < 60  # an answer, not a wait for health that never comes
    assert not service.status(running)["running"] and not new.exists()

    run_cli("config", "set", "EvidenceLocker:Path", str(old))
    moved = json.loads(run_cli("storage", "migrate", "--to", str(new), "--format", "json").stdout)
    assert (moved["source"], moved["target"]) == (str(old), str(new))
    assert moved["blobs"] == moved["copied"] == moved["verified"] == len(contents)
    got = json.loads(run_cli("config", "get", "EvidenceLocker:Path", "--format", "json").stdout)
    assert got["value"] == str(new)

    run_cli("service", "start")
    for content in contents:
        assert served(running, digest_of(content)) == content
    refused = run_cli("storage", "migrate", "--to", str(tmp_path / "third"), check=False)
    assert refused.returncode == 5 and "service is running" in refused.stderr

    later = b"ingested after the migration"
    ingest(running, [later])
    assert BlobStore(new).exists(digest_of(later)) and not BlobStore(old).exists(digest_of(later))
