"""What a backup is made of: its manifest, the framed record streams of the two forever topics,
and its blobs in pack files.

A backup folder (`stella backup create`) holds `events.records` and `anchors.records` (every record
of `evidence.events` and `evidence.anchors` up to the end offsets at backup time, with partition,
offset, timestamp, key, value and headers), `blobs.pack` (the blobs no earlier backup in the same
root holds, one after the other), `blobs.index` (where each blob the backup needs is: which
backup's pack, at which offset, how long), the anchor backup copies, the config file, and
`manifest.json` with the SHA-256 and size of each of those files and of every earlier pack it
reads, and the index checksum that folding its events gives. `manifest.sig` is the anchor key's
Ed25519 signature of the manifest's exact bytes. No I/O here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Literal

import msgspec

from locker.errors import IntegrityError

BACKUP_TYPE = "evidence-locker"


class BackedUpRecord(msgspec.Struct, frozen=True, array_like=True):
    """One record as it was on its topic (a null value stays null)."""

    partition: int
    offset: int
    timestamp: int  # milliseconds, as the broker stored it
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class FileEntry(msgspec.Struct, frozen=True):
    sha256: str
    size: int


class PackedBlob(msgspec.Struct, frozen=True, array_like=True):
    """Where one blob of a backup is: `size` bytes at `offset` of backup `pack`'s `blobs.pack`."""

    artifact_id: str
    pack: str
    offset: int
    size: int


PACK = "blobs.pack"
BLOB_INDEX = "blobs.index"
VERSION = 2  # 1: blobs as files in a pool shared by the backups of a root


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    backup_id: str
    backup_type: str = BACKUP_TYPE
    created_at: datetime
    topic_prefix: str
    ends: dict[str, tuple[int, ...]]  # "events" / "anchors": each partition's end offset at backup time
    events: int
    anchors: int
    artifacts: int  # blobs this backup holds (listed in its `blobs.index`)
    blob_bytes: int
    missing_blobs: tuple[str, ...] = ()  # ingested, but absent or damaged in storage at backup time
    files: dict[str, FileEntry]  # path in the backup folder -> digest and size
    packs: dict[str, FileEntry] = {}  # backup id -> its `blobs.pack`, for every pack this one reads
    index_checksum: str  # `IndexStore.checksum()` of the fold of this backup's events
    latest_anchor: str = ""
    verifier_key: str  # the signing key's public half, for reading the signature offline
    schema_version: int = VERSION


_manifest_encoder = msgspec.json.Encoder(order="sorted")
_manifest_decoder = msgspec.json.Decoder(Manifest)
_records_encoder = msgspec.msgpack.Encoder()
_records_decoder = msgspec.msgpack.Decoder(list[BackedUpRecord])
_FRAME = struct.Struct(">I")


def encode_manifest(manifest: Manifest) -> bytes:
    return _manifest_encoder.encode(manifest)


def decode_manifest(raw: bytes) -> Manifest:
    """Raises `msgspec.DecodeError` (and its `ValidationError`) for bytes that are no manifest of
    this version (a version-1 backup, blobs in a shared pool, is no longer read)."""
    try:
        version = _version_decoder.decode(raw).schema_version
        if version != VERSION:
            raise msgspec.ValidationError(
                f"a backup of format version {version}; this locker reads {VERSION}"
            )
        return _manifest_decoder.decode(raw)
    except RecursionError:  # msgspec's, for nesting deeper than the interpreter allows
        raise msgspec.DecodeError("the manifest is nested too deeply") from None


class _Version(msgspec.Struct):
    schema_version: int = 1


_version_decoder = msgspec.json.Decoder(_Version)


_blobs_encoder = msgspec.msgpack.Encoder()
_blobs_decoder = msgspec.msgpack.Decoder(list[PackedBlob])


def encode_blob_index(blobs: list[PackedBlob]) -> bytes:
    return _blobs_encoder.encode(blobs)


def decode_blob_index(raw: bytes) -> list[PackedBlob]:
    """Raises `ValueError` for bytes that are no blob index."""
    try:
        return _blobs_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:  # the latter for nesting too deep
        raise ValueError(f"the blob index does not decode: {exc}") from None


def frame(records: Iterable[BackedUpRecord]) -> bytes:
    """A chunk of a record stream: its length (4 bytes, big-endian), then the msgpack list."""
    body = _records_encoder.encode(list(records))
    return _FRAME.pack(len(body)) + body


FRAME_HEADER = _FRAME.size


def frame_size(header: bytes) -> int:
    """The length of the frame body that a 4-byte header announces."""
    (size,) = _FRAME.unpack(header)
    return int(size)


def decode_frame(body: bytes) -> list[BackedUpRecord]:
    """The records of one frame body; raises `ValueError` if it does not decode."""
    try:
        return _records_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:  # the latter for nesting too deep
        raise ValueError(f"a frame does not decode: {exc}") from None


def unframe(data: bytes) -> Iterator[BackedUpRecord]:
    """Every record of a whole stream; raises `ValueError` for a stream that is cut short or
    garbled (the manifest's digest is checked before this is ever read)."""
    at = 0
    while at < len(data):
        if at + FRAME_HEADER > len(data):
            raise ValueError(f"a frame header is cut short at byte {at}")
        size = frame_size(data[at : at + FRAME_HEADER])
        at += FRAME_HEADER
        if at + size > len(data):
            raise ValueError(f"a frame is cut short at byte {at}")
        yield from decode_frame(data[at : at + size])
        at += size


Step = tuple[Literal["plain", "commit", "fill"], int]


def replay_steps(offsets: Sequence[int]) -> list[Step]:
    """How to produce records back into an empty partition so that each lands at its old offset
    (`offsets`, ascending) when transactions left gaps between them: a committed transaction's
    marker takes one offset after its record, an aborted one its records and a marker.

    ("plain", i): record i, no transaction; ("commit", i): record i in a transaction of its own
    (two offsets); ("fill", n): an aborted transaction of n filler records (n + 1 offsets), which
    read-committed consumers never see. `IntegrityError` for a layout no transaction makes."""
    steps: list[Step] = []
    if offsets and offsets[0] > 0:
        if offsets[0] == 1:
            raise IntegrityError(
                "the backed-up records' offsets", "a gap a transaction made", "offset 1 first"
            )
        steps.append(("fill", offsets[0] - 1))
    for i, offset in enumerate(offsets):
        gap = offsets[i + 1] - offset - 1 if i + 1 < len(offsets) else 0
        if gap < 0:
            raise IntegrityError(
                "the backed-up records' offsets", "ascending", f"{offset} then {offsets[i + 1]}"
            )
        steps.append(("commit" if gap == 1 else "plain", i))
        if gap >= 2:
            steps.append(("fill", gap - 1))
    return steps
