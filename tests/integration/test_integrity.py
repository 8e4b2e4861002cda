"""Integrity on a real broker, real RocksDB and real blobs: verification runs, reports, streaming
outcomes, corruption (runbook SP-001 and INC-001)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from commands import access, service
from commands import anchors as anchor_ops
from locker import config
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArtifactVerificationFailed, VerificationCompleted, VerificationStarted
from tests.conftest import run_cli
from tests.integration.helpers import events, ingest, scrape, wait_for

pytestmark = pytest.mark.integration


def cli_json(*args: str, code: int | None = 0) -> Any:
    """`stella ... --format json`; `code` None: 0 or 1, whichever the findings call for."""
    proc = run_cli(*args, "--format", "json", check=False)
    allowed = (0, 1) if code is None else (code,)
    assert proc.returncode in allowed, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def damage(blobs: BlobStore, ids: list[str]) -> dict[str, str]:
    """Flip a byte, truncate, delete, and swap two blobs; artifact id -> expected outcome."""
    flip, cut, gone, left, right = ids[:5]
    data = bytearray(blobs.path(flip).read_bytes())
    data[len(data) // 2] ^= 0x01
    for artifact_id in (flip, cut, left, right):
        blobs.path(artifact_id).chmod(0o644)
    blobs.path(flip).write_bytes(bytes(data))
    blobs.path(cut).write_bytes(blobs.path(cut).read_bytes()[:10])
    blobs.path(gone).unlink()
    swapped = blobs.path(left).read_bytes(), blobs.path(right).read_bytes()
    blobs.path(left).write_bytes(swapped[1])
    blobs.path(right).write_bytes(swapped[0])
    return {flip: "mismatch", cut: "mismatch", gone: "missing", left: "mismatch", right: "mismatch"}


def http(settings: Settings, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(settings.api_url + path, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_full_and_quick_runs_find_every_damaged_blob(running: Settings) -> None:
    contents = [os.urandom(200 + i) for i in range(40)]
    ingest(running, contents)
    ids = sorted(digest_of(c) for c in contents)
    clean = cli_json("evidence", "verify", "--mode", "full")
    assert clean["run"]["ok"] == 40 and clean["run"]["failed"] == 0 and clean["artifacts"] == []

    expected = damage(BlobStore(running.evidence_path), ids)

    # Quick runs of 25% check the longest unverified first: four of them cover everything.
    found: dict[str, str] = {}
    for _ in range(4):
        report = cli_json("evidence", "verify", "--mode", "quick", "--sample", "25%", code=None)
        assert report["run"]["planned"] == 10 and report["run"]["mode"] == "quick"
        assert report["run"]["sample"] == "25%" and isinstance(report["run"]["seed"], int)
        found |= {a["artifact_id"]: a["outcome"] for a in report["artifacts"]}
    assert found == expected

    full = cli_json("evidence", "verify", "--mode", "full", code=1)
    run = full["run"]
    assert (run["planned"], run["ok"], run["mismatch"], run["missing"], run["unreadable"]) == (
        40,
        35,
        4,
        1,
        0,
    )
    assert {a["artifact_id"]: a["outcome"] for a in full["artifacts"]} == expected
    assert run["completed_at"] and run["outcomes_digest"].startswith("sha256:")
    metrics = scrape(running)
    assert metrics["stella_evidence_integrity_failures_total"] == 10  # 5 by the quick runs, 5 by this one
    assert metrics['stella_evidence_verification_last_run_artifacts{mode="full",outcome="missing"}'] == 1
    assert metrics['stella_evidence_verifications_total{outcome="mismatch"}'] >= 1

    # The runbook's reports.
    latest = cli_json("evidence", "verify-report", "--latest", "--filter", "failed", code=1)
    assert latest["run"]["run_id"] == run["run_id"] and latest["artifacts"] == full["artifacts"]
    missing = cli_json("evidence", "verify-report", "--run", run["run_id"], "--filter", "missing", code=1)
    assert [a["artifact_id"] for a in missing["artifacts"]] == [ids[2]]
    ok = cli_json("evidence", "verify-report", "--latest", "--filter", "ok", code=1)
    assert sorted(a["artifact_id"] for a in ok["artifacts"]) == sorted(set(ids) - set(expected))
    table = run_cli("evidence", "verify-report", "--latest", check=False)
    assert table.returncode == 1 and run["run_id"] in table.stdout + table.stderr

    # The log: started and completed once per run, one failure event per failed artifact and run.
    logged = events(running, 40 + 6 * 2 + 5 + 5)  # ingests, 6 runs, failures of quick and full runs
    runs = [e for e in logged if isinstance(e, VerificationCompleted)]
    assert len([e for e in logged if isinstance(e, VerificationStarted)]) == len(runs) == 6
    final = next(e for e in runs if e.run_id == run["run_id"])
    assert final.failed == 5 and final.outcomes_digest == run["outcomes_digest"]
    failures = [e for e in logged if isinstance(e, ArtifactVerificationFailed) and e.run_id == run["run_id"]]
    assert {e.artifact_id: e.outcome for e in failures} == expected

    # A failed artifact is not served as if it were good; a good one is.
    status, body = http(running, f"/artifacts/{ids[0]}")
    assert status == 409 and json.loads(body)["error"] == "verification-failed"
    good = sorted(set(ids) - set(expected))[0]
    assert http(running, f"/artifacts/{good}")[0] == 200
    assert cli_json("evidence", "inspect", ids[2])["status"] == "verification-failed"


def test_an_operator_marks_an_artifact_corrupted(running: Settings) -> None:
    contents = [b"evidence %d" % i for i in range(3)]
    ingest(running, contents)
    target = digest_of(contents[0])
    marked = cli_json("evidence", "mark-corrupted", "--id", target, "--reason", "hash-mismatch")
    assert (marked["status"], marked["status_reason"]) == ("corrupted", "hash-mismatch")
    status, body = http(running, f"/artifacts/{target}")
    answer = json.loads(body)  # problem JSON, its code and detail where they were
    assert status == 409 and (answer["status"], answer["error"], answer["detail"]) == (
        409,
        "corrupted",
        "hash-mismatch",
    )
    assert http(running, f"/artifacts/{digest_of(contents[1])}")[0] == 200
    unknown = run_cli(
        "evidence", "mark-corrupted", "--id", "sha256:" + "0" * 64, "--reason", "x", check=False
    )
    assert unknown.returncode == 1 and "not found" in unknown.stderr


def test_the_api_refuses_a_blob_that_changed_since_its_last_run(running: Settings) -> None:
    contents = [b"served %d" % i for i in range(2)]
    ingest(running, contents)
    target = digest_of(contents[0])
    path = BlobStore(running.evidence_path).path(target)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    status, body = http(running, f"/artifacts/{target}")
    assert status == 409 and json.loads(body)["error"] == "integrity-mismatch"


def test_a_streaming_consumer_sees_every_outcome_of_a_run_once(running: Settings) -> None:
    contents = [os.urandom(64) for _ in range(30)]
    ingest(running, contents)
    report = cli_json("evidence", "verify", "--mode", "full")
    run_id = report["run"]["run_id"]
    consumer = Consumer(
        {
            "bootstrap.servers": running.bootstrap,
            **running.kafka_auth().librdkafka(),  # as the operator, in a group of its own (README)
            "group.id": f"{running.group_id}-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([running.topic_prefix + "evidence.verifications"])
    seen: list[dict[str, Any]] = []
    try:
        for _ in range(200):
            message = consumer.poll(0.5)
            if message is None or message.error():
                if len(seen) >= 30:
                    break
                continue
            seen.append(json.loads(message.value()))
    finally:
        consumer.close()
    mine = [r for r in seen if r["run_id"] == run_id]
    assert sorted(r["artifact_id"] for r in mine) == sorted(digest_of(c) for c in contents)
    assert {(r["type"], r["schema_version"], r["outcome"]) for r in mine} == {
        ("verification.outcome", 1, "ok")
    }


def test_verify_usage_errors_exit_2(settings: Settings) -> None:
    for args in (
        ("--mode", "sometimes"),
        ("--mode", "quick", "--sample", "150%"),
        ("--mode", "full", "--sample", "10"),
    ):
        proc = run_cli("evidence", "verify", *args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
    proc = run_cli("evidence", "verify-report", check=False)
    assert proc.returncode == 2 and "--latest" in proc.stderr
    none = run_cli("evidence", "verify-report", "--latest", check=False)
    assert none.returncode == 1 and "no verification run" in none.stderr


@pytest.fixture
def replicated(
    locker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """A running service with a replica store and an anchor signing key."""
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__REPLICAPATH", str(tmp_path / "replica"))
    s = config.load()
    BlobStore(s.evidence_path).ensure()
    anchor_ops.ensure_key(s)
    access.set_up(s)
    service.start(s)
    try:
        yield s
    finally:
        service.stop(s)


def test_recovery_from_a_good_replica_and_refusal_of_a_bad_one(replicated: Settings) -> None:
    contents = [os.urandom(300) for _ in range(6)]
    ingest(replicated, contents)
    ids = sorted(digest_of(c) for c in contents)
    wait_for(
        lambda: all(cli_json("evidence", "inspect", i)["replicated_at"] for i in ids), what="replication"
    )
    replica = BlobStore(replicated.replica_path)  # type: ignore[arg-type]
    assert all(replica.hash_of(i) == i for i in ids)

    primary = BlobStore(replicated.evidence_path)
    damage(primary, ids)  # ids[0..4]: flipped, truncated, deleted, swapped x2
    assert cli_json("evidence", "verify", "--mode", "full", code=1)["run"]["failed"] == 5
    for artifact_id in ids[:5]:
        restored = cli_json("evidence", "recover", "--id", artifact_id, "--source", "replica")
        assert restored["status"] == "ingested" and "recovered from the replica" in restored["status_reason"]
        assert primary.hash_of(artifact_id) == artifact_id
    status, body = http(replicated, f"/artifacts/{ids[0]}")
    assert status == 200 and digest_of(body) == ids[0]
    assert cli_json("evidence", "verify", "--mode", "full")["run"]["ok"] == 6

    # A replica that is itself bad is refused, and nothing changes.
    bad = ids[5]
    for store in (primary, replica):
        store.path(bad).chmod(0o644)
        store.path(bad).write_bytes(b"rotten")
    refused = run_cli("evidence", "recover", "--id", bad, "--source", "replica", check=False)
    assert refused.returncode == 5 and "replica-bad" in refused.stderr, refused.stderr
    assert primary.path(bad).read_bytes() == b"rotten"
    missing = run_cli("evidence", "recover", "--id", "sha256:" + "1" * 64, "--source", "replica", check=False)
    assert missing.returncode == 1


def test_recover_without_a_replica_is_a_usage_error(settings: Settings) -> None:
    proc = run_cli("evidence", "recover", "--id", "sha256:" + "1" * 64, "--source", "replica", check=False)
    assert proc.returncode == 2 and "EvidenceLocker:ReplicaPath" in proc.stderr


def test_inspect_storage_check_and_provenance_of_a_damaged_artifact(replicated: Settings) -> None:
    contents = [b"provenance %d" % i for i in range(2)]
    ingest(replicated, contents)
    target, other = digest_of(contents[0]), digest_of(contents[1])
    wait_for(lambda: cli_json("evidence", "inspect", target)["replicated_at"] is not None, what="replication")
    anchor = cli_json("evidence", "anchor", "create")["anchor_id"]
    cli_json("evidence", "verify", "--mode", "full")
    path = BlobStore(replicated.evidence_path).path(target)
    path.chmod(0o644)
    path.write_bytes(b"provenance 9")
    cli_json("evidence", "mark-corrupted", "--id", target, "--reason", "hash-mismatch")

    seen = cli_json("evidence", "inspect", target, "--rehash")
    assert seen["status"] == "corrupted" and seen["storage"]["path"] == str(path)
    assert seen["replica"]["configured"] and seen["replica"]["present"]
    assert seen["last_verification"]["outcome"] == "ok"
    rehash = seen["rehash"]
    assert rehash["agree"] and not rehash["matches_id"] and len(rehash["results"]) == 2
    assert rehash["results"][0]["digest"] == digest_of(b"provenance 9")

    check = cli_json("evidence", "storage", "check", target, code=1)
    assert not check["ok"] and check["primary"]["digest_ok"] is False and check["replica"]["ok"]
    assert cli_json("evidence", "storage", "check", other)["ok"]

    steps = cli_json("evidence", "provenance", "show", target)["steps"]
    assert [s["what"] for s in steps] == ["ingested", "replicated", "verified ok", "marked corrupted"]
    assert steps[0]["anchor"] == anchor and steps[0]["topic"].endswith("evidence.events")
    assert steps[2]["anchor"] is None and steps[2]["topic"].endswith("evidence.verifications")
    assert steps[3]["actor"] and steps[3]["detail"] == "hash-mismatch"
    table = run_cli("evidence", "provenance", "show", target)
    assert "marked corrupted" in table.stdout


def test_auto_recover_restores_a_failed_artifact_from_a_good_replica(
    replicated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = [b"auto %d" % i for i in range(3)]
    ingest(replicated, contents)
    ids = [digest_of(c) for c in contents]
    wait_for(
        lambda: all(cli_json("evidence", "inspect", i)["replicated_at"] for i in ids), what="replication"
    )
    monkeypatch.setenv("STELLA_VERIFICATION__AUTORECOVER", "true")
    service.stop(replicated)
    service.start(config.load())
    primary = BlobStore(replicated.evidence_path)
    primary.path(ids[0]).unlink()
    found = cli_json("evidence", "verify", "--mode", "full", code=1)
    assert [(a["artifact_id"], a["outcome"]) for a in found["artifacts"]] == [(ids[0], "missing")]
    wait_for(lambda: cli_json("evidence", "inspect", ids[0])["status"] == "ingested", what="the recovery")
    assert primary.hash_of(ids[0]) == ids[0]
    assert "recovered from the replica" in cli_json("evidence", "inspect", ids[0])["status_reason"]
    assert cli_json("evidence", "verify", "--mode", "full")["run"]["ok"] == 3
