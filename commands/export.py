"""`stella evidence export --digest <digest> --output pack.tar.gz [--include-deps]` (runbook
"Offline Mode Operations"): an evidence pack that `stella evidence verify --offline` and `stella
replay` check with no broker, no service and no network.

With `--include-deps` it also holds the evidence about every digest those artifacts depend on
(their materials and dependencies, `artifact.described`), recursively.

A pack has an archive's members (`locker.archives`): the anchor document, the events of every
artifact about the digest (its subject, or the artifact with that id) with an inclusion proof of
each in that anchor, their blobs, and a manifest signed with the anchor key. An artifact whose blob
the locker no longer holds good (expired, archived, failed or corrupted) is in it by its events
alone, so a replay shows what became of it. The anchor is the latest one if it covers those
events, else a new one. The file is deterministic: members sorted by name with fixed metadata,
gzip without a name or a time, Ed25519's deterministic signature; the same state gives the same
bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import msgspec

from commands import anchors as anchor_ops
from commands import queries
from commands.proving import Prover, covering_anchor, histories
from locker import anchors, archives, signing, trust
from locker.anchors import AnchorCreated, StoredAnchor
from locker.archives import ArchivedArtifact, History, PackManifest
from locker.cas import open_store
from locker.config import Settings
from locker.digests import parse_digest
from locker.errors import ArtifactNotFound, IntegrityError, NotFound, UsageError
from projections.index import INGESTED, ArtifactRecord
from projections.merkle_store import MerkleStore
from streams.kafka import end_offsets
from streams.topics import Topics

Progress = Callable[[str, int, int | None], None]
MTIME = 0  # fixed member times: the pack says when through its anchor, not its file metadata


class ExportResult(msgspec.Struct, kw_only=True):
    """What `stella evidence export` wrote (its `--format json`)."""

    output: str
    sha256: str
    file_bytes: int
    digest: str
    anchor: str
    artifacts: int
    with_blob: int  # the others are in the pack by their events alone
    blob_bytes: int
    events: int


def export(
    settings: Settings,
    digest: str,
    output: Path,
    *,
    include_deps: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    report = progress or (lambda stage, done, total: None)
    parse_digest(digest, what="--digest")
    target = output.expanduser().absolute()
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} exists: choose another --output")
    chosen = _about(settings, digest, include_deps)
    ends = asyncio.run(end_offsets(settings, Topics(settings.topic_prefix).events))
    events = histories(settings, chosen, ends, report)
    needs: dict[int, int] = {}
    for records in events.values():
        for partition, offset, _ in records:
            needs[partition] = max(needs.get(partition, -1), offset)
    stored, anchor = covering_anchor(settings, needs)
    lines, blobs = _contents(settings, chosen, events, anchor, report)
    manifest = PackManifest(
        subject=digest,
        include_deps=include_deps,
        origin=settings.origin,
        anchor_id=stored.id,
        verifier_key=anchor_ops.verifier(settings).vkey,
        artifacts=tuple(
            _listed(r, len(h.events), r.artifact_id in blobs) for r, h in zip(chosen, lines, strict=True)
        ),
        blob_bytes=sum(len(b) for b in blobs.values()),
        files={},
    )
    members = _members(
        stored, anchor, manifest, lines, blobs, _trust(settings), anchor_ops.signer(settings, "the pack")
    )
    archives.write_tar_gz(target, members, mtime=MTIME, what="pack")
    raw = target.read_bytes()
    return ExportResult(
        output=str(target),
        sha256="sha256:" + hashlib.sha256(raw).hexdigest(),
        file_bytes=len(raw),
        digest=digest,
        anchor=stored.id,
        artifacts=len(chosen),
        with_blob=len(blobs),
        blob_bytes=manifest.blob_bytes,
        events=sum(len(h.events) for h in lines),
    )


def _about(settings: Settings, digest: str, include_deps: bool) -> list[ArtifactRecord]:
    """Every indexed artifact about `digest` (as a subject), and the artifact with that id; with
    `include_deps`, then every artifact about each digest those depend on, recursively; by id."""
    with queries.index_store(settings) as index:
        found: dict[str, ArtifactRecord] = {}
        seen, todo = {digest}, [digest]
        while todo:
            here = todo.pop()
            ids = index.by_subject(here) + ([here] if index.get(here) is not None else [])
            for artifact_id in ids:
                record = found.get(artifact_id) or index.get(artifact_id)
                if record is None or artifact_id in found:
                    continue
                found[artifact_id] = record
                if len(found) > MAX_ARTIFACTS:
                    raise UsageError(
                        f"more than {MAX_ARTIFACTS} artifacts about {digest}: too many for one pack"
                    )
                for dependency in record.dependencies if include_deps else ():
                    if dependency not in seen:
                        seen.add(dependency)
                        todo.append(dependency)
    if not found:
        raise NotFound(f"no evidence about {digest}: no artifact has it as subject or id")
    return [found[i] for i in sorted(found)]


MAX_ARTIFACTS = 100_000


def _contents(
    settings: Settings,
    chosen: list[ArtifactRecord],
    events: dict[str, list[tuple[int, int, bytes]]],
    anchor: AnchorCreated,
    report: Progress,
) -> tuple[list[History], dict[str, bytes]]:
    """Each chosen artifact's proven events, and the blobs of those the locker holds good."""
    store = open_store(settings)
    blobs: dict[str, bytes] = {}
    for n, record in enumerate(chosen, 1):
        # One that is gone or damaged is in the pack by its events; `evidence verify` finds it.
        with contextlib.suppress(ArtifactNotFound, IntegrityError):
            if record.status == INGESTED:
                blobs[record.artifact_id] = store.read_checked(record.artifact_id)
        report("reading blobs", n, len(chosen))
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        lines = Prover(trees, anchor)([(r.artifact_id, events.get(r.artifact_id, [])) for r in chosen])
    return lines, blobs


