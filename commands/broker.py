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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from commands.process import Daemon, Spawned
from locker import kafka_auth
from locker.config import Settings, max_message_bytes
from locker.errors import LockerError, Refused, Unreachable, UsageError
from locker.kafka_auth import ClientAuth, Role

KAFKA_VERSION = "3.9.1"
BROKER_PEM = "broker.pem"  # in the credentials folder, with SASL_SSL
CA_PEM = kafka_auth.CA_FILE
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


DEFAULT_USERS: dict[Role, str] = {who: f"stella-{who}" for who in kafka_auth.ROLES}


def security_properties(protocol: str, users: dict[Role, str], secrets: Path) -> str:
    """The listeners' protocols and the authorizer. With SASL: SCRAM-SHA-512 logins for clients
    (over TLS with `SASL_SSL`, the certificate and CA in `secrets`), the broker's own (PLAIN) login
    on the loopback controller listener, ACLs enforced by KRaft's `StandardAuthorizer` with the
    admin as the only super user, and no access without an ACL."""
    if protocol == "PLAINTEXT":
        return "listener.security.protocol.map=CLIENTS:PLAINTEXT,CONTROLLER:PLAINTEXT"
    tls = []
    if protocol == "SASL_SSL":  # PEM files (KIP-651): the key and chain, and the CA for its own clients
        tls = [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={secrets / BROKER_PEM}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={secrets / CA_PEM}",
        ]
    return "\n".join(
        [
            f"listener.security.protocol.map=CLIENTS:{protocol},CONTROLLER:SASL_PLAINTEXT",
            *tls,
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            # SCRAM users live in the metadata log, which the controller must read before it could
            # check one: the controller listener takes the broker's own PLAIN login instead.
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{users['admin']}",
            "allow.everyone.if.no.acl.found=false",
        ]
    )


def jaas(admin: str, password: str) -> str:
    """The broker's JAAS login (a file in the credentials folder, never in server.properties):
    the admin's PLAIN login on the controller listener, its SCRAM login between brokers."""
    return (
        "KafkaServer {\n"
        f'  org.apache.kafka.common.security.plain.PlainLoginModule required username="{admin}" '
        f'password="{password}" user_{admin}="{password}";\n'
        f'  org.apache.kafka.common.security.scram.ScramLoginModule required username="{admin}" '
        f'password="{password}";\n'
        "};\n"
    )


