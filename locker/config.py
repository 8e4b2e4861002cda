"""Configuration: defaults < the TOML file in the locker's home < environment < flags.

Keys are written `Section:Key` (`EvidenceLocker:Path`, `Kafka:Bootstrap`). In the file they are
TOML tables (`[Kafka]` / `Bootstrap = "..."`); in the environment `STELLA_` + the key with `__`
for `:` (`STELLA_KAFKA__BOOTSTRAP`, case-insensitive). `STELLA_KAFKA_BOOTSTRAP` is accepted as
the well-known alias of `Kafka:Bootstrap`. The home folder is `STELLA_HOME`, else
`$XDG_DATA_HOME/stella`, else `~/.local/share/stella`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from locker import kafka_auth
from locker.errors import StorageUnavailable, UsageError
from locker.events.ingest import KINDS
from locker.retention import Policy
from locker.sizes import parse_age, parse_size

# key -> (default, type). A default of None means "derived" (see `Settings`).
KEYS: dict[str, tuple[object, type]] = {
    "EvidenceLocker:Path": (None, str),
    "EvidenceLocker:Backend": ("filesystem", str),
    "EvidenceLocker:ReplicaPath": ("", str),
    "EvidenceLocker:FreeSpaceReserve": ("1G", str),
    # The S3 blob backend (EvidenceLocker:Backend = s3; `locker.s3store`). Its credentials are
    # never config values: a 0600 file (S3:CredentialsFile) or the environment.
    "S3:Endpoint": ("", str),
    "S3:Bucket": ("", str),
    "S3:Region": ("us-east-1", str),
    "S3:Prefix": ("", str),
    "S3:AddressingStyle": ("path", str),
    "S3:CredentialsFile": (None, str),
    "S3:Concurrency": (16, int),
    "Kafka:Bootstrap": ("127.0.0.1:9092", str),
    "Kafka:TopicPrefix": ("", str),
    "Kafka:Partitions": (4, int),
    "Kafka:GroupId": ("stella-locker", str),
    "Kafka:SecurityProtocol": ("SASL_PLAINTEXT", str),
    "Kafka:SaslMechanism": ("SCRAM-SHA-512", str),
    "Kafka:CaFile": ("", str),
    "Kafka:CredentialsPath": (None, str),
    "Kafka:Principal": ("operator", str),
    **{f"Kafka:{who.title()}User": (f"stella-{who}", str) for who in kafka_auth.ROLES},
    "Ingest:MaxContentBytes": (8 * 1024 * 1024, int),
    "Service:Host": ("127.0.0.1", str),
    "Service:Port": (8470, int),
    # Which of a locker's local workers this process is (`stella service start --workers N` sets it):
    # worker n keeps its projections in `state-<n>` and serves on Service:Port + n; worker 0 is the
    # one the CLI reads and asks.
    "Service:Worker": (0, int),
    "Service:TokenFile": (None, str),
    # The HTTP server's limits (`streams.webserver`): bytes, counts, and seconds.
    "Service:MaxUrlBytes": (4096, int),
    "Service:MaxHeaderBytes": (8192, int),
    "Service:MaxHeaders": (100, int),
    "Service:MaxBodyBytes": (64 * 1024, int),
    "Service:HeaderTimeout": (10, int),
    "Service:IdleTimeout": (60, int),
    "Service:MaxConnections": (512, int),
    "Commands:Timeout": (30, int),
    "Anchors:KeyFile": (None, str),
    "Anchors:Origin": ("stella.local/evidence-locker", str),
    "Anchors:BackupPath": (None, str),
    "Anchors:Interval": (6 * 3600, int),
    "Anchors:EveryEvents": (0, int),
    "Backups:Path": (None, str),
    "Archive:Path": (None, str),
    "Formats:TrustStore": ("", str),
    "Formats:Describe": (True, bool),
    "Formats:SigstoreTrustedRoot": ("", str),
    "Verification:QuickSample": ("1%", str),
    "Retention:Default": ("forever", str),
    "Retention:Aggressive": ("90d", str),
    **{f"Retention:{kind}": ("", str) for kind in KINDS},
    "Verification:AutoRecover": (False, bool),
    "Broker:Port": (9092, int),
    "Broker:ControllerPort": (9093, int),
    "Broker:Heap": ("512m", str),
}
MAX_WORKERS = 16  # local workers of one locker (`stella service start --workers N`)
BACKENDS = ("filesystem", "s3")
ALIASES = {"STELLA_KAFKA_BOOTSTRAP": "Kafka:Bootstrap"}
SECRET_KEYS: frozenset[str] = frozenset()


def default_home() -> Path:
    if home := os.environ.get("STELLA_HOME"):
        return Path(home).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stella"


@dataclass(frozen=True)
class Settings:
    home: Path
    values: Mapping[str, object]
    sources: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str) -> object:
        return self.values[_canonical(key)]

    def integer(self, key: str) -> int:
        value = self.values[_canonical(key)]
        assert isinstance(value, int), f"{key} is not an integer"
        return value

    @property
    def evidence_path(self) -> Path:
        return Path(str(self.values["EvidenceLocker:Path"])).expanduser()

    @property
    def backend(self) -> str:
        """EvidenceLocker:Backend: `filesystem` or `s3`; `UsageError` for anything else."""
        value = str(self.values["EvidenceLocker:Backend"]).strip().lower()
        if value not in BACKENDS:
            raise UsageError(f"EvidenceLocker:Backend must be one of {', '.join(BACKENDS)}, got {value!r}")
        return value

    @property
    def s3_credentials_file(self) -> Path:
        """The S3 backend's access key file (`locker.s3store.read_credentials`)."""
        return Path(str(self.values["S3:CredentialsFile"])).expanduser()

    @property
    def quick_sample(self) -> str:
        """Verification:QuickSample: a quick run's sample without --sample ("500", "2%")."""
        return str(self.values["Verification:QuickSample"])

    @property
    def auto_recover(self) -> bool:
        """Verification:AutoRecover: a failed check with a good replica restores the blob itself."""
        return bool(self.values["Verification:AutoRecover"])

    def retention_policy(self) -> Policy:
        """`Retention:*` parsed; raises `UsageError` naming a key whose value is not an age."""
        by_kind = {}
        for kind in KINDS:
            value = str(self.values[f"Retention:{kind}"]).strip()
            if value:
                by_kind[kind] = parse_age(value, what=f"Retention:{kind}")
        return Policy(
            default=parse_age(str(self.values["Retention:Default"]), what="Retention:Default"),
            by_kind=by_kind,
            aggressive=parse_age(str(self.values["Retention:Aggressive"]), what="Retention:Aggressive"),
        )

    @property
    def free_space_reserve(self) -> int:
        """Bytes ingest leaves free on the evidence path's file system (`storage-full` below it)."""
        return parse_size(
            str(self.values["EvidenceLocker:FreeSpaceReserve"]), what="EvidenceLocker:FreeSpaceReserve"
        )

    @property
    def replica_path(self) -> Path | None:
        """The replica store's root, if one is configured."""
        value = str(self.values["EvidenceLocker:ReplicaPath"]).strip()
        return Path(value).expanduser() if value else None

    @property
    def worker(self) -> int:
        """`Service:Worker`: which local worker this process is (0 for the CLI)."""
        n = self.integer("Service:Worker")
        if not 0 <= n < MAX_WORKERS:
            raise UsageError(f"Service:Worker must be from 0 to {MAX_WORKERS - 1}, got {n}")
        return n

    @property
    def worker_name(self) -> str:
        """`service` for worker 0, `service-<n>` for the others: their pid, log and output files."""
        return "service" if self.worker == 0 else f"service-{self.worker}"

    def as_worker(self, n: int) -> Settings:
        """These settings as worker `n` sees them (its state folder, its port)."""
        return dataclasses.replace(
            self,
            values={**self.values, "Service:Worker": n},
            sources={**self.sources, "Service:Worker": f"set by the process (worker {n})"},
        )

    @property
    def state_path(self) -> Path:
        """Projections (RocksDB) and the worker's own data: each local worker has its own."""
        return self.home / ("state" if self.worker == 0 else f"state-{self.worker}")

    @property
    def verify_path(self) -> Path:
        """The verification store's RocksDB folder."""
        return self.state_path / "verifications"

    @property
    def index_optimized_path(self) -> Path:
        """The service's answer to the last `index optimize` command (the worker's own data)."""
        return self.state_path / "index-optimize.json"

    @property
    def plans_path(self) -> Path:
        """Plans of verification runs not completed yet (the worker's own data)."""
        return self.state_path / "verification-plans"

    @property
    def index_path(self) -> Path:
        """The index projection's RocksDB folder."""
        return self.state_path / "index"

    @property
    def merkle_path(self) -> Path:
        """The per-partition Merkle trees' RocksDB folder."""
        return self.state_path / "merkle"

    @property
    def chain_path(self) -> Path:
        """The anchor chain projection's RocksDB folder."""
        return self.state_path / "anchors"

    @property
    def key_file(self) -> Path:
        return Path(str(self.values["Anchors:KeyFile"])).expanduser()

    @property
    def token_file(self) -> Path:
        """The HTTP API's bearer token (`locker.tokens`)."""
        return Path(str(self.values["Service:TokenFile"])).expanduser()

    @property
    def backups_path(self) -> Path:
        """Where `stella backup create` writes (without --output) and `backup list` looks."""
        return Path(str(self.values["Backups:Path"])).expanduser()

    @property
    def describe(self) -> bool:
        """Run the describe loop (`artifact.described` for every ingested artifact)."""
        return bool(self.values["Formats:Describe"])

    @property
    def sigstore_root_path(self) -> Path | None:
        """A Sigstore `trusted_root.json` that bundles are verified against offline; None: none."""
        value = str(self.values["Formats:SigstoreTrustedRoot"]).strip()
        return Path(value).expanduser() if value else None

    @property
    def trust_store_path(self) -> Path | None:
        """A folder of PEM public keys that DSSE signatures are checked against; None: no keys."""
        value = str(self.values["Formats:TrustStore"]).strip()
        return Path(value).expanduser() if value else None

    @property
    def archive_path(self) -> Path:
        """Where `stella evidence archive` writes when it is given no --output."""
        return Path(str(self.values["Archive:Path"])).expanduser()

    @property
    def anchor_backup_path(self) -> Path:
        """Where the service keeps a copy of every anchor it creates (`anchor recover` reads it)."""
        return Path(str(self.values["Anchors:BackupPath"])).expanduser()

    @property
    def origin(self) -> str:
        return str(self.values["Anchors:Origin"])

    @property
    def run_path(self) -> Path:
        return self.home / "run"

    @property
    def log_path(self) -> Path:
        return self.home / "logs"

    @property
    def bootstrap(self) -> str:
        return str(self.values["Kafka:Bootstrap"])

    @property
    def kafka_credentials_path(self) -> Path:
        """The folder of the Kafka principals' password files (`locker.kafka_auth`)."""
        return Path(str(self.values["Kafka:CredentialsPath"])).expanduser()

    @property
    def principal(self) -> kafka_auth.Role:
        """Who this process is to Kafka (`Kafka:Principal`)."""
        return kafka_auth.role(str(self.values["Kafka:Principal"]))

    def acting_as(self, who: kafka_auth.Role) -> Settings:
        """These settings with `Kafka:Principal` = `who` (the worker acts as the service)."""
        return dataclasses.replace(
            self,
            values={**self.values, "Kafka:Principal": who},
            sources={**self.sources, "Kafka:Principal": f"set by the process ({who})"},
        )

    def kafka_user(self, who: kafka_auth.Role) -> str:
        return str(self.values[f"Kafka:{who.title()}User"])

    def kafka_auth(self, who: kafka_auth.Role | None = None) -> kafka_auth.ClientAuth:
        """How a client of `who` (default: this process's principal) authenticates; reads its
        password file when the protocol is SASL. `UsageError` for an unknown protocol or mechanism."""
        protocol = str(self.values["Kafka:SecurityProtocol"]).strip().upper()
        mechanism = str(self.values["Kafka:SaslMechanism"]).strip().upper()
        if protocol not in kafka_auth.PROTOCOLS:
            known = ", ".join(kafka_auth.PROTOCOLS)
            raise UsageError(f"Kafka:SecurityProtocol must be one of {known}, got {protocol!r}")
        if mechanism not in kafka_auth.MECHANISMS:
            known = ", ".join(kafka_auth.MECHANISMS)
            raise UsageError(f"Kafka:SaslMechanism must be one of {known}, got {mechanism!r}")
        ca = str(self.values["Kafka:CaFile"]).strip()
        local_ca = self.kafka_credentials_path / kafka_auth.CA_FILE
        ca_file = Path(ca).expanduser() if ca else local_ca if local_ca.is_file() else None
        who = who or self.principal
        auth = kafka_auth.ClientAuth(protocol, mechanism, ca_file=ca_file)
        if not auth.sasl:
            return auth
        password = kafka_auth.read(self.kafka_credentials_path, who)
        return dataclasses.replace(auth, username=self.kafka_user(who), password=password)

    @property
    def topic_prefix(self) -> str:
        return str(self.values["Kafka:TopicPrefix"])

    @property
    def partitions(self) -> int:
        return self.integer("Kafka:Partitions")

    @property
    def group_id(self) -> str:
        return str(self.values["Kafka:GroupId"])

    @property
    def max_content_bytes(self) -> int:
        return self.integer("Ingest:MaxContentBytes")

    @property
    def api_port(self) -> int:
        """Where this worker's HTTP API listens: Service:Port + its number."""
        return self.integer("Service:Port") + self.worker

    @property
    def api_url(self) -> str:
        return f"http://{self.values['Service:Host']}:{self.api_port}"

    @property
    def timeout(self) -> float:
        return float(self.integer("Commands:Timeout"))

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"


