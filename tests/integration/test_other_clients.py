"""The README's producer example (confluent-kafka / librdkafka) really ingests evidence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from locker import kafka_auth
from locker.config import Settings
from locker.digests import digest_of
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_confluent_kafka_example_submits_evidence(running: Settings) -> None:
    """As the producer principal, which may write submissions only."""
    sbom = EXAMPLES / "evidence" / "api.cdx.json"
    subject = "sha256:" + "cd" * 32
    login = {}
    if running.kafka_auth().sasl:
        login = {
            "KAFKA_SASL_USERNAME": running.kafka_user("producer"),
            "KAFKA_SASL_PASSWORD_FILE": str(
                kafka_auth.password_file(running.kafka_credentials_path, "producer")
            ),
        }
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "produce_confluent.py"),
            running.bootstrap,
            Topics(running.topic_prefix).submissions,
            str(sbom),
            "sbom",
            subject,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, **login},
    )
    artifact_id = out.stdout.strip()
    assert artifact_id == digest_of(sbom.read_bytes())
    wait_for(lambda: index_count(running) == 1, what="the example submission to be indexed")
    assert run_cli("evidence", "exists", artifact_id).returncode == 0
    assert '"kind": "sbom"' in run_cli("evidence", "inspect", artifact_id, "--format", "json").stdout
