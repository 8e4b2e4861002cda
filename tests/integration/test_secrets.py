"""No secret leaves its file (#12): the API token, the Kafka principals' passwords and the anchor
signing key appear in no log line (structlog's, captured in this process, and the service's and
broker's log files) and in no file the locker writes outside its secrets (the secrets folders and
the key file itself), after work that uses every one of them."""

from __future__ import annotations

import asyncio
import re
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import structlog

from commands import access
from locker import kafka_auth
from locker.config import Settings
from locker.errors import StorageUnavailable
from streams.app import consumer_options
from streams.kafka import Record
from streams.publisher import BatchPublisher
from streams.runtime import Loop, Outbox
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import bearer, index_count, ingest, wait_for

pytestmark = pytest.mark.integration


def known_secrets(settings: Settings) -> dict[str, bytes]:
    found = {"api token": settings.token_file.read_bytes().strip()}
    if settings.kafka_auth().sasl:
        for who in kafka_auth.ROLES:
            found[f"{who} password"] = kafka_auth.read(settings.kafka_credentials_path, who).encode()
    key = settings.key_file.read_text()
    found["signing key"] = key.strip().encode()
    found |= {
        f"signing key part {i}": p.encode() for i, p in enumerate(re.split(r"[\s+:]+", key)) if len(p) >= 16
    }
    return found


def files_outside_secrets(settings: Settings) -> Iterator[Path]:
    """Every file of the locker's home but its secrets; and of the broker's folder (when it is
    the local one the credentials live beside), its logs, config, metadata log and this locker's
    topics."""
    skip = {settings.home / "secrets", settings.kafka_credentials_path}
    for path in settings.home.rglob("*"):
        if path.is_file() and path != settings.key_file and not any(path.is_relative_to(s) for s in skip):
            yield path
    broker = settings.kafka_credentials_path.parent
    if (broker / "server.properties").is_file():
        yield from (p for p in broker.iterdir() if p.is_file())
        for folder in (broker / "data").iterdir():
            if folder.name.startswith((settings.topic_prefix, "__cluster_metadata")):
                yield from (p for p in folder.rglob("*") if p.is_file())


def fail_once(records: list[Record], failed: list[bool]) -> Outbox:
    if not failed:
        failed.append(True)
        raise StorageUnavailable("storage hiccup")  # a retried error: logged, then the batch again
    return Outbox()


async def run_a_loop_as_the_service(settings: Settings) -> None:
    """The batch runtime, in this process, logged in as the service, through a retried failure."""
    service = settings.acting_as("service")
    publisher = BatchPublisher(bootstrap_servers=service.bootstrap, **service.kafka_auth().aiokafka())
    topics = Topics(service.topic_prefix)
    failed: list[bool] = []
    loop = Loop(
        "secrets",
        topic=topics.submissions,
        handler=partial(fail_once, failed=failed),
        publisher=publisher,
        dlq_topic=topics.dlq,
        consumer_options=consumer_options(service),
    )
    await publisher.start()
    await loop.start()
    try:
        for _ in range(600):
            if failed and loop.records:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the loop did not get through its batch: {loop.status()}")
    finally:
        await loop.stop()
        await publisher.stop()


def test_no_secret_in_any_log_or_any_file_outside_the_secrets(anchoring: Settings, tmp_path: Path) -> None:
    s = anchoring
    outputs: list[str] = []

    def cli(*args: str, **kw: object) -> None:
        done = run_cli(*args, check=False, **kw)  # type: ignore[arg-type]
        outputs.extend([done.stdout, done.stderr])

    ingest(s, [b"secret-free %d" % i for i in range(5)])
    wait_for(lambda: index_count(s) == 5, what="5 artifacts indexed")
    cli("evidence", "anchor", "create")
    cli("evidence", "backup", "create", "--output", str(s.home / "backups" / "evidence-locker"))
    cli("evidence", "diagnostics", "--output", str(tmp_path / "diagnostics.tar.gz"))
    cli("doctor", "--format", "json")
    cli("config", "list", "--effective", "--format", "json")
    cli("evidence", "anchor", "create", env={"STELLA_KAFKA__PRINCIPAL": "auditor"})  # refused
    for header in (bearer(s), {"Authorization": "Bearer wrong"}, {}):
        request = urllib.request.Request(f"{s.api_url}/artifacts?kind=other", headers=header)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                outputs.append(response.read().decode())
        except urllib.error.HTTPError as refused:
            outputs.append(refused.read().decode())

    with structlog.testing.capture_logs() as captured:
        access.set_up(s)
        ingest(s, [b"one more"])
        asyncio.run(run_a_loop_as_the_service(s))
    assert any("retrying" in entry["event"] for entry in captured), captured  # the retry, logged

    secrets = known_secrets(s)
    assert len(secrets) >= 3
    logged = repr(captured).encode() + "".join(outputs).encode()
    for name, secret in secrets.items():
        if secret in logged:  # not `assert`: its report would print the secret
            pytest.fail(f"the {name} was logged or printed")

    with tarfile.open(tmp_path / "diagnostics.tar.gz") as tar:
        bundle = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    scanned = 0
    for path in [*files_outside_secrets(s)]:
        data = path.read_bytes()
        scanned += 1
        for name, secret in secrets.items():
            if secret in data:
                pytest.fail(f"the {name} is in {path}")
    for name, secret in secrets.items():
        if secret in bundle:
            pytest.fail(f"the {name} is in the diagnostics bundle")
    assert scanned > 20 and (s.log_path / "service.log").stat().st_size > 0