@dataclass(frozen=True)
class LocalBroker:
    """A broker whose files live in `root` (data, config, pid and log). With SASL (`protocol`
    SASL_PLAINTEXT, the default, or SASL_SSL) it takes SCRAM logins of the principals whose
    passwords are in `credentials` (made on first start) and enforces ACLs; with SASL_SSL its
    client listener is TLS, with a certificate from a CA of its own (`kafka_auth.CA_FILE` there).
    PLAINTEXT: open, on loopback."""

    root: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    partitions: int = 4
    max_content_bytes: int = 8 * 1024 * 1024
    protocol: str = "SASL_PLAINTEXT"
    credentials: Path | None = None  # default: root / "secrets"
    users: dict[Role, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    # One of a cluster's nodes (`LocalCluster`): its id, every controller's (id, port), the id all
    # format with, and how many nodes there are. Alone: node 1, its own voter, a new cluster id.
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    cluster_id: str = ""
    size: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBroker:
        return cls(
            root=settings.home / "broker",
            port=settings.integer("Broker:Port"),
            controller_port=settings.integer("Broker:ControllerPort"),
            heap=str(settings.get("Broker:Heap")),
            partitions=settings.partitions,
            max_content_bytes=settings.max_content_bytes,
            protocol=local_protocol(str(settings.get("Kafka:SecurityProtocol"))),
            credentials=settings.kafka_credentials_path,
            users={who: settings.kafka_user(who) for who in kafka_auth.ROLES},
        )

    @property
    def secrets(self) -> Path:
        return self.credentials or self.root / "secrets"

    @property
    def secure(self) -> bool:
        return self.protocol != "PLAINTEXT"

    @property
    def tls(self) -> bool:
        return self.protocol == "SASL_SSL"

    def client_env(self) -> dict[str, str]:
        """The STELLA_* variables a locker on this broker needs besides its bootstrap."""
        env = {"STELLA_KAFKA__SECURITYPROTOCOL": self.protocol}
        if self.secure:
            env["STELLA_KAFKA__CREDENTIALSPATH"] = str(self.secrets)
        return env

    def auth(self, who: Role = "admin") -> ClientAuth:
        """How `who` logs in to this broker."""
        if not self.secure:
            return ClientAuth()
        password = kafka_auth.read(self.secrets, who)
        ca = self.secrets / CA_PEM if self.tls else None
        return ClientAuth(self.protocol, "SCRAM-SHA-512", self.users[who], password, ca)

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
                node_id=self.node_id,
                voters=",".join(f"{i}@127.0.0.1:{p}" for i, p in self.voters or ((1, self.controller_port),)),
                replication=min(self.size, 3),
                min_isr=2 if self.size >= 3 else 1,
                log_dir=self.root / "data",
                partitions=self.partitions,
                max_content_bytes=self.max_content_bytes,
                max_message_bytes=max_message_bytes(self.max_content_bytes),
                security=security_properties(self.protocol, self.users, self.secrets),
            )
        )
        if self.secure:
            admin = self.users["admin"]
            write_secret(self.secrets / "broker.jaas", jaas(admin, kafka_auth.read(self.secrets, "admin")))

    def _java(self, libs: Path, *args: str) -> list[str]:
        login = [f"-Djava.security.auth.login.config={self.secrets / 'broker.jaas'}"] if self.secure else []
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{INFRA / 'log4j.properties'}",
            *login,
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def _format(self, libs: Path) -> None:
        """Format the storage with a new cluster id and, secure, every principal's SCRAM login. The
        passwords go to the storage tool in a Java argument file in the credentials folder, not on
        its command line, where any local user could read them; the file is removed after."""
        cluster_id = self.cluster_id or new_cluster_id()
        args = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties)]
        if self.secure:
            for who in kafka_auth.ROLES:
                password = kafka_auth.read(self.secrets, who)
                args += ["--add-scram", f"SCRAM-SHA-512=[name={self.users[who]},password={password}]"]
        argfile = self.secrets / "format.args"
        write_secret(argfile, "\n".join(args) + "\n")
        try:
            java = self._java(libs)
            result = subprocess.run([*java, f"@{argfile}"], capture_output=True, text=True, check=False)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise LockerError(f"formatting broker storage failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> bool:
        """Format storage on first start, start the JVM, wait until it answers metadata.

        Returns False if it was already running.
        """
        if self.daemon.pid() is not None:
            return False
        libs = ensure_jars()
        self.prepare(libs)
        self.daemon.wait_until(self.launch(libs), self.answers, timeout, "ready")
        return True

    def launch(self, libs: Path) -> Spawned:
        """Start the JVM (prepared) without waiting for it."""
        return self.daemon.spawn(
            self._java(libs, "kafka.Kafka", str(self.properties)), dict(os.environ), self.root
        )

    def prepare(self, libs: Path) -> None:
        """Check the ports, make the credentials (and TLS files) if missing, render the config and
        format the storage on first start; refuse a storage formatted open when logins are on."""
        for port in (self.port, self.controller_port):
            if port_open("127.0.0.1", port):
                raise LockerError(f"port {port} is already in use; set Broker:Port / Broker:ControllerPort")
        if self.secure:
            kafka_auth.create(self.secrets)
        if self.tls and not (self.secrets / BROKER_PEM).exists():
            write_tls_files(self.secrets)
        self._render()
        if not (self.root / "data" / "meta.properties").exists():
            self._format(libs)
            (self.root / "formatted-for").write_text(f"{self.protocol}\n")
        elif self.secure and self._formatted_for() == "PLAINTEXT":
            raise Refused(
                f"the broker's storage in {self.root / 'data'} was formatted without logins (before "
                "SASL), so it has no SCRAM users: set Kafka:SecurityProtocol = PLAINTEXT to run it open "
                "as before, or take a backup (`stella evidence backup create`), stop the broker, remove "
                "that data folder, start it again and restore the backup"
            )

    def _formatted_for(self) -> str:
        """The protocol the storage was formatted for; a storage formatted before SASL has no record."""
        try:
            return (self.root / "formatted-for").read_text().strip()
        except FileNotFoundError:
            return "PLAINTEXT"

    def answers(self) -> bool:
        """True once the broker answers a metadata request."""
        return self.brokers() > 0

    def brokers(self) -> int:
        """How many brokers this one's metadata lists (0: it does not answer)."""
        if not port_open("127.0.0.1", self.port):
            return 0
        return asyncio.run(_brokers(self.bootstrap, self.auth()))

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
            "security": f"{self.protocol} (SCRAM-SHA-512), ACLs" if self.secure else "PLAINTEXT, no ACLs",
            "credentials": str(self.secrets) if self.secure else "",
            "data": str(self.root / "data"),
            "log": str(self.daemon.log_file),
        }


