"""Integrity: `stella evidence verify`, `verify-report`, `mark-corrupted` and `recover`.

A run is a command (`locker.requests.StartVerification`); the service plans and checks it
(`streams.verify`) and the CLI follows the run's row in the verification store, read-only.
Reports are `streams.verify_report` (shared with the API) on the stores, opened read-only.
"""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from commands import anchors, queries
from commands.sending import send_and_wait
from locker import requests
from locker.cas import Blobs, BlobStore, open_store
from locker.config import MAX_WORKERS, Settings
from locker.digests import parse_digest
from locker.errors import (
    ArtifactNotFound,
    IntegrityError,
    StorageUnavailable,
    TimedOut,
    UsageError,
)
from locker.events.integrity import Mode
from locker.sha256_python import sha256_hex
from locker.times import iso_utc
from projections.store import IndexStore
from projections.verification import RunState, sample_size
from projections.verify_store import VerifyStore
from streams import verify_report
from streams.verify_report import AnchorRoot, CheckedAnchor, VerifyReport

Progress = Callable[[int, int], None]


def run_state(settings: Settings, run_id: str) -> RunState | None:
    return _run_in(settings, run_id)[1]


def _verify_stores(settings: Settings) -> list[Path]:
    """The verification store of every local worker that has one (worker 0's if none has).
    A run is checked by the worker that planned it, the leader of the time (streams.verify)."""
    paths = [settings.as_worker(n).verify_path for n in range(MAX_WORKERS)]
    return [p for p in paths if p.exists()] or [settings.verify_path]


def _run_in(settings: Settings, run_id: str | None) -> tuple[Path, RunState | None]:
    """The store that holds run `run_id` (none: the latest completed run), and the run."""
    found: tuple[Path, RunState | None] = (settings.verify_path, None)
    for path in _verify_stores(settings):
        with VerifyStore(path, readonly=True) as store:
            run = store.run(run_id) if run_id else store.latest()
        if run is not None and (found[1] is None or run.started_at > found[1].started_at):
            found = (path, run)
    return found