def max_message_bytes(max_content_bytes: int) -> int:
    """Largest submission record: base64 of the content plus room for its metadata."""
    return 4 * -(-max_content_bytes // 3) + 64 * 1024


def check_home(home: Path) -> None:
    """Raise `StorageUnavailable` unless `home` is a folder or does not exist yet. Creates nothing."""
    try:
        mode = home.stat().st_mode
    except FileNotFoundError:
        return  # the first command that writes creates it
    except OSError as exc:
        raise StorageUnavailable(f"locker home {home} is unusable: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise StorageUnavailable(f"locker home {home} is not a folder")


def ensure_home(home: Path) -> None:
    """Create `home` if it is missing; raise `StorageUnavailable` unless it is a writable folder.

    For commands that write into the home; read-only queries call only `check_home`.
    """
    check_home(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailable(f"cannot create locker home {home}: {exc.strerror}") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise StorageUnavailable(f"locker home {home} is not writable")


def load(home: Path | None = None, flags: Mapping[str, object] | None = None) -> Settings:
    """The effective settings; raises `UsageError` for a bad config file, `StorageUnavailable` for a
    home that is not a folder."""
    home = home or default_home()
    check_home(home)
    values: dict[str, object] = {key: default for key, (default, _) in KEYS.items()}
    sources = dict.fromkeys(KEYS, "default")
    for key, value in read_file(home / "config.toml").items():
        values[key], sources[key] = value, "file"
    environ = {name.upper(): (name, raw) for name, raw in os.environ.items()}
    # Aliases first, so that the canonical variable wins when both are set.
    for env_name, env_key in [*ALIASES.items(), *((_env_name(key), key) for key in KEYS)]:
        if env_name in environ:
            name, raw = environ[env_name]
            values[env_key], sources[env_key] = _coerce(env_key, raw), f"env {name}"
    for name, value in (flags or {}).items():
        if value is not None:
            key = _canonical(name)
            values[key], sources[key] = _coerce(key, value), "flag"
    if values["Anchors:KeyFile"] is None:
        values["Anchors:KeyFile"] = str(home / "keys" / "anchor-signing.key")
        sources["Anchors:KeyFile"] = "default (STELLA_HOME/keys, outside the evidence path)"
    if values["Service:TokenFile"] is None:
        values["Service:TokenFile"] = str(home / "secrets" / "api-token")
        sources["Service:TokenFile"] = "default (STELLA_HOME/secrets)"
    if values["Kafka:CredentialsPath"] is None:
        values["Kafka:CredentialsPath"] = str(home / "secrets" / "kafka")
        sources["Kafka:CredentialsPath"] = "default (STELLA_HOME/secrets/kafka)"
    if values["S3:CredentialsFile"] is None:
        values["S3:CredentialsFile"] = str(home / "secrets" / "s3-credentials")
        sources["S3:CredentialsFile"] = "default (STELLA_HOME/secrets/s3-credentials)"
    if values["Backups:Path"] is None:
        values["Backups:Path"] = str(home / "backups" / "evidence-locker")
        sources["Backups:Path"] = "default (STELLA_HOME/backups/evidence-locker)"
    if values["Archive:Path"] is None:
        values["Archive:Path"] = str(home / "archives")
        sources["Archive:Path"] = "default (STELLA_HOME/archives)"
    if values["Anchors:BackupPath"] is None:
        values["Anchors:BackupPath"] = str(home / "backups" / "anchors")
        sources["Anchors:BackupPath"] = "default (STELLA_HOME/backups/anchors)"
    if values["EvidenceLocker:Path"] is None:
        values["EvidenceLocker:Path"] = str(home / "evidence")
        sources["EvidenceLocker:Path"] = "default (STELLA_HOME/evidence)"
    return Settings(home=home, values=values, sources=sources)


def read_file(path: Path) -> dict[str, object]:
    """The keys set in the config file at `path` ({} if there is none); `UsageError` if it is bad."""
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a folder, not a file") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, object] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"{path}: top-level key {section!r} must be a [section]")
        for name, value in table.items():
            key = _canonical(f"{section}:{name}")
            flat[key] = _coerce(key, value)
    return flat


def write_value(home: Path, key: str, raw: str) -> object:
    """Set `key` in the config file, keeping the other keys; returns the stored value."""
    key = _canonical(key)
    value = _coerce(key, raw)
    ensure_home(home)
    path = home / "config.toml"
    current = read_file(path)
    current[key] = value
    sections: dict[str, dict[str, object]] = {}
    for full, val in sorted(current.items()):
        section, name = full.split(":", 1)
        sections.setdefault(section, {})[name] = val
    lines: list[str] = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {json.dumps(val, ensure_ascii=False)}" for name, val in table.items()]
        lines.append("")
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return value


def _canonical(key: str) -> str:
    for known in KEYS:
        if known.lower() == key.lower():
            return known
    raise UsageError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}")


def _env_name(key: str) -> str:
    return "STELLA_" + key.replace(":", "__").upper()


def _coerce(key: str, value: object) -> object:
    _, kind = KEYS[key]
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise UsageError(f"{key} must be an integer, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise UsageError(f"{key} must be true or false, got {value!r}")
    return str(value)
