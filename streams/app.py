"""The worker: faust supervises the batch loops, the commands loop, the timers and the API.

The high-volume loops (`streams.runtime.Loop`) are faust app dependencies, started and stopped
with it:
- ingest: `evidence.submissions` -> durable blobs -> `evidence.events` (`streams.ingest`), in the
  consumer group `Kafka:GroupId` + `-ingest`, committed after its events are acknowledged: the
  workers of a locker share the submissions partitions;
- projections: every partition of `evidence.events` -> the index and the Merkle trees
  (`streams.project`), positioned by the stores' applied offsets, never by a group: every worker
  holds the whole index and every tree, so any worker answers any query;
- anchors: `evidence.anchors` -> the anchor chain projection (`streams.chain`), likewise.
The commands loop (`streams.leadership`) elects the leader, which alone runs commands and writes
anchors. faust keeps what it is good at and what is low volume: service supervision, the
timers and the web server. README, "How it works", says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from datetime import UTC, datetime
from functools import partial

import faust
import structlog
from aiokafka.errors import KafkaError

from locker import requests, signing, trust
from locker.cas import Blobs, BlobStore
from locker.config import Settings, max_message_bytes
from locker.digests import is_digest
from locker.errors import ArtifactNotFound, IntegrityError, InvalidInput, LockerError, NotFound, UsageError
from locker.events import (
    ArtifactExpired,
    ArtifactHoldReleased,
    ArtifactHoldSet,
    ArtifactMarkedCorrupted,
    ArtifactRecovered,
    BackupCreated,
    RetentionApplied,
    StateRestored,
    encode,
)
from locker.files import write_durably
from locker.kafka_auth import ClientAuth
from locker.retention import from_max_ages
from projections import archiving, retention
from projections.anchor_store import AnchorStore
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from projections.verify_store import VerifyStore
from streams import chain as anchor_chain
from streams import describe, ingest, project, replicate, verify, webserver
from streams.anchoring import Anchorer, AnchorWriter
from streams.api import install_api
from streams.blob_writer import BlobWriter
from streams.kafka import Record
from streams.leadership import Leadership
from streams.metrics import Metrics
from streams.publisher import BatchPublisher
from streams.reader import read_range
from streams.replicate import Replicating
from streams.runtime import Loop, dead_letter
from streams.services import Services
from streams.topics import Topics, anchor_writer_id
from streams.verify import Checker, Verifying

log = structlog.get_logger("stella.worker")

INGEST_BATCH = 2000
PROJECTION_BATCH = 5000


def instance_id(settings: Settings) -> str:
    """This worker's static member id in its consumer groups (KIP-345): a worker restarted after a
    crash takes its partitions back at once instead of waiting out the dead member's session.
    Local workers of one locker differ by their number."""
    own = f"{socket.gethostname()}-{hashlib.sha256(str(settings.home).encode()).hexdigest()[:12]}"
    return own if settings.worker == 0 else f"{own}-{settings.worker}"


def consumer_options(settings: Settings) -> dict[str, object]:
    return {
        "bootstrap_servers": settings.bootstrap,
        **settings.kafka_auth().aiokafka(),
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",  # see streams.anchoring
        "max_partition_fetch_bytes": max_message_bytes(settings.max_content_bytes),
        "fetch_max_bytes": 64 * 1024 * 1024,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }


def faust_credentials(auth: ClientAuth) -> faust.types.auth.CredentialsT | None:
    """faust's own Kafka clients log in as the batch runtime's do."""
    if auth.sasl:
        return faust.SASLCredentials(
            username=auth.username,
            password=auth.password,
            mechanism=auth.mechanism,
            ssl_context=auth.ssl_context(),
        )
    if auth.tls:
        return faust.SSLCredentials(auth.ssl_context())
    return None


def create_app(
    settings: Settings,
    blobs: Blobs,
    index: IndexStore,
    trees: MerkleStore,
    chain: AnchorStore,
    verifications: VerifyStore,
    signer: signing.Signer | None = None,
    token: str | None = None,
) -> faust.App:
    topics = Topics(settings.topic_prefix)
    trusted = trust.trust_store(settings.trust_store_path)  # a bad key stops the start here
    sigstore_root = trust.sigstore_root(settings.sigstore_root_path)  # and so does a bad root
    host, port = str(settings.get("Service:Host")), settings.api_port
    app = webserver.App(
        settings.group_id,
        limits=webserver.limits(settings),
        broker=f"kafka://{settings.bootstrap}",
        datadir=str(settings.state_path / "faust"),
        web_enabled=True,
        web_bind=host,
        web_host=host,
        web_port=port,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
        consumer_group_instance_id=instance_id(settings),
        broker_credentials=faust_credentials(settings.kafka_auth()),
    )
    publisher = BatchPublisher(
        bootstrap_servers=settings.bootstrap,
        **settings.kafka_auth().aiokafka(),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1 << 20,  # a batch of events is one produce request per partition, not 50
        max_request_size=max_message_bytes(settings.max_content_bytes),
    )
    app.add_dependency(publisher)
    blob_writer = BlobWriter(blobs)
    app.add_dependency(blob_writer)
    verifier = None if signer is None else signer.verifier
    services = Services(
        topics,
        blobs,
        index,
        trees,
        chain,
        verifier,
        settings.max_content_bytes,
        log=partial(read_range, settings, topics.events),
        reserve=settings.free_space_reserve,
        free_bytes=blobs.free_bytes,
        replica=None if settings.replica_path is None else BlobStore(settings.replica_path),
    )
    every_events = settings.integer("Anchors:EveryEvents")
    since_anchor = 0

    async def anchor(correlation_id: str = "", new_chain_reason: str = "", continue_from: str = "") -> str:
        """Create an anchor; returns "" or why it could not. Never raises: a failed anchor must not
        stop what asked for it (the timer, the projection loop, a command)."""
        nonlocal since_anchor
        if anchorer is None:
            log.warning("anchoring is off: no signing key", key_file=str(settings.key_file))
            return f"anchoring is off: no signing key at {settings.key_file}"
        if not leadership.leading:
            return "this worker is not the leader: only the leader writes anchors"
        since_anchor = 0
        try:
            await anchorer.create(correlation_id, new_chain_reason, continue_from)
        except (LockerError, KafkaError) as exc:
            log.error("anchoring failed", error=str(exc))
            return str(exc)
        return ""

    async def count_for_anchoring(batch: list[Record]) -> None:
        nonlocal since_anchor
        since_anchor += len(batch)
        if every_events and since_anchor >= every_events:
            await anchor()

    chain_loop = Loop(
        "anchors",
        topic=topics.anchors,
        handler=partial(anchor_chain.handle, services),
        publisher=publisher,
        dlq_topic=topics.dlq,
        # The anchor writer asks this loop's consumer for the topic's end (`wait_caught_up`), and
        # the broker answers only once the consumer's waiting fetch returns: keep that wait short
        # (500 ms by default made `anchor create` take half a second).
        consumer_options=consumer_options(settings) | {"fetch_max_wait_ms": 50},
        tracked=(chain,),
        max_records=100,
    )
    writer = AnchorWriter(
        anchor_writer_id(settings),
        bootstrap_servers=settings.bootstrap,
        **settings.kafka_auth().aiokafka(),
    )
    anchorer = (
        None if signer is None else Anchorer(settings, trees, chain, chain_loop, signer, publisher, writer)
    )
    loops = [
        chain_loop,
        Loop(
            "ingest",
            topic=topics.submissions,
            handler=partial(ingest.handle, services),
            publisher=publisher,
            dlq_topic=topics.dlq,
            consumer_options=consumer_options(settings),
            group_id=f"{settings.group_id}-ingest",
            group_instance_id=instance_id(settings),
            blob_sink=blob_writer.put_many,
            max_records=INGEST_BATCH,
        ),
        Loop(
            "projections",
            topic=topics.events,
            handler=partial(project.handle, services),
            publisher=publisher,
            dlq_topic=topics.dlq,
            # Bigger batches under load (the broker waits up to 100 ms for 256 KiB): fewer, larger
            # RocksDB write batches; an idle log still answers within 100 ms.
            consumer_options=consumer_options(settings)
            | {"fetch_min_bytes": 256 * 1024, "fetch_max_wait_ms": 100},
            tracked=(index, trees),
            on_batch=count_for_anchoring,
            max_records=PROJECTION_BATCH,
        ),
    ]
    if settings.describe:
        loops.append(
            Loop(
                "describe",
                topic=topics.events,
                handler=partial(describe.handle, describe.Describing(topics, blobs, trusted, sigstore_root)),
                publisher=publisher,
                dlq_topic=topics.dlq,
                consumer_options=consumer_options(settings),
                group_id=f"{settings.group_id}-describe",
                group_instance_id=instance_id(settings),
                # One blob at a time is read and parsed (none is kept): big batches, few publishes.
                max_records=2000,
            )
        )
    replica = None if settings.replica_path is None else BlobStore(settings.replica_path)
    if replica is not None:

        async def into_replica(items: list[tuple[str, bytes]]) -> None:
            await asyncio.to_thread(replica.put_many, items)

        loops.append(
            Loop(
                "replicate",
                topic=topics.events,
                handler=partial(replicate.handle, Replicating(topics, blobs, replica)),
                publisher=publisher,
                dlq_topic=topics.dlq,
                consumer_options=consumer_options(settings),
                group_id=f"{settings.group_id}-replicate",
                group_instance_id=instance_id(settings),
                blob_sink=into_replica,
                max_records=32,  # blobs of up to Ingest:MaxContentBytes each are read into memory
            )
        )
    checker = Checker(blobs)
    app.add_dependency(checker)
    verifying = Verifying(
        topics,
        blobs,
        verifications,
        settings.plans_path,
        replica,
        settings.auto_recover and replica is not None,
        worker=instance_id(settings),
    )
    completing = asyncio.Lock()

    async def complete_runs(batch: object = None) -> None:
        async with completing:
            await verify.complete_finished(verifying, publisher)

    loops.append(
        Loop(
            "verify",
            topic=topics.verify_tasks,
            handler=partial(verify.handle, verifying, checker.check_all),
            publisher=publisher,
            dlq_topic=topics.dlq,
            consumer_options=consumer_options(settings),
            tracked=(verifications,),
            blob_sink=partial(verify.restore_all, blobs),
            on_batch=complete_runs,
            max_records=8,  # tasks of 64 artifacts: up to 512 blobs a batch
        )
    )
    metrics = Metrics()
    for loop in loops:
        loop.counting = metrics
        app.add_dependency(loop)

    async def refuse(record: Record, error: InvalidInput) -> None:
        await publisher.publish(
            topics.dlq, [(record.key, record.value, dead_letter(record, error).headers())]
        )

    async def recover(record: Record, command: requests.RecoverAnchor) -> None:
        if anchorer is None:
            await refuse(record, InvalidInput("anchoring-failed", "anchoring is off: no signing key"))
            return
        try:
            await anchorer.recover(command)
        except InvalidInput as error:
            await refuse(record, error)

    async def start_verification(record: Record, command: requests.StartVerification) -> None:
        try:
            as_of = None
            if command.to_anchor:
                _, found = chain.find(command.to_anchor)
                as_of = {h.partition: h.last_offset for h in found.body.partitions if h.tree_size}
            await verify.start_run(verifying, publisher, settings, index, command, as_of)
        except InvalidInput as error:
            await refuse(record, error)
        except UsageError as error:
            await refuse(record, InvalidInput("schema-invalid", str(error)))
        except NotFound as error:
            await refuse(record, InvalidInput("not-found", str(error)))

    async def refused_unless_indexed(record: Record, artifact_id: str) -> bool:
        """Dead-letter a command about an artifact the index does not hold; True if it did."""
        if is_digest(artifact_id) and index.get(artifact_id) is not None:
            return False
        await refuse(record, InvalidInput("not-found", f"artifact {artifact_id[:80]} is not in the index"))
        return True

    async def mark_corrupted(record: Record, command: requests.MarkCorrupted) -> None:
        if await refused_unless_indexed(record, command.artifact_id):
            return
        event = ArtifactMarkedCorrupted(
            artifact_id=command.artifact_id,
            reason=command.reason,
            actor=command.requested_by,
            marked_at=datetime.now(UTC),
            correlation_id=command.command_id,
        )
        await publisher.publish(topics.events, [(command.artifact_id.encode(), encode(event), [])])

    async def apply_retention(record: Record, command: requests.ApplyRetention) -> None:
        """`artifact.expired` for every artifact the policy expires now (decided from the index,
        holds exempt), then `retention.applied`; the projection deletes the blobs."""
        try:
            policy = from_max_ages(command.max_ages)
        except UsageError as error:
            await refuse(record, InvalidInput("schema-invalid", str(error)))
            return
        now = datetime.now(UTC)
        aggressive = command.aggressive
        found = await asyncio.to_thread(lambda: [r for r in index.records() if retention.due(r, policy, now)])
        expired = [
            ArtifactExpired(
                artifact_id=r.artifact_id,
                kind=r.kind,
                size=r.size,
                max_age=command.max_ages.get(r.kind, "forever"),
                aggressive=aggressive,
                actor=command.requested_by,
                expired_at=now,
                correlation_id=command.command_id,
            )
            for r in found
        ]
        for start in range(0, len(expired), 1000):
            chunk = expired[start : start + 1000]
            await publisher.publish(topics.events, [(e.artifact_id.encode(), encode(e), []) for e in chunk])
        done = RetentionApplied(
            run_id=command.command_id,
            expired=len(expired),
            bytes=sum(e.size for e in expired),
            aggressive=aggressive,
            policy=dict(command.max_ages),
            actor=command.requested_by,
            applied_at=datetime.now(UTC),
            correlation_id=command.command_id,
        )
        await publisher.publish(topics.events, [(command.command_id.encode(), encode(done), [])])
        log.info("retention applied", expired=len(expired), aggressive=aggressive)

    async def record_archive(record: Record, command: requests.RecordArchive) -> None:
        """`artifact.archived` for each artifact of the command the index still holds as ingested
        and not held (`projections.archiving`), then `archive.recorded`; the projection deletes
        their blobs."""
        try:
            check_archive_command(command)
            chain.find(command.anchor_id)
        except InvalidInput as error:
            await refuse(record, error)
            return
        except NotFound as error:
            await refuse(record, InvalidInput("not-found", str(error)))
            return
        ids = [i for i in dict.fromkeys(command.artifact_ids) if is_digest(i)]
        records = dict(zip(ids, await asyncio.to_thread(lambda: [index.get(i) for i in ids]), strict=True))
        archived, done = archiving.decide(command, records, datetime.now(UTC))
        for start in range(0, len(archived), 1000):
            chunk = archived[start : start + 1000]
            await publisher.publish(topics.events, [(e.artifact_id.encode(), encode(e), []) for e in chunk])
        await publisher.publish(topics.events, [(command.command_id.encode(), encode(done), [])])
        log.info("archive recorded", archive_id=command.archive_id, part=command.part, archived=len(archived))

    async def hold_artifact(record: Record, command: requests.HoldArtifact) -> None:
        if await refused_unless_indexed(record, command.artifact_id):
            return
        now = datetime.now(UTC)
        event: ArtifactHoldSet | ArtifactHoldReleased
        if command.release:
            event = ArtifactHoldReleased(
                artifact_id=command.artifact_id,
                reason=command.reason,
                actor=command.requested_by,
                released_at=now,
                correlation_id=command.command_id,
            )
        else:
            event = ArtifactHoldSet(
                artifact_id=command.artifact_id,
                reason=command.reason,
                actor=command.requested_by,
                set_at=now,
                correlation_id=command.command_id,
            )
        await publisher.publish(topics.events, [(command.artifact_id.encode(), encode(event), [])])

    async def recover_artifact(record: Record, command: requests.RecoverArtifact) -> None:
        artifact_id = command.artifact_id
        if command.source == "archive":
            await recovered_from_archive(record, command)
            return
        if replica is None:
            await refuse(
                record, InvalidInput("no-replica", "no replica store: EvidenceLocker:ReplicaPath is not set")
            )
            return
        if await refused_unless_indexed(record, artifact_id):
            return
        try:
            data = await asyncio.to_thread(replica.read, artifact_id)
        except ArtifactNotFound:
            await refuse(record, InvalidInput("replica-missing", f"the replica has no blob of {artifact_id}"))
            return
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != artifact_id:
            detail = f"the replica's copy of {artifact_id} hashes to {actual}; nothing was restored"
            await refuse(record, InvalidInput("replica-bad", detail))
            return
        await asyncio.to_thread(blobs.restore, artifact_id, data)
        event = ArtifactRecovered(
            artifact_id=artifact_id,
            source=command.source,
            actor=command.requested_by,
            recovered_at=datetime.now(UTC),
            correlation_id=command.command_id,
        )
        await publisher.publish(topics.events, [(artifact_id.encode(), encode(event), [])])
        log.info("artifact recovered", artifact_id=artifact_id, source=command.source)

    async def recovered_from_archive(record: Record, command: requests.RecoverArtifact) -> None:
        """The CLI checked the archive and put the blob back; recorded once it hashes right here."""
        artifact_id = command.artifact_id
        if await refused_unless_indexed(record, artifact_id):
            return
        try:
            await asyncio.to_thread(blobs.verify, artifact_id)
        except (ArtifactNotFound, IntegrityError) as error:
            detail = f"no good blob of {artifact_id} in storage after the recovery: {error}"
            await refuse(record, InvalidInput("archive-bad", detail))
            return
        event = ArtifactRecovered(
            artifact_id=artifact_id,
            source="archive",
            actor=command.requested_by,
            recovered_at=datetime.now(UTC),
            correlation_id=command.command_id,
        )
        await publisher.publish(topics.events, [(artifact_id.encode(), encode(event), [])])
        log.info("artifact recovered", artifact_id=artifact_id, source="archive")

    async def optimize_index(command: requests.OptimizeIndex) -> None:
        started = time.monotonic()
        before = index.size_bytes()
        await asyncio.to_thread(index.compact)
        answer = {
            "command_id": command.command_id,
            "bytes_before": before,
            "bytes_after": index.size_bytes(),
            "seconds": round(time.monotonic() - started, 3),
            "by": "the service",
        }
        await asyncio.to_thread(write_durably, settings.index_optimized_path, json.dumps(answer).encode())

    async def record_backup(record: Record, command: requests.RecordBackup) -> None:
        if not command.backup_id.startswith("elb-") or not command.manifest_sha256.startswith("sha256:"):
            await refuse(record, InvalidInput("schema-invalid", "not a backup this locker's CLI made"))
            return
        event = BackupCreated(
            backup_id=command.backup_id,
            backup_type=command.backup_type,
            manifest_sha256=command.manifest_sha256,
            events=command.events,
            anchors=command.anchors,
            artifacts=command.artifacts,
            blobs_copied=command.blobs_copied,
            latest_anchor=command.latest_anchor,
            actor=command.requested_by,
            created_at=datetime.now(UTC),
            correlation_id=command.command_id,
        )
        await publisher.publish(topics.events, [(command.backup_id.encode(), encode(event), [])])

    async def restore_to_anchor(record: Record, command: requests.RestoreToAnchor) -> None:
        """`state.restored` on every partition of `evidence.events`, voiding what came after the
        anchor's tree of that partition (all of it where the anchor has no tree of it)."""
        try:
            stored, found = chain.find(command.anchor_id)
        except NotFound as error:
            await refuse(record, InvalidInput("not-found", str(error)))
            return
        entry = chain.entry(stored.offset)
        if entry is None or entry.status != "ok":  # the CLI checked it too; a command may not come from it
            why = "no status" if entry is None else entry.status
            await refuse(
                record, InvalidInput("anchoring-failed", f"anchor {stored.id} does not verify: {why}")
            )
            return
        heads = {h.partition: h.last_offset + 1 for h in found.body.partitions if h.tree_size}
        restored_at = datetime.now(UTC)
        for partition in await publisher.partitions(topics.events):
            event = StateRestored(
                restore_id=command.command_id,
                anchor_id=stored.id,
                partition=partition,
                voided_from=heads.get(partition, 0),
                reason=command.reason,
                actor=command.requested_by,
                restored_at=restored_at,
                correlation_id=command.command_id,
            )
            await publisher.publish(topics.events, [(stored.id.encode(), encode(event), [])], partition)
        log.info("restored to anchor", anchor=stored.id, restore_id=command.command_id)

    async def run_command(record: Record, command: requests.Command) -> None:
        match command:
            case requests.RecoverAnchor():
                await recover(record, command)
            case requests.StartVerification():
                await start_verification(record, command)
            case requests.MarkCorrupted():
                await mark_corrupted(record, command)
            case requests.RecoverArtifact():
                await recover_artifact(record, command)
            case requests.OptimizeIndex():
                await optimize_index(command)
            case requests.RecordBackup():
                await record_backup(record, command)
            case requests.RestoreToAnchor():
                await restore_to_anchor(record, command)
            case requests.HoldArtifact():
                await hold_artifact(record, command)
            case requests.ApplyRetention():
                await apply_retention(record, command)
            case requests.RecordArchive():
                await record_archive(record, command)
            case requests.CreateAnchor():
                failed = await anchor(command.command_id, command.new_chain_reason, command.continue_from)
                if failed:
                    await refuse(record, InvalidInput("anchoring-failed", failed))

    async def handle_command(record: Record) -> None:
        try:
            command = requests.decode(record.value)
        except InvalidInput as error:
            await refuse(record, error)
            return
        try:
            await run_command(record, command)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failed command must not stop the others
            detail = f"{type(exc).__name__}: {exc}"
            log.error("command failed", command=type(command).__name__, error=detail, exc_info=exc)
            with contextlib.suppress(Exception):  # the broker may be what failed
                await refuse(record, InvalidInput("command-failed", f"{detail} (see the service log)"))

    async def elected() -> None:
        if anchorer is not None:
            await anchorer.claim()

    async def deposed() -> None:
        if anchorer is not None:
            await anchorer.release()

    leadership = Leadership(
        topic=topics.commands,
        group_id=f"{settings.group_id}-commands",
        consumer_options=consumer_options(settings),
        run=handle_command,
        on_elected=elected,
        on_deposed=deposed,
        seed_group=settings.group_id,  # where faust's commands agent left off
    )
    app.add_dependency(leadership)

    @app.timer(5.0)  # type: ignore[untyped-decorator]
    async def complete_verification_runs() -> None:
        """Runs that finished before a restart, or whose completion failed, are completed here."""
        try:
            await complete_runs()
        except (LockerError, KafkaError) as exc:
            log.error("completing verification runs failed; retrying", error=str(exc))

    @app.timer(float(settings.integer("Anchors:Interval")))  # type: ignore[untyped-decorator]
    async def anchor_on_schedule() -> None:
        try:
            if anchorer is not None and leadership.leading and await anchorer.changed():
                await anchor()
        except (LockerError, KafkaError) as exc:
            log.error("scheduled anchoring failed", error=str(exc))

    install_api(
        app,
        settings=settings,
        blobs=blobs,
        index=index,
        trees=trees,
        chain=chain,
        verifier_key="" if verifier is None else verifier.vkey,
        loops=loops,
        verifications=verifications,
        metrics=metrics,
        leadership=leadership,
        token=token,
    )
    return app


MAX_ARCHIVE_PART = 20_000  # artifact ids in one `archive.record` (the CLI sends 10 000)


def check_archive_command(command: requests.RecordArchive) -> None:
    """Raise `InvalidInput` unless the command's fields are what the CLI writes: they end up in
    events, in index records and in what `inspect` prints."""
    problems = []
    if not command.archive_id.startswith("ela-") or not command.archive_id.isprintable():
        problems.append("archive_id")
    if not is_digest(command.archive_sha256):
        problems.append("archive_sha256")
    if (
        not command.location.startswith("/")
        or not command.location.isprintable()
        or len(command.location) > 4096
    ):
        problems.append("location (an absolute path, printable)")
    if not 1 <= command.part <= command.parts or len(command.artifact_ids) > MAX_ARCHIVE_PART:
        problems.append(f"part or size (at most {MAX_ARCHIVE_PART} artifact ids)")
    if problems:
        raise InvalidInput("schema-invalid", "archive.record: bad " + ", ".join(problems))
