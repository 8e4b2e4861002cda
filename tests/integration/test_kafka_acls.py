"""Authenticated Kafka with ACLs (#12): each principal is refused by the broker for what it may not
do, and a producer cannot forge an event or an anchor command."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commands import access, service
from commands.broker import LocalBroker, free_port, write_tls_files
from locker import config, kafka_auth, requests
from locker.config import Settings
from locker.digests import digest_of
from locker.errors import Refused
from locker.events import ArtifactIngested, encode
from locker.kafka_auth import Role
from streams.kafka import end_offsets, producer, read_to_end
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, ingest, submission, use_broker, wait_for
from tests.integration.test_other_clients import EXAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _secure(locker_env: dict[str, str]) -> None:
    if not config.load().kafka_auth().sasl:
        pytest.skip("the session's broker takes no logins (Kafka:SecurityProtocol is not SASL)")


def write(settings: Settings, who: Role, topic: str, value: bytes = b"{}", key: bytes = b"k") -> None:
    async def send() -> None:
        async with producer(settings.acting_as(who), request_timeout_ms=10000) as p:
            await p.send_and_wait(topic, value, key=key)

    asyncio.run(send())


def read(settings: Settings, who: Role, topic: str) -> int:
    """Fetch the topic's records as `who`; how many there were."""

    async def fetch() -> int:
        return sum([len(batch) async for batch in read_to_end(settings.acting_as(who), topic)])

    return asyncio.run(fetch())


def refused(action, *args: object) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Refused) as caught:
        action(*args)
    return str(caught.value)


def test_each_principal_may_do_what_its_acls_say_and_nothing_more(settings: Settings) -> None:
    t = Topics(settings.topic_prefix)
    every = [t.submissions, t.commands, t.events, t.anchors, t.verifications, t.verify_tasks, t.dlq]
    may_write: dict[Role, set[str]] = {
        "producer": {t.submissions},
        "operator": {t.submissions, t.commands},
        "service": {t.events, t.anchors, t.dlq, t.verifications, t.verify_tasks},
        "auditor": set(),
    }
    may_read: dict[Role, set[str]] = {
        "producer": set(),
        "operator": set(every),
        "service": set(every),
        "auditor": {t.events, t.anchors},
    }
    for topic in every:  # a record on each, for the readers to fetch
        write(settings, "admin", topic)
    for who in may_write:
        for topic in every:
            if topic in may_write[who]:
                write(settings, who, topic)
            else:
                said = refused(write, settings, who, topic)
                assert "AuthorizationFailed" in said and f"the {who} principal" in said, said
            if topic in may_read[who]:
                assert read(settings, who, topic)
            else:
                assert "TopicAuthorizationFailed" in refused(read, settings, who, topic)


def test_a_producer_cannot_forge_an_event_or_an_anchor_command(running: Settings) -> None:
    t = Topics(running.topic_prefix)
    content = os.urandom(200)
    forged = ArtifactIngested(
        artifact_id=digest_of(content), size=len(content), kind="sbom", ingested_at=datetime.now(UTC)
    )
    assert "TopicAuthorizationFailed" in refused(write, running, "producer", t.events, encode(forged))
    command = requests.encode(
        requests.CreateAnchor(command_id=requests.new_id(), requested_at=datetime.now(UTC))
    )
    assert "TopicAuthorizationFailed" in refused(write, running, "producer", t.commands, command)
    assert "TopicAuthorizationFailed" in refused(write, running, "producer", t.anchors, b"{}")

    # What it may do, it does: its submission is ingested.
    write(running, "producer", t.submissions, submission(content, kind="sbom"), digest_of(content).encode())
    wait_for(lambda: index_count(running) == 1, what="the producer's submission indexed")
    assert run_cli("evidence", "exists", digest_of(content)).returncode == 0
    assert sum(asyncio.run(end_offsets(running, t.anchors)).values()) == 0  # no anchor for mallory


