"""The locker end to end: CLI -> submissions -> blob -> event -> index -> CLI and HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from locker.config import Settings
from locker.digests import digest_of
from tests.conftest import run_cli
from tests.integration.helpers import bearer, wait_for

SUBJECT = "sha256:" + "ab" * 32


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ingest_query_and_serve(running: Settings, tmp_path: Path) -> None:
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6"}))
    vex = tmp_path / "app.vex.json"
    vex.write_text(json.dumps({"statements": []}))
    out = run_cli(
        "evidence",
        "ingest",
        str(sbom),
        str(vex),
        "--kind",
        "sbom",
        "--subject",
        SUBJECT,
        "--producer",
        "ci",
        "--format",
        "json",
    )
    results = json.loads(out.stdout)
    assert [r["status"] for r in results] == ["ingested", "ingested"]
    sbom_id = digest_of(sbom.read_bytes())
    assert results[0]["artifact_id"] == results[0]["digest"] == sbom_id

    again = json.loads(run_cli("evidence", "ingest", str(sbom), "--format", "json").stdout)
    assert again == [{"file": str(sbom), "artifact_id": sbom_id, "digest": sbom_id, "status": "duplicate"}]

    assert run_cli("evidence", "exists", sbom_id).returncode == 0
    missing = "sha256:" + "0" * 64
    assert run_cli("evidence", "exists", missing, check=False).returncode == 1
    bad = run_cli("evidence", "exists", "sha256:../../etc/passwd", check=False)
    assert bad.returncode == 5 and "error:" in bad.stderr and "Traceback" not in bad.stderr

    meta = json.loads(run_cli("evidence", "inspect", sbom_id, "--format", "json").stdout)
    assert meta["artifact_id"] == sbom_id and meta["digest"] == sbom_id
    assert meta["size"] == sbom.stat().st_size
    assert meta["kind"] == "sbom" and meta["subjects"] == [SUBJECT] and meta["status"] == "ingested"
    assert meta["ingested_at"].endswith("Z")
    nf = run_cli("evidence", "inspect", missing, check=False)
    assert nf.returncode == 1 and "not found" in nf.stderr

    lookup = json.loads(run_cli("evidence", "index", "lookup", sbom_id, "--format", "json").stdout)
    assert lookup["indexed"] is True and lookup["event_offset"] >= 0

    status = json.loads(run_cli("evidence", "index", "status", "--format", "json").stdout)
    assert status["entries"] == 2 and status["lag"] == 0
    assert {p["partition"] for p in status["partitions"]} == set(range(running.partitions))
    assert sum(p["merkle_tree_size"] for p in status["partitions"]) == sum(
        p["end_offset"] for p in status["partitions"]
    )
    storage = json.loads(run_cli("evidence", "status", "--format", "json").stdout)
    assert storage["storage"]["blobs"] == 2 and storage["storage"]["temp_files"] == 0

    svc = json.loads(run_cli("service", "status", "--format", "json").stdout)
    assert svc["healthy"] is True and svc["api_url"] == running.api_url

    api = running.api_url
    assert http(f"{api}/artifacts/{sbom_id}") == (200, sbom.read_bytes())
    code, body = http(f"{api}/artifacts/{sbom_id}/meta")
    assert code == 200 and json.loads(body)["kind"] == "sbom"
    assert http(f"{api}/artifacts?subject={SUBJECT}")[0] == 401  # it lists artifacts: the token
    code, body = http(f"{api}/artifacts?subject={SUBJECT}", bearer(running))
    assert code == 200 and {a["artifact_id"] for a in json.loads(body)["artifacts"]} == {
        sbom_id,
        digest_of(vex.read_bytes()),
    }
    code, body = http(f"{api}/artifacts/{missing}")
    assert code == 404 and json.loads(body)["error"] == "not-found"
    assert http(f"{api}/healthz")[0] == 200


def test_cli_refuses_bad_usage(settings: Settings, tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text("{}")
    r = run_cli("evidence", "ingest", str(f), "--kind", "banana", check=False)
    assert r.returncode == 2 and "--kind" in r.stderr
    r = run_cli("evidence", "ingest", str(tmp_path / "nope"), check=False)
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = run_cli("evidence", "ingest", str(f), "--subject", "md5:abc", check=False)
    assert r.returncode == 5 and "invalid-digest" in r.stderr


def test_ingest_without_service_times_out_with_queued_ids(
    settings: Settings, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("STELLA_COMMANDS__TIMEOUT", "2")
    f = tmp_path / "x.json"
    f.write_text("{}")
    r = run_cli("evidence", "ingest", str(f), check=False)
    assert r.returncode == 3 and "queued" in r.stderr


def test_a_resubmission_restores_a_missing_blob(running: Settings, tmp_path: Path) -> None:
    """Content that is indexed but whose blob is gone is stored again, not called a duplicate."""
    from locker.cas import BlobStore

    doc = tmp_path / "lost.json"
    doc.write_text(json.dumps({"lost": True}))
    artifact_id = digest_of(doc.read_bytes())
    first = json.loads(run_cli("evidence", "ingest", str(doc), "--format", "json").stdout)
    assert first[0]["status"] == "ingested"
    blobs = BlobStore(running.evidence_path)
    blob = blobs.path(artifact_id)
    blob.chmod(0o644)
    blob.unlink()
    # `ingest` answers once the event is on the log; the index may apply it a moment later.
    wait_for(lambda: http(f"{running.api_url}/artifacts/{artifact_id}")[0] != 404, what="indexed")
    assert http(f"{running.api_url}/artifacts/{artifact_id}")[0] == 409  # indexed, blob missing

    again = json.loads(run_cli("evidence", "ingest", str(doc), "--format", "json").stdout)
    assert again[0]["status"] == "ingested"
    blobs.verify(artifact_id)
    assert http(f"{running.api_url}/artifacts/{artifact_id}") == (200, doc.read_bytes())
    third = json.loads(run_cli("evidence", "ingest", str(doc), "--format", "json").stdout)
    assert third[0]["status"] == "duplicate"