def _trust(settings: Settings) -> dict[str, bytes]:
    """The trust material evidence signatures are checked with here (`Formats:TrustStore`'s keys,
    `Formats:SigstoreTrustedRoot`), as pack members, so that a pack can be checked offline."""
    found = {f"trust/{name}": pem for name, pem in trust.key_files(settings.trust_store_path)}
    found = {name: pem for name, pem in found.items() if archives.is_trust_member(name)}
    root = settings.sigstore_root_path
    if root is not None and root.is_file():
        found[archives.SIGSTORE_ROOT] = root.read_bytes()
    return found


def _listed(record: ArtifactRecord, events: int, blob: bool) -> ArchivedArtifact:
    return ArchivedArtifact(
        artifact_id=record.artifact_id, size=record.size, kind=record.kind, subjects=record.subjects,
        producer=record.producer, media_type=record.media_type, ingested_at=record.ingested_at,
        partition=record.partition, offset=record.offset, events=events, status=record.status, blob=blob,
    )  # fmt: skip


def _members(
    stored: StoredAnchor,
    anchor: AnchorCreated,
    manifest: PackManifest,
    lines: list[History],
    blobs: dict[str, bytes],
    trust: dict[str, bytes],
    signer: signing.Signer,
) -> list[tuple[str, bytes]]:
    """Every member, sorted by name; the manifest names the digest of each but the blobs."""
    document = json.dumps(anchors.export_document(stored, anchor, signer.verifier.vkey), indent=1).encode()
    members = {archives.ANCHOR: document, **trust}
    for group, start in enumerate(range(0, len(lines), archives.GROUP_ARTIFACTS)):
        members[archives.events_member(group)] = archives.encode_lines(
            lines[start : start + archives.GROUP_ARTIFACTS]
        )
    files = {name: archives.entry_of(data) for name, data in members.items()}
    raw = archives.encode_manifest(msgspec.structs.replace(manifest, files=files))
    members[archives.MANIFEST] = raw
    members[archives.SIGNATURE] = base64.b64encode(signer.sign(raw)) + b"\n"
    for artifact_id, data in blobs.items():
        members[archives.blob_member(artifact_id)] = data
    return sorted(members.items())
