"""`stella evidence diagnostics`: the incident bundle has every section and no secret."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from locker.config import Settings
from locker.digests import digest_of
from tests.conftest import run_cli
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration

SASL_PASSWORD = "sasl-pw-Pl4nted-7f3c9e"
API_TOKEN = "stella_tok_Pl4nted_0a1b2c3d4e5f"


def test_the_bundle_has_every_section_and_no_planted_secret(
    anchoring: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = [b"diagnosed %d" % i for i in range(4)]
    ingest(anchoring, contents)
    run_cli("evidence", "anchor", "create")
    run_cli("evidence", "verify", "--mode", "full")
    key = anchoring.key_file.read_text().strip()
    token = anchoring.token_file.read_text().strip()
    # The secrets: the signing key, and a SASL password and an API token in the environment;
    # a careless log line carries all three.
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("STELLA_API_TOKEN", API_TOKEN)
    with (anchoring.log_path / "service.log").open("a") as log:
        log.write(f"debug: connecting with password={SASL_PASSWORD} token={API_TOKEN} key={key}\n")
        log.write(f"debug: bearer {token}\n")

    output = tmp_path / "diag.tar.gz"
    result = json.loads(
        run_cli("evidence", "diagnostics", "--output", str(output), "--format", "json").stdout
    )
    assert result["sections_failed"] == {}, result

    with tarfile.open(output) as tar:
        members = {m.name.removeprefix("diagnostics/"): tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert set(members) == {
        "README.md",
        "index-status.json",
        "storage-stats.json",
        "anchors.json",
        "integrity.json",
        "doctor.json",
        "audit-log.jsonl",
        "config.json",
        "logs/service.log",
        "logs/service.out",
        "logs/broker.log",
    }
    for secret in (key, SASL_PASSWORD, API_TOKEN, key.split("+")[-1], token):
        leaks = [name for name, data in members.items() if secret.encode() in data]
        assert not leaks, f"{secret[:12]}… is in {leaks}"
    assert b"password=[REDACTED] token=[REDACTED] key=[REDACTED]" in members["logs/service.log"]
    assert b"debug: bearer [REDACTED]" in members["logs/service.log"]

    assert json.loads(members["index-status.json"])["entries"] == len(contents)
    assert json.loads(members["anchors.json"])["latest_verified"]["verified"] is True
    assert json.loads(members["integrity.json"])["run"]["mode"] == "full"
    assert {c["id"] for c in json.loads(members["doctor.json"])["checks"]} >= {"check.kafka.broker"}
    config = json.loads(members["config.json"])
    assert config["Kafka:Bootstrap"]["value"] == anchoring.bootstrap
    audit = [json.loads(line) for line in members["audit-log.jsonl"].splitlines()]
    ingested = {
        a["record"]["artifact_id"] for a in audit if a.get("record", {}).get("type") == "artifact.ingested"
    }
    assert ingested == {digest_of(c) for c in contents}
    assert any(a["topic"].endswith("evidence.commands") for a in audit)  # the anchor and verify commands

    again = run_cli("evidence", "diagnostics", "--output", str(output), check=False)
    assert again.returncode == 2 and "exists" in again.stderr  # never overwritten (as export)