def verify(
    settings: Settings,
    mode: Mode,
    *,
    sample: str = "",
    seed: int | None = None,
    to_anchor: str | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Start a run and wait for it; the report of its failures (`report`). With `to_anchor`, a
    full run of the artifacts that anchor covers, after checking the anchor itself: signature,
    link, and roots against the Merkle trees (`anchors.verify_latest`)."""
    if mode == "full" and (sample or seed is not None):
        raise UsageError("--sample and --seed choose a quick run's sample; a full run checks everything")
    if to_anchor is not None and mode != "full":
        raise UsageError("--to-anchor goes with --mode full")
    if sample:
        sample_size(sample, 100)  # a bad sample is a usage error here, not a refusal later
    anchor = None if to_anchor is None else checked_anchor(settings, to_anchor)
    command = requests.start_verification(mode, sample, seed, "" if anchor is None else anchor.id)
    run_id = command.command_id
    run = send_and_wait(settings, command, lambda: run_state(settings, run_id), "verification run")
    stall = max(settings.timeout, 60.0)
    seen, changed = run.done, time.monotonic()
    while run.completed_at is None:
        if progress is not None:
            progress(run.done, run.planned)
        time.sleep(0.2)
        run = run_state(settings, run_id) or run
        if run.done != seen:
            seen, changed = run.done, time.monotonic()
        elif time.monotonic() - changed > stall:
            raise TimedOut(
                f"verification run {run_id} made no progress for {stall:.0f}s ({run.done} of "
                f"{run.planned} checked); it goes on when the service does: `stella evidence "
                f"verify-report --run {run_id}`"
            )
    if progress is not None:
        progress(run.done, run.planned)
    result = report(settings, run_id=run_id)
    return result if anchor is None else msgspec.structs.replace(result, anchor=anchor)


def checked_anchor(settings: Settings, anchor_id: str) -> CheckedAnchor:
    """The anchor's id and tree sizes; `IntegrityError` if it does not verify."""
    checked = anchors.verify_latest(settings, anchor_id)
    if not checked["verified"]:
        first = checked["breaks"][0]
        raise IntegrityError(f"anchor {checked['latest']}", "an anchor that verifies", first["detail"])
    with anchors.chain_view(settings) as chain:
        _, found = chain.find(checked["latest"])
    heads = [AnchorRoot(partition=h.partition, tree_size=h.tree_size) for h in found.body.partitions]
    return CheckedAnchor(id=checked["latest"], verified=True, roots=heads)


def report(settings: Settings, *, run_id: str | None = None, only: str | None = None) -> VerifyReport:
    """`streams.verify_report.report` on the stores, read-only."""
    with (
        VerifyStore(_run_in(settings, run_id)[0], readonly=True) as store,
        queries.index_store(settings) as index,
    ):
        return verify_report.report(settings, store, index, run_id=run_id, only=only)


def mark_corrupted(settings: Settings, artifact_id: str, reason: str) -> dict[str, Any]:
    """Record `artifact.marked_corrupted`; return the artifact's index record once it shows."""
    parse_digest(artifact_id, what="artifact id")
    if not reason.strip():
        raise UsageError("--reason must say why")
    with IndexStore(settings.index_path, readonly=True) as index:
        if index.get(artifact_id) is None:
            raise ArtifactNotFound(artifact_id)
    command = requests.mark_corrupted(artifact_id, reason)

    return send_and_wait(settings, command, changed_by(settings, artifact_id, command), "mark-corrupted")


def hold(settings: Settings, artifact_id: str, reason: str, *, release: bool) -> dict[str, Any]:
    """Set or release a legal hold (`artifact.hold_set` / `artifact.hold_released`); the artifact's
    index record once the event shows. Setting a hold on a held artifact records the new reason."""
    parse_digest(artifact_id, what="artifact id")
    if not reason.strip():
        raise UsageError("--reason must say why")
    with IndexStore(settings.index_path, readonly=True) as index:
        record = index.get(artifact_id)
    if record is None:
        raise ArtifactNotFound(artifact_id)
    if release and not record.hold:
        raise UsageError(f"{artifact_id} is not on hold")
    command = requests.hold_artifact(artifact_id, reason, release=release)
    what = "hold release" if release else "hold"
    return send_and_wait(settings, command, changed_by(settings, artifact_id, command), what)


def recover(settings: Settings, artifact_id: str, source: str) -> dict[str, Any]:
    """Restore a blob from the replica (the service checks the copy first); the artifact's index
    record once the recovery shows. A bad or missing copy is `Refused` (exit 5)."""
    parse_digest(artifact_id, what="artifact id")
    if source != "replica":
        raise UsageError(f"--source {source!r}: replica or archive (with --input FILE)")
    if settings.replica_path is None:
        raise UsageError("no replica store: set EvidenceLocker:ReplicaPath (and restart the service)")
    with IndexStore(settings.index_path, readonly=True) as index:
        if index.get(artifact_id) is None:
            raise ArtifactNotFound(artifact_id)
    command = requests.recover_artifact(artifact_id, "replica")
    return send_and_wait(settings, command, changed_by(settings, artifact_id, command), "recover")


def changed_by(
    settings: Settings, artifact_id: str, command: requests.Command
) -> Callable[[], dict[str, Any] | None]:
    """The artifact's record, once an event of `command` has changed it."""

    def changed() -> dict[str, Any] | None:
        with IndexStore(settings.index_path, readonly=True) as index:
            record = index.get(artifact_id)
        return record.public() if record is not None and record.changed_by == command.command_id else None

    return changed


# Looking at one artifact (runbook INC-001, INC-002).
def inspect(settings: Settings, artifact_id: str, *, rehash: bool = False) -> dict[str, Any]:
    """The artifact's record with where its blob is, its replica, its last verification and,
    with `rehash`, its digest computed by two independent SHA-256 implementations."""
    record = queries.find(settings, artifact_id)
    out = record.public()
    primary = open_store(settings)
    out["storage"] = _blob_state(primary, artifact_id, check=False)
    out["replica"] = _replica(settings, artifact_id, record.replicated_at is not None, check=False)
    checks = []
    for path in _verify_stores(settings):
        with VerifyStore(path, readonly=True) as store:
            checks.append(store.last_check(artifact_id))
    last = max((c for c in checks if c is not None), default=None)
    out["last_verification"] = (
        None
        if last is None
        else {
            "at": iso_utc(datetime.fromtimestamp(last[0] / 1000, UTC)),
            "outcome": last[1],
        }
    )
    if rehash:
        out["rehash"] = _rehash(primary, artifact_id)
    return out


def storage_check(settings: Settings, artifact_id: str) -> dict[str, Any]:
    """Blob present, size and digest right; the same for the replica where there is one."""
    record = queries.find(settings, artifact_id)
    primary = _blob_state(open_store(settings), artifact_id, check=True, size=record.size)
    replica = _replica(settings, artifact_id, record.replicated_at is not None, check=True, size=record.size)
    ok = bool(primary["ok"]) and replica.get("ok", True) is not False
    return {
        "artifact_id": artifact_id,
        "status": record.status,
        "ok": ok,
        "primary": primary,
        "replica": replica,
    }


def _blob_state(blobs: Blobs, artifact_id: str, *, check: bool, size: int = -1) -> dict[str, Any]:
    path = blobs.where(artifact_id)
    try:
        stored = blobs.size(artifact_id)
    except ArtifactNotFound:
        return {"path": path, "present": False, **({"ok": False} if check else {})}
    except StorageUnavailable as exc:
        return {"path": path, "present": None, "error": str(exc), **({"ok": False} if check else {})}
    state: dict[str, Any] = {"path": path, "present": True, "size": stored}
    if check:
        found = blobs.check(artifact_id, size)
        state.update(
            size_ok=stored == size,
            digest=found.actual_digest,
            digest_ok=found.actual_digest == artifact_id,
            ok=found.outcome == "ok",
        )
        if found.detail:
            state["detail"] = found.detail
    return state


def _replica(
    settings: Settings, artifact_id: str, recorded: bool, *, check: bool, size: int = -1
) -> dict[str, Any]:
    if settings.replica_path is None:
        return {"configured": False}
    state = _blob_state(BlobStore(settings.replica_path), artifact_id, check=check, size=size)
    return {"configured": True, "replicated": recorded, **state}


def _rehash(blobs: Blobs, artifact_id: str) -> dict[str, Any]:
    """The blob's SHA-256 by OpenSSL (hashlib) and by coreutils' sha256sum, or by the pure
    Python implementation where sha256sum is not installed."""
    try:
        data = blobs.read(artifact_id)
    except ArtifactNotFound:
        raise StorageUnavailable(f"cannot read {blobs.where(artifact_id)}: there is no blob") from None
    results = [
        {
            "implementation": f"hashlib ({ssl.OPENSSL_VERSION})",
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        }
    ]
    tool = shutil.which("sha256sum")
    if tool is not None:
        proc = subprocess.run([tool, "--binary", "-"], input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            raise StorageUnavailable(f"sha256sum failed: {proc.stderr.decode(errors='replace').strip()}")
        results.append(
            {
                "implementation": f"coreutils sha256sum ({tool})",
                "digest": "sha256:" + proc.stdout.split()[0].decode(),
            }
        )
    else:
        results.append({"implementation": "locker.sha256_python", "digest": "sha256:" + sha256_hex(data)})
    digests = {r["digest"] for r in results}
    return {"results": results, "agree": len(digests) == 1, "matches_id": digests == {artifact_id}}
