"""`stella doctor [--category evidence|kafka|storage|anchors|all] [--check ID]`: named health checks.

Each check answers ok, warn or fail with a one-line finding and, unless ok, a remedy. The checks
only read (the storage checks write and delete one small probe file); none needs the service, and
each says so when what it asks of is down. The broker is asked once, with a time limit, for
everything the Kafka and projection checks need.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from locker.config import Settings
from locker.errors import LockerError, StorageUnavailable, UsageError
from locker.sizes import human
from projections.tracking import TrackedStore
from streams.topics import Topics

if TYPE_CHECKING:
    from locker.anchors import AnchorCreated

CATEGORIES = ("evidence", "kafka", "storage", "anchors")
ORDER = {"ok": 0, "warn": 1, "fail": 2}
BROKER_WAIT = 5.0  # seconds the broker is given to answer everything the checks ask of it
LAG_WARN = 10_000  # records a projection may be behind its topic before that is worth a look


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One check's answer."""

    id: str
    category: str
    status: str  # ok | warn | fail
    finding: str
    remedy: str = ""
    seconds: float = 0.0


class Report(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # the worst of the checks'
    checks: list[Check]


Finding = tuple[str, str, str]  # (status, finding, remedy)
NOT_CHECKED = ("fail", "not checked: the broker does not answer (check.kafka.broker)", "start the broker")


def ok(finding: str) -> Finding:
    return "ok", finding, ""


# The broker, asked once ---------------------------------------------------------------------------
@dataclass
class TopicFacts:
    partitions: int
    replication: int
    config: dict[str, str]


@dataclass
class BrokerFacts:
    error: str = ""
    brokers: int = 0
    controller: int = -1
    api_versions: dict[int, int] = field(default_factory=dict)  # api key -> highest version
    topics: dict[str, TopicFacts] = field(default_factory=dict)
    ends: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> partition -> end offset


async def _ask_broker(settings: Settings) -> BrokerFacts:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.protocol.admin import ApiVersionRequest

    from streams.kafka import admin, consumer, record_end
    from streams.topics import specs

    facts = BrokerFacts()
    names = [spec.name for spec in specs(settings)]
    async with admin(settings) as client:
        cluster = await client.describe_cluster()
        facts.brokers, facts.controller = len(cluster["brokers"]), cluster["controller_id"]
        node = cluster["brokers"][0]["node_id"]
        versions = await client._client.send(node, ApiVersionRequest())
        facts.api_versions = {key: high for key, _, high in versions.api_versions}
        existing = set(await client.list_topics())
        present = [name for name in names if name in existing]
        if present:
            described = await client.describe_topics(present)
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in present]
            configs = await client.describe_configs(resources)
            by_name = {}
            for response in configs:
                for _, _, _, name, entries in response.resources:
                    by_name[name] = {entry[0]: entry[1] for entry in entries}
            for topic in described:
                partitions = topic["partitions"]
                facts.topics[topic["topic"]] = TopicFacts(
                    len(partitions),
                    min((len(p["replicas"]) for p in partitions), default=0),
                    by_name.get(topic["topic"], {}),
                )
    async with consumer(settings) as c:
        from aiokafka import TopicPartition

        tps = [TopicPartition(name, p) for name, t in facts.topics.items() for p in range(t.partitions)]
        if tps:
            ends = await c.end_offsets(tps)
            anchors = Topics(settings.topic_prefix).anchors
            for tp, end in ends.items():
                # The chain store applies records; the anchors topic also holds transaction markers.
                if tp.topic == anchors:
                    c.assign([tp])
                    end = await record_end(c, tp)
                facts.ends.setdefault(tp.topic, {})[tp.partition] = end
    return facts