def test_the_cli_as_an_auditor_reads_but_cannot_command(anchoring: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ingest(anchoring, [b"audited"])
    wait_for(lambda: index_count(anchoring) == 1, what="the artifact indexed")
    run_cli("evidence", "anchor", "create")
    monkeypatch.setenv("STELLA_KAFKA__PRINCIPAL", "auditor")
    # Replays evidence.events from Kafka to recompute the roots the anchor signed.
    verified = json.loads(run_cli("evidence", "anchor", "verify", "--all", "--format", "json").stdout)
    assert verified["verified"] and verified["anchors_checked"] == 1, verified
    said = run_cli("evidence", "anchor", "create", check=False)
    assert said.returncode == 5, said.stderr
    assert "refused the auditor principal (stella-auditor)" in said.stderr, said.stderr


def test_a_wrong_password_is_a_clear_refusal(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "kafka-secrets"
    kafka_auth.create(folder)
    env = {"STELLA_KAFKA__CREDENTIALSPATH": str(folder)}
    (tmp_path / "sbom.json").write_text("{}")
    said = run_cli("evidence", "ingest", str(tmp_path / "sbom.json"), "--kind", "sbom", check=False, env=env)
    assert said.returncode == 5, said.stderr
    assert "did not accept the login of the operator principal (stella-operator)" in said.stderr
    for path in folder.iterdir():  # never printed
        assert path.read_text().strip() not in said.stdout + said.stderr


def test_credentials_are_owner_only_and_grants_are_the_documented_ones(settings: Settings) -> None:
    folder = settings.kafka_credentials_path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for who in kafka_auth.ROLES:
        assert stat.S_IMODE(kafka_auth.password_file(folder, who).stat().st_mode) == 0o600
    os.chmod(kafka_auth.password_file(folder, "auditor"), 0o640)
    try:
        assert "readable by others" in refused(settings.acting_as("auditor").kafka_auth)
    finally:
        os.chmod(kafka_auth.password_file(folder, "auditor"), 0o600)
    writers = {g.who for g in access.grants(settings) if g.operation == "WRITE" and g.name.endswith("events")}
    assert writers == {"service"}


def test_a_service_started_before_init_says_to_run_it(locker_env: dict[str, str]) -> None:
    """No topics and no ACLs yet: the service's principal may not create them."""
    said = run_cli("service", "start", check=False)
    if said.returncode == 0:
        run_cli("service", "stop")
    assert said.returncode == 5 and "`stella init` creates the topics" in said.stderr, said.stderr


def test_over_tls_the_locker_works_and_an_untrusted_broker_is_refused(
    locker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker of its own with `Kafka:SecurityProtocol = SASL_SSL`: logins over TLS, with the
    certificate of the CA it made; the worker, the CLI and librdkafka all trust that CA."""
    own = LocalBroker(
        root=tmp_path / "tls-broker", port=free_port(), controller_port=free_port(), protocol="SASL_SSL"
    )
    own.start()
    try:
        settings = use_broker(monkeypatch, own.bootstrap, own.client_env())
        assert settings.kafka_auth().ca_file == own.secrets / "ca.pem"
        access.set_up(settings)
        service.start(settings)
        try:
            sbom = tmp_path / "sbom.json"
            sbom.write_text('{"over": "tls"}')
            run_cli("evidence", "ingest", str(sbom), "--kind", "sbom")
            produced = subprocess.run(
                [
                    sys.executable,
                    str(EXAMPLES / "produce_confluent.py"),
                    own.bootstrap,
                    Topics(settings.topic_prefix).submissions,
                    str(EXAMPLES / "evidence" / "api.cdx.json"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={
                    **os.environ,
                    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                    "KAFKA_CA_FILE": str(own.secrets / "ca.pem"),
                    "KAFKA_SASL_USERNAME": settings.kafka_user("producer"),
                    "KAFKA_SASL_PASSWORD_FILE": str(own.secrets / "producer.password"),
                },
            )
            assert produced.returncode == 0, produced.stderr
            wait_for(lambda: index_count(settings) == 2, what="both artifacts indexed")
        finally:
            service.stop(settings)
        # A client that trusts another CA does not talk to this broker (nor to an impostor).
        write_tls_files(tmp_path / "elsewhere")
        monkeypatch.setenv("STELLA_KAFKA__CAFILE", str(tmp_path / "elsewhere" / "ca.pem"))
        said = run_cli("evidence", "ingest", str(sbom), "--kind", "sbom", check=False)
        assert said.returncode == 4 and "unreachable" in said.stderr, said.stderr
    finally:
        own.stop()
