"""`stella`: one typer sub-app per noun. Commands parse, call a handler, render.

Every expected failure is a `LockerError`; `main` catches it once and maps it to one line on
stderr and the exit code it carries (README, "Exit codes"). Command-line mistakes (typer's own
exceptions) become one line and exit 2 the same way. Anything else (a bug) is one line too, exit 1
as Python's own, unless `STELLA_TRACEBACK` is set.

Each command imports the operations it needs in its body, so that a quick query never loads
aiokafka, faust or rich (README, "Performance"; guarded by tests/unit/test_cli_imports.py).
No `from __future__ import annotations` here: typer reads every command's annotations at each
start, and real objects are cheaper for it than strings to evaluate.
"""

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cli import render
from cli.render import Format, Lines, emit, progress, stages, to_dict
from locker import config
from locker.errors import LockerError, UsageError

if TYPE_CHECKING:
    from streams.verify_report import VerifyReport


def noun(help_text: str) -> typer.Typer:
    """A sub-app. Help is plain text: typer's rich help costs more start-up time than a query."""
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=help_text)


app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    help="Evidence Locker operations.",
)
evidence = noun("Evidence: ingest, query, verify.")
index_app = noun("The artifact index projection.")
broker = noun("A local Kafka broker, or a cluster of them.")
service = noun("The locker service (faust worker + HTTP API).")
config_app = noun("Read and write the config file.")
anchor_app = noun("Signed Merkle anchors of the event log.")
storage_app = noun("Where the artifacts' blobs are stored.")
evidence_storage = noun("The blobs of artifacts: stats, analyze, test, provision, check.")
provenance_app = noun("Where an artifact came from and what happened to it.")
backup_app = noun("Backups of the locker: the log's forever topics, the blobs, the anchor copies.")
app.add_typer(evidence, name="evidence")
evidence.add_typer(index_app, name="index")
evidence.add_typer(anchor_app, name="anchor")
evidence.add_typer(evidence_storage, name="storage")
evidence.add_typer(provenance_app, name="provenance")
app.add_typer(broker, name="broker")
app.add_typer(service, name="service")
app.add_typer(config_app, name="config")
app.add_typer(storage_app, name="storage")
app.add_typer(backup_app, name="backup")

FormatOpt = Annotated[Format, typer.Option("--format", help="Output format.")]
IdArg = Annotated[str, typer.Argument(help="Artifact id (sha256:<hex>).")]


def settings(*, writes: bool = False) -> config.Settings:
    """The effective settings; `writes` also makes sure the home is a writable folder."""
    from commands import service as service_ops

    s = config.load()
    if writes:
        config.ensure_home(s.home)
    return service_ops.serving(s)


VERBOSE = False  # --verbose: errors show their causes


@app.callback()
def options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="On an error, also print its causes.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No tables or progress bars: errors and --format json only.")
    ] = False,
) -> None:
    """Evidence Locker operations. Colour follows NO_COLOR (https://no-color.org)."""
    global VERBOSE
    VERBOSE = verbose
    if verbose:  # the Kafka client's own warnings too (a failed connection attempt, say)
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    render.QUIET = quiet


# init ---------------------------------------------------------------------------------------
@app.command()
def init(fmt: FormatOpt = Format.table) -> None:
    """Create the locker's folders and its Kafka topics (idempotent)."""

    from commands import access
    from commands import anchors as anchor_ops
    from locker import tokens
    from locker.cas import open_store

    s = settings(writes=True)
    blobs = open_store(s)
    blobs.ensure()
    for folder in (s.state_path, s.run_path, s.log_path):
        folder.mkdir(parents=True, exist_ok=True)
    kafka = access.set_up(s)
    key_created = anchor_ops.ensure_key(s)
    token_created = tokens.create(s.token_file)
    emit(
        {
            "home": str(s.home),
            "evidence_path": blobs.location,
            "topics_created": kafka.topics_created,
            "kafka_acls": kafka.acls or kafka.acl_note,
            "signing_key": str(s.key_file),
            "signing_key_created": key_created,
            "api_token_file": str(s.token_file),  # the token itself is never printed
            "api_token_created": token_created,
            "verifier_key": anchor_ops.verifier(s).vkey,
        },
        fmt,
    )


