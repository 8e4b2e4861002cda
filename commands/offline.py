"""`stella evidence verify --offline --input pack.tar.gz [--trusted-key VKEY]` and
`stella replay --evidence pack.tar.gz --output verdict.json`: an evidence pack checked and
replayed with no broker, no service and no network. Nothing here imports a Kafka client
(tests/unit/test_cli_imports.py).

The pack is read once as a stream and never extracted (`commands.archive_read.scan`): a member
that no pack has (a link, a device, a path, a repeated or oversized name, or more than
`PACK_LIMIT` bytes in all) stops the reading before anything is kept. The key trusted is
`--trusted-key`, else the one the pack names (which proves only that the pack is whole, not who
made it: the answer says which).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from commands.archive_read import Problem, Scan, scan
from locker import archives, signing
from locker.archives import PackManifest
from locker.errors import InvalidInput, UsageError
from locker.files import write_durably
from projections.replay import canonical, out_of_order, verdict

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot

    from locker.formats import TrustedKey

PACK_LIMIT = 16 << 30  # bytes of all members: more is refused as a tar bomb
MAX_BLOB = 1 << 30


class Item(msgspec.Struct, frozen=True, kw_only=True):
    item: str
    ok: bool
    detail: str = ""


class OfflineReport(msgspec.Struct, kw_only=True):
    """What `verify --offline` found (its `--format json`)."""

    input: str
    verified: bool
    sha256: str
    subject: str
    anchor: str
    verifier_key: str
    key_source: str
    trust_source: (
        str  # where the keys and the Sigstore root that evidence signatures were checked with came from
    )
    artifacts: int
    blobs: int
    events: int
    failures: int
    items: list[Item]


class ReplayResult(msgspec.Struct, kw_only=True):
    output: str
    sha256: str  # of the verdict's bytes
    anchor: str
    artifacts: int
    verdict: str  # pass | fail
    overall: dict[str, object]


def verify(
    path: Path,
    trusted_key: str | None = None,
    trust_store: Path | None = None,
    sigstore_root: Path | None = None,
) -> OfflineReport:
    signed = _Signed()
    found, key_source = _scan(path, trusted_key, on_blob=signed.keep)
    manifest = found.manifest if isinstance(found.manifest, PackManifest) else None
    items = _items(found, manifest)
    trust_source = ""
    if manifest is not None and found.anchor is not None and (signed.blobs or signed.overflow):
        keys, root, trust_source = _trust_material(found.trust, trust_store, sigstore_root)
        items += signed.check(path, trusted_key, keys, root)
    failures = sum(not i.ok for i in items)
    return OfflineReport(
        input=str(path),
        verified=not failures,
        sha256=found.sha256,
        subject="" if manifest is None else manifest.subject,
        anchor=found.anchor_id,
        verifier_key="" if manifest is None else manifest.verifier_key,
        key_source=key_source,
        trust_source=trust_source,
        artifacts=0 if manifest is None else len(manifest.artifacts),
        blobs=len(found.blob_sizes),
        events=sum(a.events for a in manifest.artifacts) if manifest is not None else 0,
        failures=failures,
        items=items,
    )


def replay(path: Path, output: Path, trusted_key: str | None = None) -> ReplayResult:
    """Check the pack as `verify` does (refused, exit 5, naming the first failure, unless every
    check passes), then fold its events into a verdict and write it as canonical JSON."""
    found, _ = _scan(path, trusted_key, keep_all=True)
    problems = list(found.problems)
    for artifact_id, history in sorted(found.histories.items()):
        why = out_of_order(history)
        if why is not None:
            problems.append(Problem(f"events of {artifact_id}", why))
    if problems or not isinstance(found.manifest, PackManifest) or found.anchor is None:
        first = problems[0] if problems else Problem("pack", "not an evidence pack")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidInput("pack-unverified", f"{path}: {first}{more}; no verdict was written")
    document = verdict(found.manifest, found.anchor, found.anchor_id, found.histories, found.sha256)
    data = canonical(document)
    write_durably(output, data)
    overall = document["overall"]
    return ReplayResult(
        output=str(output),
        sha256="sha256:" + hashlib.sha256(data).hexdigest(),
        anchor=found.anchor_id,
        artifacts=len(document["artifacts"]),
        verdict=str(overall["verdict"]),
        overall=dict(overall),
    )


def _scan(
    path: Path,
    trusted_key: str | None,
    *,
    keep_all: bool = False,
    on_blob: Callable[[str, bytes], None] | None = None,
) -> tuple[Scan, str]:
    if not path.is_file():
        raise UsageError(f"--input {path}: no such file")
    try:
        trusted = None if trusted_key is None else signing.Verifier.from_vkey(trusted_key)
    except InvalidInput as exc:
        raise UsageError(f"--trusted-key: {exc.detail}") from None
    found = scan(
        path, trusted, archives.decode_pack_manifest, max_blob=MAX_BLOB, prove_all=True, keep_all=keep_all,
        max_total=PACK_LIMIT, on_blob=on_blob, trust_members=True,
    )  # fmt: skip
    source = "--trusted-key" if trusted_key else "the pack's own (pass --trusted-key to trust a key you hold)"
    return found, source


def _trust_material(
    members: dict[str, bytes], trust_store: Path | None, sigstore_root: Path | None
) -> tuple[tuple[TrustedKey, ...], TrustedRoot | None, str]:
    """The keys and Sigstore root evidence signatures are checked with: those given (a folder of
    PEM keys, a `trusted_root.json`), else the pack's own (`trust/`)."""
    from locker import formats, trust  # the formats' libraries load only for packs with signed evidence

    try:  # the pack's own: a bad one makes the pack unverifiable (the options' are usage errors)
        pems = [
            (n.removeprefix("trust/"), d)
            for n, d in sorted(members.items())
            if n.endswith(trust.KEY_SUFFIXES)
        ]
        keys = trust.trust_store(trust_store) if trust_store else tuple(formats.load_trust_store(pems))
        if sigstore_root is not None:
            root = trust.sigstore_root(sigstore_root)
        elif archives.SIGSTORE_ROOT in members:
            root = trust.sigstore_root_from(members[archives.SIGSTORE_ROOT])
        else:
            root = None
    except ValueError as exc:
        raise InvalidInput("pack-unverified", f"the pack's trusted keys are unusable: {exc}") from None
    except UsageError as exc:
        if sigstore_root is not None or trust_store is not None:
            raise
        raise InvalidInput("pack-unverified", f"the pack's Sigstore root is unusable: {exc}") from None
    source = ", ".join(
        [
            f"keys: {'--trust-store' if trust_store else 'the pack'} ({len(keys)})",
            f"Sigstore root: {'--sigstore-root' if sigstore_root else 'the pack' if root else 'none'}",
        ]
    )
    return keys, root, source


