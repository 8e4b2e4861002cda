"""What an archive is made of (`stella evidence archive`), and the checks of its parts. No I/O here.

An archive is one tar file (zstd-compressed with `--compress`), its members in this order:

    anchor.json              the anchor every inclusion proof is against: its exact record,
                             signed checkpoints and the verifier key (`anchor export`'s document)
    events/000000.jsonl      one line per artifact of the group: its events, each with its
                             inclusion proof in the anchor's tree of its partition
    blobs/sha256/<hex>       the blobs of that group, named by their digest
    events/000001.jsonl ...  the next group and its blobs
    trust/...                (packs) the trust material evidence signatures are checked with
    manifest.json            format, anchor, every artifact's metadata and size, and the SHA-256
                             and size of every member that is not a blob
    manifest.sig             the anchor key's Ed25519 signature of manifest.json's exact bytes

Groups keep the writer's memory bounded and let a reader check as it streams: a blob checks
against its own name, the other members against the manifest at the end, the manifest against
its signature. Members are plain files with fixed metadata; a reader refuses anything else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec

from locker import merkle
from locker.anchors import AnchorCreated
from locker.backups import FileEntry as FileEntry  # the same entry as a backup manifest's
from locker.errors import InvalidInput, StorageUnavailable, UsageError
from locker.events import ArtifactIngested, decode
from locker.files import new_file

FORMAT = 1
ANCHOR = "anchor.json"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
GROUP_ARTIFACTS = 1000  # artifacts of one events member ...
GROUP_BYTES = 64 << 20  # ... and at most this many blob bytes (one blob may be more)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"

_BLOB = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_EVENTS = re.compile(r"^events/(\d{6})\.jsonl$")
_TRUST = re.compile(r"^trust/[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TRUST_LIMIT = 1 << 20
SIGSTORE_ROOT = "trust/sigstore-trusted-root.json"  # a pack's Sigstore trusted root


class ArchivedArtifact(msgspec.Struct, frozen=True, kw_only=True):
    """One artifact of the archive, as the index had it."""

    artifact_id: str
    size: int
    kind: str
    subjects: tuple[str, ...] = ()
    producer: str = ""
    media_type: str = ""
    ingested_at: datetime
    partition: int
    offset: int  # of its ingest event
    events: int  # how many of its events (with proofs) the archive holds
    status: str = "ingested"  # in the locker's index when the file was written
    blob: bool = True  # its blob is in the file (a pack lists an artifact without one by its events)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    archive_id: str
    created_at: datetime
    created_by: str
    older_than: str  # as the operator gave it ("365d")
    cutoff: datetime  # artifacts ingested before this
    origin: str  # the checkpoints' origin prefix
    anchor_id: str
    verifier_key: str
    artifacts: tuple[ArchivedArtifact, ...]
    blob_bytes: int
    files: dict[str, FileEntry]  # every member but the blobs and the manifest itself
    format: int = FORMAT


PACK = "evidence-pack"


class PackManifest(msgspec.Struct, frozen=True, kw_only=True):
    """The manifest of an evidence pack (`stella evidence export`): the same members as an archive,
    gzip-compressed, with nothing that changes between two exports of the same state."""

    kind: str = PACK
    subject: str  # the digest exported
    include_deps: bool = False
    origin: str
    anchor_id: str
    verifier_key: str
    artifacts: tuple[ArchivedArtifact, ...]
    blob_bytes: int
    files: dict[str, FileEntry]
    format: int = FORMAT


class ProvedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event record of an artifact: its exact bytes (the Merkle leaf) and its inclusion proof
    in the anchor's tree of `partition` (leaf side first, as `locker.merkle` gives it)."""

    partition: int
    offset: int
    leaf_index: int
    value: bytes  # base64 in JSON
    proof: tuple[bytes, ...]