class Context:
    """What the checks share: the settings, and what the broker said (asked on first need)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def broker(self) -> BrokerFacts:
        try:
            return asyncio.run(asyncio.wait_for(_ask_broker(self.settings), BROKER_WAIT))
        except TimeoutError:
            return BrokerFacts(
                error=f"Kafka at {self.settings.bootstrap} did not answer in {BROKER_WAIT:.0f} s"
            )
        except LockerError as exc:
            return BrokerFacts(error=str(exc))

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)


# kafka -------------------------------------------------------------------------------------------
def broker(ctx: Context) -> Finding:
    facts = ctx.broker
    if facts.error:
        return "fail", facts.error, "start the broker (`stella broker start`) or fix Kafka:Bootstrap"
    fetch = facts.api_versions.get(1, -1)
    produce = facts.api_versions.get(0, -1)
    version = _local_version(ctx.settings)
    told = f"Kafka {version}" if version else f"Produce v{produce}, Fetch v{fetch}"
    found = f"{ctx.settings.bootstrap}: {facts.brokers} broker(s), controller {facts.controller}; {told}"
    if produce < 3:  # record batches (Kafka 0.11): what idempotent, acks=all publishing needs
        return "fail", found + ": too old for idempotent producers", "use Apache Kafka 2.8 or newer"
    return ok(found)


def access(ctx: Context) -> Finding:
    """Does the locker log in to Kafka, and are its password files owner-only?"""
    from locker import kafka_auth

    settings = ctx.settings
    try:
        auth = settings.kafka_auth()
    except LockerError as exc:
        return "fail", str(exc), exc.hint
    if not auth.sasl:
        return (
            "warn",
            f"Kafka:SecurityProtocol is {auth.protocol}: no logins, so no ACLs, and anyone who reaches "
            "the broker can append events and commands",
            'use SASL (README, "Kafka principals and ACLs")',
        )
    problems = []
    for who in kafka_auth.ROLES:
        if who == "producer" or (who == "admin" and not _local_version(settings)):
            continue  # producers' password is for them; an existing cluster's admin is not ours
        try:
            kafka_auth.read(settings.kafka_credentials_path, who)
        except LockerError as exc:
            problems.append(str(exc))
    if problems:
        return "fail", "; ".join(problems), "`stella broker start` creates the local broker's; chmod 600"
    if ctx.broker.error:
        return NOT_CHECKED
    who = settings.principal
    return ok(
        f"{auth.protocol} {auth.mechanism} as {who} ({settings.kafka_user(who)}); password files "
        f"mode 0600 in {settings.kafka_credentials_path}"
    )


def _local_version(settings: Settings) -> str:
    """The version of the locker's own broker, when Kafka:Bootstrap is it."""
    from commands.broker import KAFKA_VERSION

    local = f"127.0.0.1:{settings.integer('Broker:Port')}", f"localhost:{settings.integer('Broker:Port')}"
    return KAFKA_VERSION if settings.bootstrap in local else ""


def topics(ctx: Context) -> Finding:
    from streams.topics import specs

    facts = ctx.broker
    if facts.error:
        return NOT_CHECKED
    problems: list[str] = []
    warnings: list[str] = []
    forever = {ctx.topics.events, ctx.topics.anchors}
    for spec in specs(ctx.settings):
        found = facts.topics.get(spec.name)
        if found is None:
            problems.append(f"{spec.name} is missing")
            continue
        config = found.config
        if found.partitions != spec.partitions:
            problems.append(f"{spec.name} has {found.partitions} partitions, not {spec.partitions}")
        if spec.name in forever:
            if config.get("retention.ms") != "-1" or config.get("retention.bytes", "-1") != "-1":
                problems.append(f"{spec.name} expires records (retention.ms={config.get('retention.ms')})")
            if "compact" in config.get("cleanup.policy", ""):
                problems.append(f"{spec.name} is compacted (cleanup.policy={config.get('cleanup.policy')})")
        insync = int(config.get("min.insync.replicas", "1"))
        if insync > found.replication:
            problems.append(
                f"{spec.name}: min.insync.replicas {insync} > replication factor {found.replication}"
            )
        elif found.replication >= 3 and insync < 2:
            warnings.append(f"{spec.name}: min.insync.replicas 1 with {found.replication} replicas")
    if problems:
        remedy = "`stella init` creates missing topics; fix the others' configs with kafka-configs.sh"
        return "fail", "; ".join(problems), remedy
    if warnings:
        return "warn", "; ".join(warnings), "set min.insync.replicas=2 so acks=all means two copies"
    count = len(specs(ctx.settings))
    return ok(f"{count} topics with their configs; {ctx.topics.events} and {ctx.topics.anchors} never expire")