class _Signed:
    """The pieces of evidence that may carry a signature (a DSSE envelope, a Sigstore bundle: a
    cheap byte search as the pack goes by), kept while the pack is read, up to `KEPT` bytes; their
    signatures are checked once the trust material (the pack's last members) is known."""

    KEPT = 256 << 20

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.size = 0
        self.overflow = False  # more than KEPT bytes: a second pass reads the rest

    def keep(self, artifact_id: str, data: bytes) -> None:
        if not _may_be_signed(data):
            return
        if self.size + len(data) > self.KEPT:
            self.overflow = True
            return
        self.blobs[artifact_id] = data
        self.size += len(data)

    def check(
        self,
        path: Path,
        trusted_key: str | None,
        keys: tuple[TrustedKey, ...],
        root: TrustedRoot | None,
    ) -> list[Item]:
        """One item per signed piece of evidence, its signature checked against `keys` and `root`."""
        from locker import formats  # the formats' libraries load only for packs with signed evidence

        items: dict[str, Item] = {}

        def check_one(artifact_id: str, data: bytes) -> None:
            if artifact_id in items or not _may_be_signed(data):
                return
            found = formats.describe(data, keys, root)
            if found.signature != "none":
                by = f" by {found.signed_by}" if found.signed_by else ""
                ok = found.signature == "verified"
                detail = f"{found.format}: {found.signature}{by}"
                items[artifact_id] = Item(item=f"signature of {artifact_id}", ok=ok, detail=detail)

        for artifact_id, data in sorted(self.blobs.items()):
            check_one(artifact_id, data)
        if self.overflow:  # the rest, in a second pass with one blob in memory at a time
            trusted = None if trusted_key is None else signing.Verifier.from_vkey(trusted_key)
            scan(
                path,
                trusted,
                archives.decode_pack_manifest,
                max_blob=MAX_BLOB,
                max_total=PACK_LIMIT,
                on_blob=check_one,
                trust_members=True,
            )
        return [items[i] for i in sorted(items)]


def _may_be_signed(data: bytes) -> bool:
    return b'"payloadType"' in data or b"application/vnd.dev.sigstore.bundle" in data


def _items(found: Scan, manifest: PackManifest | None) -> list[Item]:
    """One line per thing checked: the anchor and its checkpoints, the manifest, each blob and each
    artifact's events; a failure names its item, and problems with no item of their own follow."""
    failed: dict[str, list[str]] = {}
    for problem in found.problems:
        failed.setdefault(problem.item, []).append(problem.detail)
    names: list[str] = []
    if found.anchor is not None:
        names.append(f"anchor {found.anchor_id}")
        names += [f"checkpoint of partition {h.partition}" for h in found.anchor.body.partitions]
    if manifest is not None:
        names.append("manifest")
        for artifact in manifest.artifacts:
            if artifact.blob:
                names.append(f"blob {artifact.artifact_id}")
            names.append(f"events of {artifact.artifact_id}")
    items = [Item(item=name, ok=name not in failed, detail="; ".join(failed.pop(name, []))) for name in names]
    items += [Item(item=name, ok=False, detail="; ".join(details)) for name, details in failed.items()]
    return items
