"""The local broker's security settings: what it renders, where the passwords go, and a storage
formatted before SASL refused rather than hung on."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from commands import broker
from locker import kafka_auth
from locker.errors import Refused, UsageError


def test_secure_properties_take_logins_only_and_deny_without_an_acl() -> None:
    rendered = broker.security_properties("SASL_PLAINTEXT", broker.DEFAULT_USERS, Path("/s"))
    assert "CLIENTS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT" in rendered
    assert "allow.everyone.if.no.acl.found=false" in rendered
    assert "super.users=User:stella-admin\n" in rendered + "\n"
    assert "PLAINTEXT:PLAINTEXT" not in rendered and "password" not in rendered and "ssl." not in rendered
    tls = broker.security_properties("SASL_SSL", broker.DEFAULT_USERS, Path("/s"))
    assert "CLIENTS:SASL_SSL" in tls and "ssl.keystore.location=/s/broker.pem" in tls


def test_the_jaas_file_and_credentials_are_owner_only(tmp_path: Path) -> None:
    made = kafka_auth.create(tmp_path / "secrets")
    assert made == list(kafka_auth.ROLES) and kafka_auth.create(tmp_path / "secrets") == []
    local = broker.LocalBroker(root=tmp_path, credentials=tmp_path / "secrets")
    local._render()
    jaas = tmp_path / "secrets" / "broker.jaas"
    admin = kafka_auth.read(tmp_path / "secrets", "admin")
    assert admin in jaas.read_text() and stat.S_IMODE(jaas.stat().st_mode) == 0o600
    assert admin not in local.properties.read_text()


def test_a_storage_formatted_before_sasl_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("cluster.id=x\n")
    local = broker.LocalBroker(root=tmp_path, port=broker.free_port(), controller_port=broker.free_port())
    with pytest.raises(Refused, match="formatted without logins"):
        local.start()


def test_the_local_broker_runs_sasl_or_plaintext_only() -> None:
    assert broker.local_protocol("sasl_ssl") == "SASL_SSL"
    with pytest.raises(UsageError, match="not SSL"):
        broker.local_protocol("SSL")


def test_a_client_logs_in_as_its_principal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from locker import config

    monkeypatch.setenv("STELLA_KAFKA__CREDENTIALSPATH", str(tmp_path))
    kafka_auth.create(tmp_path)
    settings = config.load(tmp_path / "home")
    operator = settings.kafka_auth()
    assert (operator.username, operator.password) == (
        "stella-operator",
        kafka_auth.read(tmp_path, "operator"),
    )
    assert operator.aiokafka()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings.acting_as("auditor").kafka_auth().librdkafka()["sasl.username"] == "stella-auditor"
    assert operator.password not in repr(operator)
    monkeypatch.setenv("STELLA_KAFKA__SECURITYPROTOCOL", "PLAINTEXT")
    assert config.load(tmp_path / "home").kafka_auth().aiokafka() == {"security_protocol": "PLAINTEXT"}
    monkeypatch.setenv("STELLA_KAFKA__SECURITYPROTOCOL", "SASL_SMOKE")
    with pytest.raises(UsageError, match="Kafka:SecurityProtocol must be one of"):
        config.load(tmp_path / "home").kafka_auth()
    with pytest.raises(UsageError, match="Kafka:Principal must be one of"):
        kafka_auth.role("root")