# evidence ----------------------------------------------------------------------------------------
def config_valid(ctx: Context) -> Finding:
    s = ctx.settings
    problems = []
    checks: list[Callable[[], object]] = [
        s.retention_policy,
        lambda: s.free_space_reserve,
        lambda: s.replica_path,
        lambda: _positive(s, "Kafka:Partitions"),
        lambda: _positive(s, "Anchors:Interval"),
        lambda: _port(s, "Service:Port"),
        lambda: _port(s, "Broker:Port"),
    ]
    if s.trust_store_path is not None or s.sigstore_root_path is not None:
        from locker import trust

        checks += [
            lambda: trust.trust_store(s.trust_store_path),
            lambda: trust.sigstore_root(s.sigstore_root_path),
        ]
    for check in checks:
        try:
            check()
        except LockerError as exc:
            problems.append(str(exc))
    where = s.home / "config.json"
    if problems:
        return "fail", "; ".join(problems), f"fix the value with `stella config set` (file: {where})"
    return ok(f"every setting parses (home {s.home})")


def _positive(settings: Settings, key: str) -> None:
    if settings.integer(key) < 1:
        raise UsageError(f"{key} must be 1 or more, not {settings.integer(key)}")


def _port(settings: Settings, key: str) -> None:
    if not 0 < settings.integer(key) < 65536:
        raise UsageError(f"{key} {settings.integer(key)} is not a port")


def api_token(ctx: Context) -> Finding:
    """The API's bearer token: present, the owner's alone; required when the API is exposed."""
    from locker import tokens

    path, host = ctx.settings.token_file, str(ctx.settings.get("Service:Host"))
    try:
        token = tokens.read(path)
    except LockerError as exc:
        return "fail", str(exc), f"chmod 600 {path}, or remove it and run `stella init`"
    if token is None:
        status = "warn" if tokens.is_loopback(host) else "fail"
        return status, f"no API token at {path}: the routes that list artifacts answer 401", "`stella init`"
    where = "loopback only" if tokens.is_loopback(host) else f"{host}, beyond loopback"
    return ok(f"{path} holds a token only its owner can read; the API listens on {where}")


def service(ctx: Context) -> Finding:
    from commands import service as service_ops

    state = service_ops.status(ctx.settings)
    if not state["running"]:
        return "fail", "the service is not running", "`stella service start`"
    health = service_ops.health(ctx.settings) or {}
    status = health.get("status", "no answer")
    if status == "ok":
        return ok(f"running (pid {state['pid']}), healthy at {ctx.settings.api_url}")
    log = ctx.settings.log_path / "service.log"
    return "warn" if status == "starting" else "fail", f"running but {status}", f"read {log}"


def projections(ctx: Context) -> Finding:
    """How far each projection store is behind its topic (what it has applied, from the store)."""
    facts = ctx.broker
    if facts.error:
        return NOT_CHECKED
    s, t = ctx.settings, ctx.topics
    stores = [
        ("index", s.index_path, t.events),
        ("merkle", s.merkle_path, t.events),
        ("anchors", s.chain_path, t.anchors),
        ("verify", s.verify_path, t.verify_tasks),
    ]
    lags, ahead = {}, []
    for name, path, topic in stores:
        ends = facts.ends.get(topic, {})
        if not path.exists():
            lags[name] = sum(ends.values())
            continue
        with TrackedStore.followed(path) as store:
            applied = store.applied()
        lags[name] = sum(max(end - (applied.get(p, -1) + 1), 0) for p, end in ends.items())
        ahead += [f"{name}[{p}]" for p, end in ends.items() if applied.get(p, -1) + 1 > end]
    found = ", ".join(f"{name} {lag}" for name, lag in lags.items())
    if ahead:
        return (
            "fail",
            f"applied past the log's end: {', '.join(ahead)} (the topics were recreated?)",
            f"restore the log from a backup (runbook DR-001), or stop the service and move "
            f"{ctx.settings.state_path} aside: it rebuilds every store from the log it finds",
        )
    behind = sum(lags.values())
    if behind >= LAG_WARN:
        return "warn", f"records not yet applied: {found}", "let the service catch up; see its /healthz"
    if behind and not _service_running(ctx.settings):
        return (
            "warn",
            f"records not yet applied: {found}, and no service applies them",
            "`stella service start`",
        )
    return ok(f"records not yet applied: {found}")


def _service_running(settings: Settings) -> bool:
    from commands import service as service_ops

    return service_ops.any_pid(settings) is not None