# doctor -------------------------------------------------------------------------------------
@app.command()
def doctor(
    category: Annotated[
        str, typer.Option("--category", help="evidence, kafka, storage, anchors or all.")
    ] = "all",
    check: Annotated[str | None, typer.Option("--check", help="Run this one check (an id).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too.")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Named health checks, each ok, warn or fail with a finding and a remedy (README, "Doctor").
    Exit 1 if any check fails (with --strict, also if any warns)."""
    from commands import doctor as doctor_ops

    report = doctor_ops.run(settings(), category=category, check_id=check)
    if fmt is Format.json:
        emit(report, fmt)
    else:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}  # rich drops it under NO_COLOR
        rows = [
            {
                "status": f"[{colour[c.status]}]{c.status}[/]",
                "check": c.id,
                "finding": c.finding + (f"\n-> {c.remedy}" if c.remedy else ""),
            }
            for c in report.checks
        ]
        emit(rows, fmt, columns=["status", "check", "finding"], title=f"doctor: {report.status}")
    if report.status == "fail" or (strict and report.status == "warn"):
        raise typer.Exit(1)


# broker -------------------------------------------------------------------------------------
@broker.command("start")
def broker_start(
    nodes: Annotated[
        int, typer.Option("--nodes", help="Brokers in the cluster (3: every record on 3, acknowledged on 2).")
    ] = 1,
    fmt: FormatOpt = Format.table,
) -> None:
    """Start the local broker, or a cluster of --nodes brokers (formats storage on first start)."""
    from commands import broker as broker_ops

    s = settings(writes=True)
    if nodes == 1:
        b = broker_ops.LocalBroker.from_settings(s)
        emit({"started": b.start(), **b.status()}, fmt)
        return
    cluster = broker_ops.LocalCluster.from_settings(s, nodes)
    started = cluster.start()
    status = cluster.status()
    if s.bootstrap != cluster.bootstrap:
        status["next"] = f"stella config set Kafka:Bootstrap {cluster.bootstrap}"
    emit({"started": started, **status}, fmt)


@broker.command("stop")
def broker_stop(fmt: FormatOpt = Format.table) -> None:
    """Stop the local broker (and the local cluster's brokers) cleanly."""
    from commands import broker as broker_ops

    s = settings()
    stopped = broker_ops.LocalBroker.from_settings(s).stop()
    if (cluster := broker_ops.LocalCluster.existing(s)) is not None:
        stopped = cluster.stop() or stopped
    emit({"stopped": stopped}, fmt)


@broker.command("status")
def broker_status(fmt: FormatOpt = Format.table) -> None:
    """Is the local broker (or cluster) running and answering? Exit 1 if not."""
    from commands import broker as broker_ops

    s = settings()
    cluster = broker_ops.LocalCluster.existing(s)
    single = broker_ops.LocalBroker.from_settings(s).status()
    if cluster is None or single["running"]:
        emit(single, fmt)
        answers = bool(single["answers"])
    else:
        st = cluster.status()
        emit(st, fmt)
        answers = all(bool(node["answers"]) for node in st["nodes"])  # type: ignore[attr-defined]
    if not answers:
        raise typer.Exit(1)


# service ------------------------------------------------------------------------------------
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        max=16,
        help="Run N workers of this locker: they share ingest, each serves every query, one leads.",
    ),
]


@service.command("start")
def service_start(workers: WorkersOpt = 1, fmt: FormatOpt = Format.table) -> None:
    """Start the service in the background and wait until it is consuming."""
    from commands import service as service_ops

    s = settings(writes=True)
    started = service_ops.start(s, workers=workers)
    emit({"started": started, **service_ops.status(s)}, fmt)


@service.command("stop")
def service_stop(fmt: FormatOpt = Format.table) -> None:
    """Stop the service, every worker (SIGTERM, then SIGKILL after 60 s)."""
    from commands import service as service_ops

    emit({"stopped": service_ops.stop(settings())}, fmt)


@service.command("restart")
def service_restart(fmt: FormatOpt = Format.table) -> None:
    """Stop the service if it runs, then start it again (as many workers as ran, at least one)."""
    from commands import service as service_ops

    s = settings(writes=True)
    workers = max(service_ops.running(s), default=0) + 1
    service_ops.stop(s)
    service_ops.start(s, workers=workers)
    emit({"restarted": True, **service_ops.status(s)}, fmt)


@service.command("status")
def service_status(fmt: FormatOpt = Format.table) -> None:
    """Is the service running and healthy? Exit 1 if not."""
    from commands import service as service_ops

    st = service_ops.status(settings())
    emit(st, fmt)
    if not st["healthy"]:
        raise typer.Exit(1)


# config -------------------------------------------------------------------------------------
@config_app.command("get")
def config_get(key: str, fmt: FormatOpt = Format.table) -> None:
    """Print the effective value of KEY (for example Kafka:Bootstrap)."""
    s = settings()
    value = s.get(key)
    if fmt is Format.json:
        emit({"key": key, "value": value}, fmt)
    else:
        typer.echo(value)


@config_app.command("set")
def config_set(key: str, value: str, fmt: FormatOpt = Format.table) -> None:
    """Write KEY = VALUE to the config file in the locker's home."""
    home = config.default_home()
    stored = config.write_value(home, key, value)
    emit({"key": key, "value": stored, "file": str(home / "config.toml")}, fmt)


@config_app.command("list")
def config_list(
    effective: Annotated[bool, typer.Option("--effective", help="Show where each value comes from.")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """List every key with its value."""
    s = settings()
    rows = [
        {"key": key, "value": value, **({"source": s.sources[key]} if effective else {})}
        for key, value in s.values.items()
    ]
    emit(rows, fmt)


# storage ------------------------------------------------------------------------------------
@storage_app.command("migrate")
def storage_migrate(
    to: Annotated[Path, typer.Option("--to", help="The new evidence path (a folder).")],
    fmt: FormatOpt = Format.table,
) -> None:
    """With the service stopped: copy every blob to a new path, verify each, set EvidenceLocker:Path."""
    from commands import storage as storage_ops

    s = settings(writes=True)
    with progress("copying blobs", show=fmt is Format.table and sys.stderr.isatty()) as bar:
        task = bar.add_task("migrate", total=None)
        result = storage_ops.migrate(
            s, to, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    emit(result.as_dict(), fmt)


# evidence -----------------------------------------------------------------------------------
@evidence.command("ingest")
def evidence_ingest(
    files: Annotated[list[Path], typer.Argument(help="Files to ingest.")],
    kind: Annotated[str, typer.Option(help="attestation|sbom|vex|scan|signature|other")] = "other",
    subject: Annotated[
        list[str] | None, typer.Option("--subject", help="Subject digest (repeatable).")
    ] = None,
    producer: Annotated[str, typer.Option(help="Name of the producer.")] = "stella-cli",
    fmt: FormatOpt = Format.table,
) -> None:
    """Send files as submissions; print each artifact id. Exit 5 if any was rejected."""
    import asyncio

    from commands import ingest as ingest_ops

    s = settings()
    show_progress = fmt is Format.table and len(files) > 1 and sys.stderr.isatty()
    with progress("ingesting", show=show_progress) as bar:
        task = bar.add_task("ingest", total=len(files))
        results = asyncio.run(
            ingest_ops.ingest(
                s,
                files,
                kind=kind,
                subjects=subject or [],
                producer_name=producer,
                on_done=lambda _: bar.advance(task),
            )
        )
    rows = [r.as_dict() for r in results]
    if fmt is Format.json:
        emit(rows, fmt)
    else:
        for r in results:
            note = f"  ({r.reason}: {r.detail})" if r.status == "rejected" else ""
            typer.echo(f"{r.artifact_id}  {r.status}  {r.file}{note}")
    if any(r.status == "rejected" for r in results):
        raise typer.Exit(5)


@evidence.command("exists")
def evidence_exists(artifact_id: IdArg, fmt: FormatOpt = Format.table) -> None:
    """Exit 0 if the artifact is in the locker (indexed, its blob in storage), 1 if not, saying why."""
    from commands import queries

    answer = queries.exists(settings(), artifact_id)
    if fmt is Format.json:
        emit(answer, fmt)
    else:
        typer.echo(EXISTS_SAYS[answer["state"]])
    if not answer["exists"]:
        raise typer.Exit(1)


EXISTS_SAYS = {
    "present": "exists",
    "not-found": "not found",
    "blob-missing": "blob-missing: indexed, its blob not in storage (`stella evidence storage check <id>`)",
    "expired": "expired: its blob was deleted by the retention policy",
    "archived": "archived: its blob is in an archive (`stella evidence inspect <id>` says which)",
}


@evidence.command("inspect")
def evidence_inspect(
    artifact_id: IdArg,
    rehash: Annotated[
        bool,
        typer.Option("--rehash", help="Also hash the blob with two independent SHA-256 implementations."),
    ] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Show an artifact: metadata, status, storage location, replica, last verification."""
    from commands import integrity

    emit(integrity.inspect(settings(), artifact_id, rehash=rehash), fmt)


@evidence_storage.command("check")
def evidence_storage_check(artifact_id: IdArg, fmt: FormatOpt = Format.table) -> None:
    """Blob present, size and digest right; the replica's too. Exit 1 if not."""
    from commands import integrity

    result = integrity.storage_check(settings(), artifact_id)
    emit(result, fmt)
    if not result["ok"]:
        raise typer.Exit(1)


@evidence_storage.command("stats")
def evidence_storage_stats(fmt: FormatOpt = Format.table) -> None:
    """Artifacts and bytes (per kind and status), growth per day, replica state, free space."""
    from commands import storage_report

    result = to_dict(storage_report.stats(settings()))
    if fmt is Format.json:
        emit(result, fmt)
        return
    emit({k: v for k, v in result.items() if k not in ("by_kind", "roots", "growth_per_day")}, fmt)
    emit(result["by_kind"], fmt, title="by kind")
    growth = result["growth_per_day"]
    emit(
        growth["days"],
        fmt,
        title=f"per day (mean {growth['artifacts']} artifacts, {growth['bytes']} B)",
    )
    emit(result["roots"], fmt, title="storage roots")


@evidence_storage.command("analyze")
def evidence_storage_analyze(
    sort: Annotated[str, typer.Option("--sort", help="size (largest first) or age (oldest first).")] = "size",
    limit: Annotated[int, typer.Option("--limit", help="How many artifacts.")] = 20,
    fmt: FormatOpt = Format.table,
) -> None:
    """The largest or the oldest artifacts: where the room goes."""
    from commands import storage_report

    emit(storage_report.analyze(settings(), sort=sort, limit=limit), fmt)


@evidence_storage.command("test")
def evidence_storage_test(fmt: FormatOpt = Format.table) -> None:
    """Write, fsync, read back, hash and delete a probe in every storage root; exit 1 if one fails."""
    from commands import storage_report

    result = storage_report.probe(settings())
    emit(result if fmt is Format.json else result["roots"], fmt)


@evidence_storage.command("provision")
def evidence_storage_provision(
    size: Annotated[str, typer.Option("--size", help="Room to reserve for blobs: 500G, 1.5T, 20GiB.")],
    path: Annotated[
        Path | None,
        typer.Option("--path", help="The storage root (default: EvidenceLocker:Path); set in the config."),
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Prepare a storage root: folders, permissions, a write probe, a free-space check (exit 5 if short)."""
    from commands import storage as storage_ops

    emit(storage_ops.provision(settings(writes=True), size, path), fmt)


TypeOpt = Annotated[str, typer.Option("--type", help="What to back up: evidence-locker.")]


@backup_app.command("create")
def backup_create(
    backup_type: TypeOpt = "evidence-locker",
    output: Annotated[
        Path | None, typer.Option("--output", help="The backup root (default: Backups:Path).")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A consistent, signed, incremental backup; recorded on the log as backup.created."""
    from commands import backup

    with stages("backing up", show=fmt is Format.table and sys.stderr.isatty()) as report:
        result = backup.create(settings(writes=True), backup_type, output, progress=report)
    emit(result, fmt)


@backup_app.command("list")
def backup_list(
    backup_type: TypeOpt = "evidence-locker",
    root: Annotated[
        Path | None, typer.Option("--root", help="The backup root (default: Backups:Path).")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The backups in the root: id, time, size, artifacts, latest anchor, signature check."""
    from commands import backup

    emit(backup.listing(settings(), backup_type, root), fmt)


@provenance_app.command("show")
def provenance_show(artifact_id: IdArg, fmt: FormatOpt = Format.table) -> None:
    """An artifact's chain of custody from the log, each step with its log position and anchor."""
    from commands import provenance

    result = provenance.show(settings(), artifact_id)
    if fmt is Format.json:
        emit(result, fmt)
        return
    emit({k: v for k, v in to_dict(result).items() if k != "steps"}, fmt)
    for step in result.steps:  # one block a step: readable at any terminal width
        position = f"{step.topic}[{step.partition}]@{step.offset}"
        anchor = f"anchor {step.anchor}" if step.anchor else "not anchored"
        typer.echo(f"{step.at}  {step.what}  by {step.actor or '-'}")
        typer.echo(f"    {position}, {anchor}")
        if step.detail:
            typer.echo(f"    {step.detail}")


@evidence.command("verify")
def evidence_verify(
    mode: Annotated[
        str | None, typer.Option("--mode", help="quick (a sample) or full (every artifact).")
    ] = None,
    sample: Annotated[
        str, typer.Option("--sample", help="Quick: how many, as a count (500) or a percentage (2%).")
    ] = "",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Quick: fix the sample's order (the run prints its seed).")
    ] = None,
    to_anchor: Annotated[
        str | None,
        typer.Option("--to-anchor", help="Full: the artifacts and roots as of this anchor (id or prefix)."),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Check an evidence pack (--input): no broker, service or network."),
    ] = False,
    input_: Annotated[Path | None, typer.Option("--input", help="With --offline: the pack.")] = None,
    trusted_key: Annotated[
        str | None, typer.Option("--trusted-key", help="With --offline: the anchor verifier key to trust.")
    ] = None,
    trust_store: Annotated[
        Path | None,
        typer.Option(
            "--trust-store", help="With --offline: PEM keys for DSSE signatures (default: the pack's)."
        ),
    ] = None,
    sigstore_root: Annotated[
        Path | None,
        typer.Option(
            "--sigstore-root", help="With --offline: a Sigstore trusted_root.json (default: the pack's)."
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Re-hash artifacts against their ids in the service, or (--offline) check an evidence pack;
    exit 1 if anything failed."""
    if offline or input_ is not None or trusted_key or trust_store or sigstore_root:
        if not offline or input_ is None or mode or sample or seed is not None or to_anchor:
            raise UsageError(
                "--offline takes --input PACK (and --trusted-key, --trust-store, --sigstore-root), "
                "and no --mode options"
            )
        verify_offline(input_, trusted_key, trust_store, sigstore_root, fmt)
        return
    from commands import integrity

    if mode not in ("quick", "full"):
        raise UsageError("--mode quick or --mode full (or --offline --input PACK)")
    terminal = sys.stderr.isatty()
    lines = Lines("verified")
    with progress("verifying", show=terminal and fmt is Format.table) as bar:
        task = bar.add_task("verify", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if not terminal:
                lines.update(done, total)

        result = integrity.verify(
            settings(),
            "full" if mode == "full" else "quick",
            sample=sample,
            seed=seed,
            to_anchor=to_anchor,
            progress=report,
        )
    lines.close()
    show_report(result, fmt)


def verify_offline(
    pack: Path, trusted_key: str | None, trust_store: Path | None, sigstore_root: Path | None, fmt: Format
) -> None:
    from commands import offline

    report = offline.verify(pack, trusted_key, trust_store, sigstore_root)
    if fmt is Format.json:
        emit(report, fmt)
    else:
        for item in report.items:
            typer.echo(
                f"{'ok  ' if item.ok else 'FAIL'}  {item.item}" + (f": {item.detail}" if item.detail else "")
            )
        verdict = "verified" if report.verified else f"FAILED ({report.failures} item(s))"
        typer.echo(
            f"{verdict}: {report.artifacts} artifacts about {report.subject or '?'}, {report.blobs} blobs, "
            f"{report.events} events, anchor {report.anchor or '?'}; key: {report.key_source}; "
            f"evidence signatures: {report.trust_source or '-'}"
        )
    if not report.verified:
        raise typer.Exit(1)


@evidence.command("export")
def evidence_export(
    digest: Annotated[str, typer.Option("--digest", help="The subject (or artifact) digest: sha256:<hex>.")],
    output: Annotated[Path, typer.Option("--output", help="The pack to write (.tar.gz).")],
    include_deps: Annotated[
        bool, typer.Option("--include-deps", help="Also the evidence about its dependencies and materials.")
    ] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Write an evidence pack: every artifact about the digest, its events with inclusion proofs in
    one anchor, that anchor's signed checkpoints and key, a signed manifest; byte-identical for the
    same state."""
    from commands import export

    with stages("exporting", show=fmt is Format.table and sys.stderr.isatty()) as report:
        result = export.export(settings(), digest, output, include_deps=include_deps, progress=report)
    emit(result, fmt)


@evidence.command("diagnostics")
def evidence_diagnostics(
    output: Annotated[Path, typer.Option("--output", help="The bundle to write (.tar.gz).")],
    days: Annotated[int, typer.Option("--days", help="Days of commands and events in the audit log.")] = 7,
    fmt: FormatOpt = Format.table,
) -> None:
    """Write an incident bundle: index status, storage stats, the recent anchor chain, the latest
    integrity results, the doctor's report, the audit log, the config and log tails; no secret."""
    from commands import diagnostics

    with stages("collecting", show=fmt is Format.table and sys.stderr.isatty()) as report:
        result = diagnostics.collect(settings(), output, days=days, report=lambda name: report(name, 0, None))
    emit(result, fmt)


@app.command("replay")
def replay(
    evidence_pack: Annotated[Path, typer.Option("--evidence", help="The evidence pack (.tar.gz).")],
    output: Annotated[Path, typer.Option("--output", help="The verdict to write (JSON).")],
    trusted_key: Annotated[
        str | None, typer.Option("--trusted-key", help="The verifier key to trust.")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Rebuild each artifact's state from an evidence pack alone and write the verdict as canonical
    JSON (the same pack, the same bytes); exit 5 if the pack does not verify, 1 if the verdict fails."""
    from commands import offline

    result = offline.replay(evidence_pack, output, trusted_key)
    emit(result, fmt)
    if result.verdict != "pass":
        raise typer.Exit(1)


@evidence.command("verify-report")
def evidence_verify_report(
    latest: Annotated[bool, typer.Option("--latest", help="The run that completed last.")] = False,
    run_id: Annotated[str | None, typer.Option("--run", help="A run id.")] = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--filter", help="Which artifacts: failed (default), ok, mismatch, missing, unreadable."
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A verification run's counts and its artifacts; exit 1 if the run found failures."""
    from commands import integrity

    if latest == (run_id is not None):
        raise UsageError("give exactly one of --latest or --run ID")
    show_report(integrity.report(settings(), run_id=run_id, only=only), fmt)


def show_report(result: "VerifyReport", fmt: Format) -> None:
    """Print a verification report (JSON: as documented in the README); exit 1 on failures."""
    run = result.run
    if fmt is Format.json:
        emit(result, fmt)
    else:
        state = "completed" if run.completed_at else "running"
        counts = ", ".join(f"{getattr(run, k)} {k}" for k in ("ok", "mismatch", "missing", "unreadable"))
        checked = f"{run.done} of {run.planned} checked"
        typer.echo(f"run {run.run_id} ({run.mode}, {state}): {checked}: {counts}")
        if result.anchor is not None:
            roots = ", ".join(f"{r.partition}: {r.tree_size}" for r in result.anchor.roots)
            typer.echo(f"as of anchor {result.anchor.id}: verified, roots match (tree sizes {roots})")
        rows = [
            {"artifact_id": a.artifact_id, "outcome": a.outcome, "detail": a.detail} for a in result.artifacts
        ]
        if rows:
            emit(rows, fmt, title=result.filter)
        if anchor := result.voided_by_restore_to:
            typer.echo(f"note: the run's events were voided by the restore to anchor {anchor}")
        if result.outcomes_expired:
            typer.echo("note: some of the run's outcomes are past evidence.verifications' retention")
    if run.failed:
        typer.echo(f"{run.failed} artifact(s) failed verification in run {run.run_id}", err=True)
        raise typer.Exit(1)


@evidence.command("mark-corrupted")
def evidence_mark_corrupted(
    artifact_id: Annotated[str, typer.Option("--id", help="Artifact id (sha256:<hex>).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the log (e.g. hash-mismatch).")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Record that an artifact is corrupted; it is never served as good again."""
    from commands import integrity

    emit(integrity.mark_corrupted(settings(), artifact_id, reason), fmt)


hold_app = noun("Legal holds: a held artifact is exempt from every deletion path.")
evidence.add_typer(hold_app, name="hold")


@hold_app.command("set")
def hold_set(
    artifact_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (a case, a request), for the log.")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Put an artifact under legal hold (`artifact.hold_set`)."""
    from commands import integrity

    emit(integrity.hold(settings(), artifact_id, reason, release=False), fmt)


@hold_app.command("release")
def hold_release(
    artifact_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Why the hold ends, for the log.")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Release a legal hold (`artifact.hold_released`)."""
    from commands import integrity

    emit(integrity.hold(settings(), artifact_id, reason, release=True), fmt)


@evidence.command("recover")
def evidence_recover(
    artifact_id: Annotated[str, typer.Option("--id", help="Artifact id (sha256:<hex>).")],
    source: Annotated[str, typer.Option("--source", help="Where the good copy is: replica or archive.")],
    input_: Annotated[
        Path | None, typer.Option("--input", help="With --source archive: the archive file.")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Restore an artifact's blob from the replica or an archive, after checking the copy (exit 5 if bad)."""
    if source == "archive":
        from commands import archive

        if input_ is None:
            raise UsageError("--source archive needs --input FILE: the archive to recover from")
        result = archive.recover(settings(), artifact_id, input_)
        emit(
            result if fmt is Format.json else {k: v for k, v in to_dict(result).items() if k != "record"}, fmt
        )
        return
    from commands import integrity

    if input_ is not None:
        raise UsageError("--input goes with --source archive")
    emit(integrity.recover(settings(), artifact_id, source), fmt)


@evidence.command("archive")
def evidence_archive(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Archive what was ingested longer ago than this: 365d, 26w, 1y."),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", help="The archive file to write (default: a new file in Archive:Path)."),
    ] = None,
    compress: Annotated[bool, typer.Option("--compress", help="zstd-compress the archive.")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Move old evidence to a checked archive (blobs, events, proofs, signed manifest); then delete
    the local blobs. Held, corrupted and failed artifacts stay."""
    from commands import archive

    with stages("archiving", show=fmt is Format.table and sys.stderr.isatty()) as report:
        result = archive.create(settings(), older_than, output, compress=compress, progress=report)
    if fmt is Format.json:
        emit(result, fmt)
        return
    data = to_dict(result)
    emit({k: v for k, v in data.items() if k != "skipped"}, fmt)
    if data["skipped"]:
        emit([{"artifact_id": k, "why": v} for k, v in data["skipped"].items()], fmt, title="not archived")
    if not data["output"]:
        typer.echo(f"nothing to archive: no artifact to move was ingested before {data['cutoff']}")


@evidence.command("restore")
def evidence_restore(
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="The backup (`stella backup list`).")
    ] = None,
    target: Annotated[
        Path | None, typer.Option("--target", help="With --backup-id: the empty storage root for the blobs.")
    ] = None,
    to_anchor: Annotated[
        str | None,
        typer.Option("--to-anchor", help="Point-in-time: void what came after this anchor (id or prefix)."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="With --to-anchor: why, for the log.")] = "",
    root: Annotated[Path | None, typer.Option("--backup-root", help="Default: Backups:Path.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Restore into a target that holds blobs.")] = False,
    known_anchor: Annotated[
        list[Path] | None,
        typer.Option("--known-anchor", help="An exported anchor the restore must not fork."),
    ] = None,
    new_chain: Annotated[
        str, typer.Option("--new-chain", help="Accept a fork: the reason the next anchor chain names.")
    ] = "",
    fmt: FormatOpt = Format.table,
) -> None:
    """Restore a backup onto empty topics and an empty storage root, after checking all of it; or
    (--to-anchor) bring the locker's state back to an anchor, voiding what came after it."""
    from commands import recovery, restore

    if (backup_id is None) == (to_anchor is None):
        raise UsageError("give exactly one of --backup-id ID --target PATH, or --to-anchor ANCHOR")
    if to_anchor is not None:
        if target or root or force or known_anchor or new_chain:
            raise UsageError(
                "--target, --backup-root, --force, --known-anchor and --new-chain go with --backup-id"
            )
        show_restored(recovery.restore_to_anchor(settings(), to_anchor, reason), fmt)
        return
    if target is None:
        raise UsageError("--backup-id needs --target PATH: the empty storage root for the blobs")
    assert backup_id is not None
    with stages("restoring", show=fmt is Format.table and sys.stderr.isatty()) as report:
        result = restore.restore(
            settings(writes=True), backup_id, target, root=root, force=force,
            known_anchors=known_anchor or (), new_chain=new_chain, progress=report,
        )  # fmt: skip
    emit(result, fmt)


def show_restored(result: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        emit(result, fmt)
        return
    typer.echo(f"restored to anchor {result['anchor']} (restore {result['restore_id']})")
    emit(result["partitions"], fmt, title="voided, per partition (the records stay in the log)")
    typer.echo(
        f"{result['voided_records']} records voided; {len(result['artifacts_voided'])} artifacts no longer "
        f"indexed; the index holds {result['artifacts']} artifacts"
    )
    for step in result["next"]:
        typer.echo(f"next: {step}")


@evidence.command("cleanup")
def evidence_cleanup(
    temp_only: Annotated[
        bool, typer.Option("--temp-only", help="Remove temp files left by interrupted writes.")
    ] = False,
    apply_retention: Annotated[
        bool, typer.Option("--apply-retention", help="Expire artifacts past the retention policy.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; change nothing.")] = False,
    aggressive: Annotated[bool, typer.Option("--aggressive", help="The stricter retention tier.")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Remove what the locker no longer needs: temp files (--temp-only), or expired artifacts."""
    from commands import cleanup, retention

    if temp_only == apply_retention:
        raise UsageError("give one of --temp-only or --apply-retention")
    if apply_retention:
        result = (
            retention.dry_run(settings(), aggressive=aggressive)
            if dry_run
            else retention.apply(settings(), aggressive=aggressive)
        )
        emit(
            result if fmt is Format.json else {k: v for k, v in result.items() if k != "artifacts_listed"},
            fmt,
        )
        return
    if aggressive:
        raise UsageError("--aggressive goes with --apply-retention")
    result = cleanup.temp_files(settings(writes=not dry_run), dry_run=dry_run)
    emit(result if fmt is Format.json else {k: v for k, v in result.items() if k != "files"}, fmt)


@evidence.command("status")
def evidence_status(fmt: FormatOpt = Format.table) -> None:
    """Storage, index and service at a glance."""
    from commands import queries

    emit(queries.evidence_status(settings()), fmt)


@index_app.command("lookup")
def index_lookup(artifact_id: IdArg, fmt: FormatOpt = Format.table) -> None:
    """Show the index entry of an artifact. Exit 1 if it is not indexed."""
    from commands import queries

    emit(queries.lookup(settings(), artifact_id), fmt)


@index_app.command("status")
def index_status(
    checksum: Annotated[bool, typer.Option("--checksum", help="Also hash every row.")] = False,
    sample: Annotated[
        int, typer.Option("--sample", min=0, help="Index rows to check against their events (0: none).")
    ] = 20,
    fmt: FormatOpt = Format.table,
) -> None:
    """Entries, size, lag per partition, the last rebuild, and a sample of rows checked against the log."""
    from commands import index as index_ops

    st = index_ops.status(settings(), checksum=checksum, sample=sample)
    check = st.get("sample_check")
    if fmt is Format.json:
        emit(st, fmt)
    else:
        emit({k: v for k, v in st.items() if k not in ("partitions", "sample_check", "last_rebuild")}, fmt)
        emit(st["partitions"], fmt, title="partitions")
        if st["last_rebuild"]:
            emit(st["last_rebuild"], fmt, title="last rebuild")
        if check is not None:
            verdict = "consistent" if check["consistent"] else f"{len(check['mismatches'])} MISMATCHES"
            typer.echo(f"sample check: {check['rows_checked']} rows against their events: {verdict}")
            if check["mismatches"]:
                emit(check["mismatches"], fmt)
    if check is not None and not check["consistent"]:
        raise typer.Exit(1)


@index_app.command("refresh")
def index_refresh(fmt: FormatOpt = Format.table) -> None:
    """Bring the index to the end of the log (the running service does; else this command)."""
    from commands import index as index_ops

    emit(index_ops.refresh(settings()), fmt)


@index_app.command("rebuild")
def index_rebuild(fmt: FormatOpt = Format.table) -> None:
    """Rebuild the index from offset 0, compare it with the live one, swap it in (the service pauses)."""
    from commands import index as index_ops

    s = settings(writes=True)
    with progress("replaying events", show=fmt is Format.table and sys.stderr.isatty()) as bar:
        task = bar.add_task("rebuild", total=None)
        result = index_ops.rebuild(
            s, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    emit(result, fmt)


@index_app.command("optimize")
def index_optimize(fmt: FormatOpt = Format.table) -> None:
    """Compact the index store (RocksDB compaction); its size before and after."""
    from commands import index as index_ops

    emit(index_ops.optimize(settings()), fmt)


# anchors -------------------------------------------------------------------------------------
@anchor_app.command("create")
def anchor_create(fmt: FormatOpt = Format.table) -> None:
    """Ask the service to sign and append an anchor of every partition's tree now."""
    from commands import anchors as anchor_ops

    result = anchor_ops.create(settings())
    emit({k: v for k, v in result.items() if k != "checkpoints"} if fmt is Format.table else result, fmt)


@anchor_app.command("new-chain")
def anchor_new_chain(
    reason: Annotated[str, typer.Option("--reason", help="Why the chain is restarted (recorded).")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Start a new chain segment; its first anchor names the old chain's last good anchor."""
    from commands import anchors as anchor_ops

    s = settings()
    if not reason.strip():
        raise UsageError("--reason must not be empty")
    result = anchor_ops.create(s, new_chain_reason=reason)
    emit({k: v for k, v in result.items() if k != "checkpoints"} if fmt is Format.table else result, fmt)


@anchor_app.command("list")
def anchor_list(
    show_links: Annotated[bool, typer.Option("--show-links", help="Check and show each link.")] = False,
    before: Annotated[
        datetime | None, typer.Option("--before", help="Only anchors created before this time (UTC).")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """List anchors, oldest first."""
    from commands import anchors as anchor_ops

    s = settings()
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    rows = anchor_ops.listing(s, before=before)
    if not show_links:
        for row in rows:
            row.pop("link")
    cols = [
        "sequence",
        "anchor_id",
        "chain_id",
        "created_at",
        "tree_sizes",
        *(["previous", "link"] if show_links else []),
    ]
    emit(rows, fmt, columns=cols)


@anchor_app.command("inspect")
def anchor_inspect(anchor_id: str, fmt: FormatOpt = Format.table) -> None:
    """Show one anchor in full."""
    from commands import anchors as anchor_ops

    emit(anchor_ops.inspect(settings(), anchor_id), fmt)


@anchor_app.command("verify")
def anchor_verify(
    latest: Annotated[bool, typer.Option("--latest", help="Check the latest anchor.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Check the whole chain.")] = False,
    input_: Annotated[
        Path | None, typer.Option("--input", help="Check an exported anchor file offline.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Verifier key to trust with --input.")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also list breaks already recorded by new-chain.")
    ] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Check signatures, links, sizes, consistency and roots recomputed from the log. Exit 1 on a break."""
    from commands import anchors as anchor_ops

    if latest + all_ + (input_ is not None) != 1:
        raise UsageError("give exactly one of --latest, --all or --input FILE")
    if input_ is not None:
        offline = anchor_ops.verify_file(input_, key)
        emit(offline, fmt)
        if not offline["verified"]:
            raise typer.Exit(1)
        return
    result = anchor_ops.verify(settings(), latest=latest)
    if fmt is Format.json:
        emit(result, fmt)
    else:
        verdict = "verified" if result["verified"] else "BROKEN"
        typer.echo(f"{verdict}: {result['anchors_checked']} anchor(s) checked, latest {result['latest']}")
        for r in result["repaired"]:
            typer.echo(f"  repaired at offset {r['offset']}: {r['damaged']} -> {r['recovered']}")
        for f in result["breaks"]:
            typer.echo(f"  break at sequence {f['sequence']} ({f['anchor']}): {f['check']}: {f['detail']}")
        if verbose or not result["verified"]:
            for f in result["recorded_breaks"]:
                where = f"sequence {f['sequence']} ({f['anchor']})"
                typer.echo(f"  recorded (archived) at {where}: {f['check']}: {f['detail']}")
    if not result["verified"]:
        raise typer.Exit(1)


@anchor_app.command("export")
def anchor_export(
    output: Annotated[Path, typer.Option("--output", help="File to write (JSON).")],
    latest: Annotated[bool, typer.Option("--latest")] = False,
    anchor_id: Annotated[str | None, typer.Option("--id", help="Anchor id.")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Write a self-contained anchor file: the anchor, its signed checkpoints and the verifier key."""
    from commands import anchors as anchor_ops

    if latest == (anchor_id is not None):
        raise UsageError("give exactly one of --latest or --id")
    data = anchor_ops.export(settings(), anchor_id)
    output.write_text(json.dumps(data, indent=2) + "\n")
    emit({"anchor_id": data["anchor"]["anchor_id"], "output": str(output)}, fmt)


@anchor_app.command("recover")
def anchor_recover(
    anchor_id: Annotated[str, typer.Option("--id", help="The anchor to restore.")],
    source: Annotated[str, typer.Option("--source", help="Where the good copy is: backup.")] = "backup",
    fmt: FormatOpt = Format.table,
) -> None:
    """Restore a damaged anchor record from its backup copy, after checking signature and links."""
    from commands import anchors as anchor_ops

    emit(anchor_ops.recover(settings(), anchor_id, source), fmt)


@anchor_app.command("consistency")
def anchor_consistency(old_id: str, new_id: str, fmt: FormatOpt = Format.table) -> None:
    """Print and check the consistency proof between two anchors. Exit 1 if it fails."""
    from commands import anchors as anchor_ops

    result = anchor_ops.consistency(settings(), old_id, new_id)
    emit(result if fmt is Format.json else {k: v for k, v in result.items() if k != "partitions"}, fmt)
    if fmt is Format.table:
        emit([{k: v for k, v in p.items() if k != "proof"} for p in result["partitions"]], fmt)
    if not result["consistent"]:
        raise typer.Exit(1)


@evidence.command("proof")
def evidence_proof(
    artifact_id: IdArg,
    anchor_id: Annotated[
        str | None, typer.Option("--anchor", help="Anchor id (default: the latest).")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The inclusion proof of an artifact's ingest event in an anchor."""
    from commands import anchors as anchor_ops

    emit(anchor_ops.proof(settings(), artifact_id, anchor_id), fmt)


def fail(message: str, code: int, exc: BaseException | None = None) -> NoReturn:
    """Print `message` as one line on stderr and exit with `code`; with --verbose, then one line
    for each cause of `exc` (what it was raised from or while handling, also where the message
    alone was meant to be shown)."""
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")
    seen = {id(exc)}
    cause = None if exc is None else (exc.__cause__ or exc.__context__)
    while VERBOSE and cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        sys.stderr.write(f"  caused by {type(cause).__name__}: " + " ".join(str(cause).split()) + "\n")
        cause = cause.__cause__ or cause.__context__
    sys.exit(code)


def with_hint(exc: LockerError) -> str:
    """The error's message, and its class's hint unless the message already names a command."""
    message = str(exc)
    return message if "`stella" in message or not exc.hint else f"{message} (hint: {exc.hint})"


def usage_message(exc: typer.TyperException) -> str:
    """typer's message for a command-line mistake, and where to find help."""
    ctx = getattr(exc, "ctx", None)
    return exc.format_message() + (f" Try '{ctx.command_path} --help'." if ctx is not None else "")


def main() -> None:
    """Run the CLI; map every expected failure to one line on stderr and its exit code."""
    # The Kafka client logs each failed connection attempt; the error it ends in is our one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        code = app(standalone_mode=False)  # returns the code of a `typer.Exit`
    except LockerError as exc:
        fail(with_hint(exc), exc.exit_code, exc)
    except typer.TyperException as exc:  # typer's (vendored) click: bad command, option or argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without its command (typer checks so too)
            typer.echo(exc.format_message())  # the group's help
            fail("Missing command.", UsageError.exit_code)
        fail(usage_message(exc), UsageError.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except BaseException as exc:  # a bug (also asyncio's CancelledError), or damage no check foresaw
        if isinstance(exc, SystemExit) or os.environ.get("STELLA_TRACEBACK"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set STELLA_TRACEBACK=1 to see where)", 1, exc)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
