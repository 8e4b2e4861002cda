"""`stella doctor`: a healthy locker passes, and each planted fault is found by its check."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from commands.broker import free_port
from commands.doctor import CHECKS
from locker.cas import BlobStore
from locker.config import Settings
from streams.kafka import admin
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration


def doctor(*args: str, code: int = 0) -> dict[str, Any]:
    proc = run_cli("doctor", *args, "--format", "json", check=False)
    assert proc.returncode == code, proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def found(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["id"] == check_id)


@pytest.fixture
def small_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reserve any test disk has free twice over: the storage checks judge the disk, not the test."""
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__FREESPACERESERVE", "1M")


def test_a_healthy_locker_passes_and_every_category_and_check_runs_alone(
    anchoring: Settings, small_reserve: None
) -> None:
    ingest(anchoring, [b"doctor %d" % i for i in range(5)])
    run_cli("evidence", "anchor", "create")
    report = doctor()  # exit 0: the one warning (no replica) is not a failure
    assert statuses(report) == {
        **dict.fromkeys(CHECKS, "ok"),
        "check.storage.replica": "warn",
    }, report
    assert report["status"] == "warn"
    assert all(c["finding"] for c in report["checks"])
    assert found(report, "check.storage.replica")["remedy"].startswith("`stella config set")
    assert "0600" in found(report, "check.anchors.signing-key")["finding"]
    doctor("--strict", code=1)

    evidence = doctor("--category", "evidence")
    assert {c["category"] for c in evidence["checks"]} == {"evidence"} and evidence["status"] == "ok"
    one = doctor("--check", "check.storage.evidencelocker")
    assert [c["id"] for c in one["checks"]] == ["check.storage.evidencelocker"]
    unknown = run_cli("doctor", "--check", "check.nothing", check=False)
    assert unknown.returncode == 2 and "check.storage.evidencelocker" in unknown.stderr
    table = run_cli("doctor", "--category", "anchors")
    assert "check.anchors.chain" in table.stdout


def test_each_planted_fault_is_found(
    anchoring: Settings, small_reserve: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(anchoring, [b"fault %d" % i for i in range(3)])
    run_cli("evidence", "anchor", "create")

    # A world-readable API token.
    anchoring.token_file.chmod(0o644)
    token = found(doctor("--check", "check.evidence.api-token", code=1), "check.evidence.api-token")
    assert token["status"] == "fail" and "readable by others" in token["finding"]
    anchoring.token_file.chmod(0o600)

    # A Kafka password file others may read.
    secret = anchoring.kafka_credentials_path / "operator.password"
    if anchoring.kafka_auth().sasl:
        secret.chmod(0o644)
        try:
            kafka = found(doctor("--check", "check.kafka.access", code=1), "check.kafka.access")
        finally:
            secret.chmod(0o600)
        assert kafka["status"] == "fail" and "readable by others" in kafka["finding"]
        assert (
            "as operator (stella-operator)"
            in found(doctor("--category", "kafka"), "check.kafka.access")["finding"]
        )

    # A world-readable signing key.
    anchoring.key_file.chmod(0o644)
    report = doctor("--category", "anchors", code=1)
    key = found(report, "check.anchors.signing-key")
    assert key["status"] == "fail" and "0644" in key["finding"] and key["remedy"].startswith("chmod 600")
    anchoring.key_file.chmod(0o600)

    # An old anchor, with events since it: the policy's interval is 1 s for this doctor.
    ingest(anchoring, [b"after the anchor"])
    time.sleep(2.1)
    monkeypatch.setenv("STELLA_ANCHORS__INTERVAL", "1")
    age = found(doctor("--check", "check.anchors.age", code=1), "check.anchors.age")
    assert age["status"] == "fail" and "events came since" in age["finding"]
    monkeypatch.delenv("STELLA_ANCHORS__INTERVAL")

    # An events topic that expires records.
    events = Topics(anchoring.topic_prefix).events
    asyncio.run(_alter(anchoring, events, {"retention.ms": "604800000"}))
    topics = found(doctor("--category", "kafka", code=1), "check.kafka.topics")
    assert topics["status"] == "fail" and f"{events} expires records" in topics["finding"]
    forever = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    asyncio.run(_alter(anchoring, events, forever))  # (alter_configs replaces the topic's whole set)
    assert found(doctor("--category", "kafka"), "check.kafka.topics")["status"] == "ok"

    # A broker that is down (for this doctor: nothing listens at its bootstrap).
    monkeypatch.setenv("STELLA_KAFKA__BOOTSTRAP", f"127.0.0.1:{free_port()}")
    down = doctor("--category", "kafka", code=1)
    assert statuses(down) == {
        "check.kafka.broker": "fail",
        "check.kafka.topics": "fail",
        "check.kafka.access": "fail",
    }
    assert "start the broker" in found(down, "check.kafka.broker")["remedy"]
    monkeypatch.setenv("STELLA_KAFKA__BOOTSTRAP", anchoring.bootstrap)


def test_a_read_only_storage_root_fails_its_check(
    settings: Settings, small_reserve: None, read_only_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__PATH", str(read_only_store))
    check = found(doctor("--check", "check.storage.evidencelocker", code=1), "check.storage.evidencelocker")
    assert check["status"] == "fail" and "not writable" in check["finding"], check


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A blob store on a tmpfs mounted read-only: permission bits do not stop root, a mount does."""
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        BlobStore(mount).ensure()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        assert not os.access(mount, os.W_OK) or os.geteuid() == 0
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def _alter(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    async with admin(settings.acting_as("admin")) as client:
        await client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