def index(ctx: Context) -> Finding:
    from commands import index as index_ops

    if not ctx.settings.index_path.exists():
        return "warn", "no index yet", "`stella service start` builds it"
    try:
        status = index_ops.status(ctx.settings, sample=10)
    except LockerError as exc:
        return "fail", str(exc), "`stella evidence index rebuild`"
    if "broker_error" in status:
        return (
            "fail",
            f"{status['entries']} entries; not sampled: {status['broker_error']}",
            "start the broker",
        )
    sample = status["sample_check"]
    if sample["mismatches"]:
        first = sample["mismatches"][0]
        found = (
            f"{len(sample['mismatches'])} of {sample['rows_checked']} sampled rows disagree with their events"
        )
        return (
            "fail",
            f"{found}, first {first['artifact_id']}: {first['problem']}",
            "`stella evidence index rebuild`",
        )
    return ok(f"{status['entries']} entries; {sample['rows_checked']} sampled rows match their events")


# storage -----------------------------------------------------------------------------------------
def evidence_storage(ctx: Context) -> Finding:
    if ctx.settings.backend == "s3":
        return _s3_store(ctx.settings)
    return _storage_root(ctx.settings.evidence_path, ctx.settings.free_space_reserve, "EvidenceLocker:Path")


def replica(ctx: Context) -> Finding:
    path = ctx.settings.replica_path
    if path is None:
        return (
            "warn",
            "no replica: a corrupted blob can only come back from a backup or an archive",
            "`stella config set EvidenceLocker:ReplicaPath <folder on another disk>`",
        )
    return _storage_root(path, ctx.settings.free_space_reserve, "EvidenceLocker:ReplicaPath")


def _s3_store(settings: Settings) -> Finding:
    """The bucket answers, and a probe object can be written, read back and deleted."""
    from locker.s3store import S3BlobStore

    remedy = "check S3:Endpoint, S3:Bucket, S3:Prefix and the credentials (S3:CredentialsFile)"
    try:
        store = S3BlobStore.from_settings(settings)
        seconds = store.probe()
    except UsageError as exc:
        return "fail", str(exc), 'fix the S3:* keys (README, "S3 object storage")'
    except StorageUnavailable as exc:
        return "fail", str(exc), remedy
    return ok(f"{store.location} writable: a probe object written, read back and deleted in {seconds:.2f} s")


def _storage_root(root: Path, reserve: int, key: str) -> Finding:
    from locker.cas import BlobStore

    store = BlobStore(root.expanduser())
    if not store.blobs.is_dir():
        return "fail", f"{root} is not a blob store", f"`stella init`, or fix {key}"
    try:  # a real write: permission bits say nothing to root, a read-only mount says it here
        fd, name = tempfile.mkstemp(prefix="doctor-", suffix=".tmp", dir=store.tmp)
        os.write(fd, b"probe")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return "fail", f"{root} is not writable: {exc.strerror}", f"check the mount and permissions of {root}"
    usage = store.disk_usage()
    if usage is None:
        return "fail", f"{root}: free space unknown", f"check the mount of {root}"
    found = f"{root} writable; {human(usage.free)} free of {human(usage.total)}, reserve {human(reserve)}"
    if usage.free < reserve:
        return "fail", found + ": ingest refuses new artifacts", "free room: runbook INC-004 (Storage Full)"
    if usage.free < 2 * reserve:
        return "warn", found + ": near the reserve", "free room: runbook SP-004 (Storage Cleanup)"
    return ok(found)


# anchors -----------------------------------------------------------------------------------------
def signing_key(ctx: Context) -> Finding:
    path = ctx.settings.key_file
    try:
        info = path.stat()
        path.read_bytes()
    except OSError as exc:
        return "fail", f"{path}: {exc.strerror}: anchoring is off", "`stella init` creates the key"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return "fail", f"{path} has mode {mode:04o}: others can read the signing key", f"chmod 600 {path}"
    if info.st_uid != os.geteuid():
        return "fail", f"{path} belongs to uid {info.st_uid}, not this user ({os.geteuid()})", f"chown {path}"
    return ok(f"{path} readable, mode {mode:04o}, owned by this user")