@dataclass(frozen=True)
class LocalCluster:
    """`size` local brokers, each also a KRaft controller, in one cluster on loopback: node i in
    `root/node-i`, on `port + 2(i - 1)` and `controller_port + 2(i - 1)`, all formatted with one
    cluster id (kept in `root/cluster-id`) and the same principals. With 3 or more nodes, topics
    get 3 replicas and `min.insync.replicas=2` (the template; `streams.kafka.create_topics`)."""

    root: Path
    nodes: tuple[LocalBroker, ...]

    @classmethod
    def of(cls, root: Path, size: int, port: int, controller_port: int, **common: Any) -> LocalCluster:
        if size < 1:
            raise UsageError(f"a cluster needs at least one node, not {size}")
        root.mkdir(parents=True, exist_ok=True)
        id_file = root / "cluster-id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        voters = tuple((i, controller_port + 2 * (i - 1)) for i in range(1, size + 1))
        nodes = tuple(
            LocalBroker(
                root=root / f"node-{i}",
                port=port + 2 * (i - 1),
                controller_port=controller,
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
                size=size,
                **common,
            )
            for i, controller in voters
        )
        return cls(root, nodes)

    @classmethod
    def from_settings(cls, settings: Settings, size: int) -> LocalCluster:
        one = LocalBroker.from_settings(settings)
        common = {
            "heap": one.heap,
            "partitions": one.partitions,
            "max_content_bytes": one.max_content_bytes,
            "protocol": one.protocol,
            "credentials": one.credentials,
            "users": one.users,
        }
        return cls.of(settings.home / "broker-cluster", size, one.port, one.controller_port, **common)

    @classmethod
    def existing(cls, settings: Settings) -> LocalCluster | None:
        """The cluster `broker start --nodes N` made in this home, if any."""
        nodes = sorted((settings.home / "broker-cluster").glob("node-*"))
        return cls.from_settings(settings, len(nodes)) if nodes else None

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self, timeout: float = 120.0) -> bool:
        """Start every node that is not running, all at once (a controller quorum forms only once
        a majority is up), then wait until each answers. False if all were running."""
        idle = [node for node in self.nodes if node.daemon.pid() is None]
        if not idle:
            return False
        libs = ensure_jars()
        for node in idle:
            node.prepare(libs)
        launched = [(node, node.launch(libs)) for node in idle]
        for node, child in launched:
            node.daemon.wait_until(child, node.answers, timeout, "ready")

        # A node answers before every node has registered, and each node learns of the others on
        # its own: wait until every node lists all of them, or `stella init`, asking any one,
        # would count fewer brokers and give topics fewer replicas.
        def joined() -> bool:
            return all(node.brokers() == len(self.nodes) for node in self.nodes)

        self.nodes[0].daemon.wait_until(launched[0][1], joined, timeout, "joined by every node")
        return True

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM to every node at once, then wait; SIGKILL for any still up after `timeout`.
        One at a time, the last nodes would wait for a controller quorum that has already left."""
        running = [node.daemon for node in self.nodes if node.daemon.pid() is not None]
        for daemon in running:
            daemon.terminate()
        deadline = time.monotonic() + timeout
        while any(d.pid() is not None for d in running) and time.monotonic() < deadline:
            time.sleep(0.2)
        for daemon in running:
            daemon.kill()
        return bool(running)

    def status(self) -> dict[str, object]:
        nodes = [{"node": node.node_id, **node.status()} for node in self.nodes]
        return {
            "running": sum(1 for n in nodes if n["running"]),
            "nodes": nodes,
            "bootstrap": self.bootstrap,
        }


def local_protocol(protocol: str) -> str:
    """`Kafka:SecurityProtocol` for the local broker: SASL_PLAINTEXT, SASL_SSL or PLAINTEXT (the
    principals are SASL logins, so TLS alone, SSL, is for clusters run elsewhere)."""
    protocol = protocol.strip().upper()
    if protocol not in ("SASL_PLAINTEXT", "SASL_SSL", "PLAINTEXT"):
        raise UsageError(
            f"the local broker runs SASL_PLAINTEXT, SASL_SSL or PLAINTEXT, not {protocol}: set "
            "Kafka:SecurityProtocol, or use a cluster run elsewhere"
        )
    return protocol


def write_tls_files(folder: Path) -> None:
    """A CA of the broker's own (`ca.pem`, what clients trust: `Kafka:CaFile`, or found in the
    credentials folder) and the broker's key and certificate for 127.0.0.1 and localhost, signed by
    it (`broker.pem`: key, certificate, CA; mode 0600). The CA's key is not kept: nothing else is
    ever signed with it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stella local broker CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    write_secret(folder / BROKER_PEM, key_pem + cert.public_bytes(pem).decode() + ca_pem)
    write_secret(folder / CA_PEM, ca_pem)


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only, also while it is being written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


async def _brokers(bootstrap: str, auth: ClientAuth) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **auth.aiokafka())
    try:
        await client.start()
        return len((await client.describe_cluster())["brokers"])
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return 0
    finally:
        await client.close()
