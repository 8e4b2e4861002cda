"""Shared fixtures. Integration tests get a real Kafka broker:

1. `STELLA_KAFKA_BOOTSTRAP` if set;
2. else a testcontainers `KafkaContainer` when a Docker engine answers;
3. else the local broker from the Maven-fetched jars, on free ports in a temp folder.

Each test gets its own topic prefix, consumer group, home folder and API port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands.broker import LocalBroker, free_port


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The STELLA_* variables that reach the session's broker and log in to it."""
    if env := os.environ.get("STELLA_KAFKA_BOOTSTRAP"):  # with its security settings, if any
        yield {"STELLA_KAFKA__BOOTSTRAP": env}
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka:
            yield {
                "STELLA_KAFKA__BOOTSTRAP": kafka.get_bootstrap_server(),
                "STELLA_KAFKA__SECURITYPROTOCOL": "PLAINTEXT",
            }
        return
    broker = LocalBroker(
        root=tmp_path_factory.mktemp("broker"),
        port=free_port(),
        controller_port=free_port(),
        partitions=4,
    )
    broker.start()
    try:
        yield {"STELLA_KAFKA__BOOTSTRAP": broker.bootstrap, **broker.client_env()}
    finally:
        broker.stop()


@pytest.fixture
def locker_env(kafka_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of one isolated locker: home, topic prefix, group, API port."""
    tag = uuid.uuid4().hex[:10]
    env = {
        **kafka_env,
        "STELLA_HOME": str(tmp_path / "home"),
        "STELLA_KAFKA__TOPICPREFIX": f"t{tag}.",
        "STELLA_KAFKA__GROUPID": f"g{tag}",
        "STELLA_SERVICE__PORT": str(free_port()),
        "STELLA_COMMANDS__TIMEOUT": "60",
        # The describe loop appends an event per ingest, at its own pace: tests that count events
        # and leaves would race it. test_formats.py turns it on.
        "STELLA_FORMATS__DESCRIBE": "false",
    }
    monkeypatch.delenv("STELLA_KAFKA_BOOTSTRAP", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_cli(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `stella` CLI in a child process with the current environment (and `env`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        shown = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        raise AssertionError(f"stella {' '.join(args)} exited {proc.returncode}\n{shown}")
    return proc