def anchor_age(ctx: Context) -> Finding:
    from commands.anchors import chain_view

    interval = ctx.settings.integer("Anchors:Interval")
    if ctx.broker.error:  # the chain view reads the anchors topic's end
        return NOT_CHECKED
    with chain_view(ctx.settings) as chain:
        latest = chain.latest()
    if latest is None or latest.created_at is None:
        return "warn", "no anchor yet", "`stella evidence anchor create`"
    age = (datetime.now(UTC) - latest.created_at).total_seconds()
    policy = f"policy: every {_duration(interval)}"
    found = f"latest anchor {latest.anchor_id[:19]}… is {_duration(age)} old ({policy})"
    if age <= interval:
        return ok(found)
    covered = _covers_the_log(ctx, latest.anchor())
    if covered:
        return ok(found + "; nothing new since")
    status = "fail" if age > 2 * interval else "warn"
    return status, found + ", and events came since", "`stella evidence anchor create`; check the service log"


def _covers_the_log(ctx: Context, anchor: AnchorCreated) -> bool:
    ends = ctx.broker.ends.get(ctx.topics.events)
    if ctx.broker.error or ends is None:
        return False
    sizes = {h.partition: h.tree_size for h in anchor.body.partitions}
    return all(sizes.get(p, 0) >= end for p, end in ends.items())


def chain(ctx: Context) -> Finding:
    from commands.anchors import verify_latest
    from locker.errors import NotFound

    if ctx.broker.error:
        return NOT_CHECKED
    try:
        result = verify_latest(ctx.settings)
    except NotFound:
        return "warn", "no anchor yet", "`stella evidence anchor create`"
    except LockerError as exc:
        return "fail", str(exc), "`stella evidence anchor verify --all --verbose`"
    if not result["verified"]:
        first = result["breaks"][0]
        return "fail", f"the latest anchor does not verify: {first}", "runbook INC-003 (Anchor Chain Break)"
    return ok(f"the latest anchor {result['latest'][:19]}… verifies: signature, link, consistency, roots")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


# The checks, in the order they run and print.
CHECKS: dict[str, tuple[str, Callable[[Context], Finding]]] = {
    "check.evidence.config": ("evidence", config_valid),
    "check.evidence.service": ("evidence", service),
    "check.evidence.api-token": ("evidence", api_token),
    "check.evidence.projections": ("evidence", projections),
    "check.evidence.index": ("evidence", index),
    "check.kafka.broker": ("kafka", broker),
    "check.kafka.topics": ("kafka", topics),
    "check.kafka.access": ("kafka", access),
    "check.storage.evidencelocker": ("storage", evidence_storage),
    "check.storage.replica": ("storage", replica),
    "check.anchors.signing-key": ("anchors", signing_key),
    "check.anchors.age": ("anchors", anchor_age),
    "check.anchors.chain": ("anchors", chain),
}


def run(settings: Settings, *, category: str = "all", check_id: str | None = None) -> Report:
    if check_id is not None:
        if check_id not in CHECKS:
            raise UsageError(f"--check {check_id!r}: one of {', '.join(CHECKS)}")
        chosen = [check_id]
    elif category == "all":
        chosen = list(CHECKS)
    elif category in CATEGORIES:
        chosen = [cid for cid, (cat, _) in CHECKS.items() if cat == category]
    else:
        raise UsageError(f"--category {category!r}: one of {', '.join((*CATEGORIES, 'all'))}")
    ctx = Context(settings)
    checks = [_run_one(ctx, cid) for cid in chosen]
    worst = max((c.status for c in checks), key=ORDER.__getitem__, default="ok")
    return Report(status=worst, checks=checks)


def _run_one(ctx: Context, check_id: str) -> Check:
    category, fn = CHECKS[check_id]
    started = time.perf_counter()
    try:
        status, finding, remedy = fn(ctx)
    except LockerError as exc:  # what a check did not foresee is its finding, not the end of the run
        status, finding, remedy = "fail", str(exc), "see the finding"
    except Exception as exc:  # noqa: BLE001 - a bug in one check must not hide the others' answers
        status, finding = "fail", f"the check itself failed: {type(exc).__name__}: {exc}"
        remedy = "a bug: run again with STELLA_TRACEBACK=1 and report it"
    seconds = round(time.perf_counter() - started, 3)
    return Check(
        id=check_id, category=category, status=status, finding=finding, remedy=remedy, seconds=seconds
    )
