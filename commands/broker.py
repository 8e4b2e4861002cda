"""A local single-node Apache Kafka broker (KRaft) run from jars that Maven fetches.

`infra/kafka/pom.xml` pins the release; `ensure_jars` copies the broker and its runtime
dependencies into a cache folder (`STELLA_KAFKA_LIBS`, default `~/.cache/stella/kafka-<version>`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

from commands.process import Daemon
from locker.config import Settings, max_message_bytes
from locker.errors import LockerError, Unreachable

KAFKA_VERSION = "3.9.1"
REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra" / "kafka"


def libs_dir() -> Path:
    if env := os.environ.get("STELLA_KAFKA_LIBS"):
        return Path(env)
    return Path.home() / ".cache" / "stella" / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_jars() -> Path:
    """Fetch the broker jars with Maven unless they are already cached."""
    libs = libs_dir()
    if any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        return libs
    for tool, package in (("java", "openjdk-17-jre-headless"), ("mvn", "maven")):
        if shutil.which(tool) is None:
            raise Unreachable(f"{tool} is not installed; install it with: apt-get install -y {package}")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(INFRA / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise Unreachable(f"maven could not fetch the Kafka jars:\n{result.stdout}{result.stderr}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url of a UUID) that never starts with "-", which the
    storage tool's argument parser would take for an option (Kafka's `Uuid.randomUuid` avoids it
    the same way)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class LocalBroker:
    """A broker whose files live in `root` (data, config, pid and log)."""

    root: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    partitions: int = 4
    max_content_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBroker:
        return cls(
            root=settings.home / "broker",
            port=settings.integer("Broker:Port"),
            controller_port=settings.integer("Broker:ControllerPort"),
            heap=str(settings.get("Broker:Heap")),
            partitions=settings.partitions,
            max_content_bytes=settings.max_content_bytes,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def daemon(self) -> Daemon:
        return Daemon("broker", self.root / "broker.pid", self.root / "broker.log")

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    def _render(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        template = Template((INFRA / "server.properties.template").read_text())
        self.properties.write_text(
            template.substitute(
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.root / "data",
                partitions=self.partitions,
                max_content_bytes=self.max_content_bytes,
                max_message_bytes=max_message_bytes(self.max_content_bytes),
            )
        )

    def _java(self, libs: Path, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{INFRA / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def start(self, timeout: float = 90.0) -> bool:
        """Format storage on first start, start the JVM, wait until it answers metadata.

        Returns False if it was already running.
        """
        if self.daemon.pid() is not None:
            return False
        for port in (self.port, self.controller_port):
            if port_open("127.0.0.1", port):
                raise LockerError(f"port {port} is already in use; set Broker:Port / Broker:ControllerPort")
        libs = ensure_jars()
        self._render()
        if not (self.root / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            format_cmd = self._java(
                libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties)
            )
            result = subprocess.run(format_cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LockerError(f"formatting broker storage failed:\n{result.stdout}{result.stderr}")
        env = dict(os.environ)
        child = self.daemon.spawn(self._java(libs, "kafka.Kafka", str(self.properties)), env, cwd=self.root)
        self.daemon.wait_until(child, self.answers, timeout, "ready")
        return True

    def answers(self) -> bool:
        """True once the broker answers a metadata request."""
        if not port_open("127.0.0.1", self.port):
            return False
        return asyncio.run(_metadata_ok(self.bootstrap))

    def stop(self) -> bool:
        return self.daemon.stop(timeout=60.0)

    def status(self) -> dict[str, object]:
        pid = self.daemon.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": self.bootstrap,
            "answers": pid is not None and self.answers(),
            "kafka_version": KAFKA_VERSION,
            "data": str(self.root / "data"),
            "log": str(self.daemon.log_file),
        }


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.start()
        await client.describe_cluster()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        await client.close()