class History(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an events member: an artifact and its events, in log order."""

    artifact_id: str
    events: tuple[ProvedEvent, ...]


_manifest_encoder = msgspec.json.Encoder(order="sorted")
_manifest_decoder = msgspec.json.Decoder(Manifest)
# What msgspec raises for bytes that are no such document: besides its own errors, UnicodeDecodeError
# for bad UTF-8 in a string, and RecursionError for nesting deeper than the interpreter allows
# (in a field a type skips, too).
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(History)


def entry_of(data: bytes) -> FileEntry:
    """A member's digest and size, as the manifest names them."""
    return FileEntry("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def write_tar_gz(target: Path, members: Iterable[tuple[str, bytes]], *, mtime: int, what: str) -> None:
    """A gzip-compressed tar of `members` with fixed metadata (`tar_info`), synced and linked into
    place (`new_file`): `UsageError` if `target` exists, `StorageUnavailable` if it cannot be
    written. The same members and `mtime` give the same bytes."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            new_file(target) as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime, compresslevel=6) as stream,
            tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for name, data in members:
                tar.addfile(tar_info(name, len(data), mtime), io.BytesIO(data))
    except FileExistsError:
        raise UsageError(f"{target} exists: choose another --output") from None
    except OSError as exc:
        raise StorageUnavailable(f"cannot write the {what} {target}: {exc.strerror or exc}") from exc


def tar_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    """A plain-file member's header with fixed metadata (mode 0444, no owner)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o444
    return info


def blob_member(artifact_id: str) -> str:
    return "blobs/sha256/" + artifact_id.removeprefix("sha256:")


def events_member(group: int) -> str:
    return f"events/{group:06d}.jsonl"


def blob_of(name: str) -> str | None:
    """The artifact id a blob member's name gives, or None if `name` is no blob member."""
    match = _BLOB.match(name)
    return None if match is None else "sha256:" + match.group(1)


def is_events_member(name: str) -> bool:
    return _EVENTS.match(name) is not None


def is_trust_member(name: str) -> bool:
    """A pack's trust material: the exporting locker's trusted keys (`trust/<file>.pem`) and its
    Sigstore trusted root (`SIGSTORE_ROOT`), for checking the evidence's own signatures offline."""
    return _TRUST.match(name) is not None


def encode_manifest(manifest: Manifest | PackManifest) -> bytes:
    return _manifest_encoder.encode(manifest)


def decode_manifest(raw: bytes) -> Manifest:
    """Raises `InvalidInput` for bytes that are no manifest of this format."""
    try:
        manifest = _manifest_decoder.decode(raw)
    except _UNDECODABLE as exc:
        raise InvalidInput("schema-invalid", f"the manifest does not decode: {exc}") from None
    if manifest.format != FORMAT:
        raise InvalidInput("schema-invalid", f"archive format {manifest.format}; this locker reads {FORMAT}")
    return manifest


_pack_decoder = msgspec.json.Decoder(PackManifest)


def decode_pack_manifest(raw: bytes) -> PackManifest:
    """Raises `InvalidInput` for bytes that are no evidence pack manifest of this format."""
    try:
        manifest = _pack_decoder.decode(raw)
    except _UNDECODABLE as exc:
        raise InvalidInput("schema-invalid", f"the manifest does not decode: {exc}") from None
    if manifest.kind != PACK or manifest.format != FORMAT:
        raise InvalidInput("schema-invalid", f"not an evidence pack of format {FORMAT}")
    return manifest


def encode_lines(histories: Iterable[History]) -> bytes:
    return b"".join(_line_encoder.encode(h) + b"\n" for h in histories)


def decode_lines(raw: bytes) -> list[History]:
    """Raises `InvalidInput` for bytes that are no events member."""
    try:
        return [_line_decoder.decode(line) for line in raw.splitlines() if line]
    except _UNDECODABLE as exc:
        raise InvalidInput("schema-invalid", f"an events line does not decode: {exc}") from None


def check_history(history: History, anchor: AnchorCreated) -> tuple[list[str], int | None]:
    """What is wrong with an artifact's archived events ([] if nothing), and the size its ingest
    event gives. Each event must be proven in `anchor` (whose signature the caller checked) and be
    about the artifact; the first must be its ingest (the caller compares the sizes)."""
    heads = {h.partition: h for h in anchor.body.partitions}
    problems: list[str] = []
    size = None
    for i, proved in enumerate(history.events):
        where = f"event {proved.partition}/{proved.offset} of {history.artifact_id}"
        head = heads.get(proved.partition)
        if head is None or not 0 <= proved.leaf_index < head.tree_size:
            problems.append(f"{where}: not in anchor {anchor_label(anchor)}")
            continue
        try:
            leaf = merkle.leaf_hash(proved.value)
            merkle.verify_inclusion(proved.leaf_index, head.tree_size, leaf, proved.proof, head.root)
            event = decode(proved.value)
        except (merkle.RootMismatch, merkle.ProofError) as exc:
            problems.append(f"{where}: its inclusion proof fails: {exc}")
            continue
        except InvalidInput as exc:
            problems.append(f"{where}: not an event ({exc})")
            continue
        if getattr(event, "artifact_id", None) != history.artifact_id:
            problems.append(f"{where}: is about another artifact")
        elif i == 0 and isinstance(event, ArtifactIngested):
            size = event.size
    if size is None and not problems:
        problems.append(f"{history.artifact_id}: its first archived event is not its ingest")
    return problems, size


def anchor_label(anchor: AnchorCreated) -> str:
    return f"sequence {anchor.body.sequence}"
