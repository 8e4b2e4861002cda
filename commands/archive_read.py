"""Reading an archive back and checking all of it (`locker.archives` is its format): what
`stella evidence archive` does before it records anything, and `recover` before it restores a
blob. The archive is streamed once (never extracted: nothing is written, whatever its member
names), so its size costs time, not memory; only the blobs and events asked for are kept.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import msgspec
import zstandard

from locker import anchors, archives, signing
from locker.anchors import AnchorCreated
from locker.archives import History, Manifest, PackManifest
from locker.errors import InvalidInput, StorageUnavailable

_CHUNK = 1 << 20
LIMITS = {archives.ANCHOR: 4 << 20, archives.SIGNATURE: 4096, archives.MANIFEST: 1 << 30}
EVENTS_LIMIT = 512 << 20


class Contents(msgspec.Struct, kw_only=True):
    manifest: Manifest
    manifest_sha256: str
    sha256: str  # of the whole file
    file_bytes: int
    compressed: bool
    anchor_id: str
    histories: dict[str, History]  # of the wanted artifacts
    blobs: dict[str, bytes]  # of the wanted artifacts


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with an archive or a pack: the item (a member, a blob, an artifact's events,
    the anchor, the manifest) and what."""

    item: str
    detail: str

    def __str__(self) -> str:
        return f"{self.item}: {self.detail}"


class Scan(msgspec.Struct, kw_only=True):
    """What reading a whole archive or pack found (`scan`)."""

    problems: list[Problem]
    manifest: Manifest | PackManifest | None
    manifest_sha256: str
    sha256: str  # of the whole file
    file_bytes: int
    compression: str  # "zstd", "gzip" or "none"
    anchor: AnchorCreated | None
    anchor_id: str
    histories: dict[str, History]  # of the wanted artifacts (all with `keep_all`)
    blobs: dict[str, bytes]  # of the wanted artifacts
    blob_sizes: dict[str, int]  # every blob there, and its size
    trust: dict[str, bytes]  # a pack's trust material, by member name


class _Hashing(io.RawIOBase):
    """A file read through: counts and hashes every byte read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hasher = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self.hasher.update(data)
        self.count += len(data)
        buffer[: len(data)] = data
        return len(data)

    def read_to_end(self) -> None:
        while self.read(_CHUNK):
            pass


def read_archive(
    path: Path,
    trusted: signing.Verifier,
    *,
    max_blob: int,
    prove_all: bool = False,
    wanted: frozenset[str] = frozenset(),
    progress: Callable[[int, int], None] | None = None,
) -> Contents:
    """Read the whole archive at `path` and check it: every member a plain file with a name the
    format gives, once; the anchor signed by `trusted`; every blob hashing to its name; the
    manifest signed by `trusted` and naming exactly the members there are, with their digests and
    sizes; the events of the `wanted` artifacts (of all with `prove_all`) proven in the anchor.
    Raises `InvalidInput("archive-damaged", ...)` naming the first problem; keeps the events and
    blobs of `wanted`."""
    found = scan(
        path, trusted, archives.decode_manifest, max_blob=max_blob, prove_all=prove_all, wanted=wanted,
        progress=progress,
    )  # fmt: skip
    if found.problems:
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        raise damaged(path, str(found.problems[0]) + more)
    assert isinstance(found.manifest, Manifest)
    return Contents(
        manifest=found.manifest, manifest_sha256=found.manifest_sha256, sha256=found.sha256,
        file_bytes=found.file_bytes, compressed=found.compression != "none", anchor_id=found.anchor_id,
        histories=found.histories, blobs=found.blobs,
    )  # fmt: skip


def scan(
    path: Path,
    trusted: signing.Verifier | None,
    decode_manifest: Callable[[bytes], Manifest | PackManifest],
    *,
    max_blob: int,
    prove_all: bool = False,
    wanted: frozenset[str] = frozenset(),
    keep_all: bool = False,
    max_total: int | None = None,
    on_blob: Callable[[str, bytes], None] | None = None,
    trust_members: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Scan:
    """Read the whole file at `path` (an archive or, with its manifest decoder, a pack) and check
    it (`read_archive` says what), collecting every problem; a member that no archive has (a link,
    a device, an odd or repeated name, too large, or more than `max_total` bytes in all) ends the
    checks there (the rest of the file is only hashed). `trusted` None trusts the key the file's
    anchor document names; `trust_members` accepts a pack's `trust/` members. Raises only
    `StorageUnavailable`, for a file that cannot be read."""
    reader = _Reader(
        trusted, max_blob, prove_all, wanted, keep_all, decode_manifest, max_total, on_blob, trust_members
    )
    compression = "none"
    hashing: _Hashing | None = None
    try:
        total = path.stat().st_size
        with path.open("rb") as raw:
            magic = raw.read(4)
            raw.seek(0)
            compression = (
                "zstd"
                if magic == archives.ZSTD_MAGIC
                else "gzip"
                if magic[:2] == archives.GZIP_MAGIC
                else "none"
            )
            hashing = _Hashing(raw)
            try:
                with _unpacking(hashing, compression) as stream:
                    for _ in reader.read(stream):
                        if progress is not None:
                            progress(hashing.count, total)
            finally:  # `sha256` and `file_bytes` are the whole file's, however far the checks got
                hashing.read_to_end()
    except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        reader.problems.append(Problem("file", f"not a readable tar stream: {exc}"))
    except _Refused as exc:
        reader.problems.append(exc.problem)
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile):
            reader.problems.append(Problem("file", f"not a readable gzip stream: {exc}"))
        else:
            raise StorageUnavailable(f"cannot read {path}: {exc}") from exc
    else:
        reader.finish()
    assert hashing is not None
    return Scan(
        problems=reader.problems, manifest=reader.manifest, manifest_sha256=reader.manifest_sha256,
        sha256="sha256:" + hashing.hasher.hexdigest(), file_bytes=hashing.count, compression=compression,
        anchor=reader.anchor, anchor_id=reader.anchor_id, histories=reader.histories, blobs=reader.blobs,
        blob_sizes=reader.blob_sizes, trust=reader.trust or {},
    )  # fmt: skip


TRAILING_LIMIT = 1 << 20  # bytes after the tar's end blocks: a tar writer pads to 10 KiB


@contextlib.contextmanager
def _unpacking(hashing: _Hashing, compression: str) -> Iterator[IO[bytes]]:
    """The tar stream of the file `hashing` reads. When the caller is done, what follows the tar's
    end is read too (a zstd frame's checksum and gzip's CRC are checked there), up to a limit: a
    stream of zeros after the end is refused, not inflated forever."""
    stream: IO[bytes]
    if compression == "zstd":
        source: Any = hashing  # a readable file object, as zstandard wants
        stream = cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(source, read_size=_CHUNK))
    elif compression == "gzip":
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=io.BufferedReader(hashing, _CHUNK), mode="rb"))
    else:
        stream = io.BufferedReader(hashing, _CHUNK)
    yield stream
    trailing = 0
    while chunk := stream.read(_CHUNK):
        trailing += len(chunk)
        if trailing > TRAILING_LIMIT:
            raise _Refused(Problem("file", f"more than {TRAILING_LIMIT} bytes after the end of the tar"))


class _Refused(Exception):
    """A member (or trailer) no archive has: the reading stops there."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _Reader:
    """The checks of `scan`, member by member as the tar stream goes by, then as a whole. A
    `trusted` key of None trusts the key the file's own anchor document names."""

    def __init__(
        self,
        trusted: signing.Verifier | None,
        max_blob: int,
        prove_all: bool,
        wanted: frozenset[str],
        keep_all: bool,
        decode_manifest: Callable[[bytes], Manifest | PackManifest],
        max_total: int | None,
        on_blob: Callable[[str, bytes], None] | None = None,
        trust_members: bool = False,
    ) -> None:
        self.trusted, self.max_blob, self.prove_all, self.wanted = trusted, max_blob, prove_all, wanted
        self.keep_all, self.decode_manifest, self.max_total = keep_all, decode_manifest, max_total
        self.on_blob = on_blob  # each good blob, as it goes by (then dropped)
        # A pack's trust material, name -> bytes (archives have none: None refuses the names).
        self.trust: dict[str, bytes] | None = {} if trust_members else None
        self.total = 0
        self.anchor: AnchorCreated | None = None
        self.anchor_id = ""
        self.names: set[str] = set()
        self.files: dict[str, archives.FileEntry] = {}  # every member but blobs, manifest, signature
        self.blob_sizes: dict[str, int] = {}
        self.facts: dict[str, tuple[int | None, int]] = {}  # artifact -> (proven ingest size, events)
        self.problems: list[Problem] = []
        self.histories: dict[str, History] = {}
        self.blobs: dict[str, bytes] = {}
        self.manifest_raw: bytes | None = None
        self.signature: bytes | None = None
        self.manifest: Manifest | PackManifest | None = None
        self.manifest_sha256 = ""

    def read(self, stream: IO[bytes]) -> Iterator[None]:
        """Check each member as it goes by; yields now and then, for progress."""
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for n, member in enumerate(tar):
                self._member(tar, member)
                if n % 256 == 0:
                    yield None
        yield None

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        shown = repr(name[:200])
        if not member.isreg():
            raise _Refused(Problem(f"member {shown}", "not a plain file (a link, a folder or a device)"))
        if name in self.names:
            raise _Refused(Problem(f"member {shown}", "there twice"))
        self.names.add(name)
        artifact_id = archives.blob_of(name)
        limit = (
            self.max_blob
            if artifact_id is not None
            else EVENTS_LIMIT
            if archives.is_events_member(name)
            else archives.TRUST_LIMIT
            if self.trust is not None and archives.is_trust_member(name)
            else LIMITS.get(name)
        )
        if limit is None:
            raise _Refused(
                Problem(f"member {shown}", "not a name the format gives (path, link or stray file)")
            )
        if member.size > limit:
            raise _Refused(Problem(f"member {shown}", f"larger than {limit} bytes"))
        self.total += member.size
        if self.max_total is not None and self.total > self.max_total:
            raise _Refused(Problem("file", f"its members hold more than {self.max_total} bytes"))
        source = tar.extractfile(member)
        assert source is not None  # a plain file
        if artifact_id is not None:
            self._blob(artifact_id, source)
            return
        data = source.read()
        if len(data) != member.size:
            raise _Refused(Problem(f"member {shown}", "cut short"))
        if name == archives.MANIFEST:
            self.manifest_raw = data
        elif name == archives.SIGNATURE:
            self.signature = data
        else:
            self.files[name] = archives.entry_of(data)
            if self.trust is not None and archives.is_trust_member(name):
                self.trust[name] = data
            elif name == archives.ANCHOR:
                self._anchor(data)
            else:
                self._lines(name, data)

    def _blob(self, artifact_id: str, source: IO[bytes]) -> None:
        hasher = hashlib.sha256()
        keep = artifact_id in self.wanted or self.on_blob is not None
        chunks = []
        size = 0
        while chunk := source.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            if keep:
                chunks.append(chunk)
        if "sha256:" + hasher.hexdigest() != artifact_id:
            self.problems.append(Problem(f"blob {artifact_id}", "does not hash to its id"))
        elif keep:
            self.blobs[artifact_id] = b"".join(chunks)
            if self.on_blob is not None:
                self.on_blob(artifact_id, self.blobs.pop(artifact_id))
        self.blob_sizes[artifact_id] = size

    def _anchor(self, data: bytes) -> None:
        # json.loads raises RecursionError, not ValueError, for nesting deeper than Python allows.
        try:
            document = json.loads(data)
            record = base64.b64decode(document["record"], validate=True)
            if self.trusted is None:
                self.trusted = signing.Verifier.from_vkey(str(document["verifier_key"]))
            anchor = anchors.decode(record)
        except (ValueError, KeyError, TypeError, RecursionError, InvalidInput) as exc:
            raise _Refused(Problem("anchor", f"{archives.ANCHOR} is unreadable: {exc}")) from None
        self.anchor_id = anchors.anchor_id(record)
        findings = anchors.check_anchor(anchor, self.anchor_id, self.trusted)
        if findings:
            found = "; ".join(f"{f.check}: {f.detail}" for f in findings)
            raise _Refused(
                Problem(f"anchor {self.anchor_id}", f"does not verify with the trusted key: {found}")
            )
        self.anchor = anchor

    def _lines(self, name: str, data: bytes) -> None:
        if self.anchor is None:
            raise _Refused(Problem(f"member {name}", f"comes before {archives.ANCHOR}"))
        try:
            lines = archives.decode_lines(data)
        except InvalidInput as exc:
            self.problems.append(Problem(f"member {name}", exc.detail))
            return
        for history in lines:
            artifact_id = history.artifact_id
            item = f"events of {artifact_id[:80]}"
            if artifact_id in self.facts:
                self.problems.append(Problem(item, "there twice"))
                continue
            size = None
            if self.prove_all or artifact_id in self.wanted:
                found, size = archives.check_history(history, self.anchor)
                self.problems += [Problem(item, problem) for problem in found]
            self.facts[artifact_id] = (size, len(history.events))
            if self.keep_all or artifact_id in self.wanted:
                self.histories[artifact_id] = history

    def finish(self) -> None:
        """The whole-file checks: the manifest, its signature, and that it names what is there."""
        problems = self.problems
        if self.manifest_raw is None or self.signature is None:
            problems.append(Problem("manifest", "missing, or its signature is (cut short?)"))
            return
        try:
            signature = base64.b64decode(self.signature.strip(), validate=True)
        except ValueError:
            signature = b""
        if self.trusted is None or not self.trusted.verify(self.manifest_raw, signature):
            problems.append(Problem("manifest", "its signature does not verify with the trusted key"))
            return
        try:
            manifest = self.decode_manifest(self.manifest_raw)
        except InvalidInput as exc:
            problems.append(Problem("manifest", exc.detail))
            return
        if manifest.anchor_id != self.anchor_id:
            problems.append(
                Problem("manifest", f"names anchor {manifest.anchor_id}, the file holds {self.anchor_id}")
            )
        for name in sorted(manifest.files.keys() | self.files.keys()):
            if manifest.files.get(name) != self.files.get(name):
                problems.append(
                    Problem(f"member {name}", "not the one the manifest names (missing, changed or extra)")
                )
        listed = {a.artifact_id: a for a in manifest.artifacts}
        with_blobs = {i for i, a in listed.items() if a.blob}
        for artifact_id in sorted(with_blobs ^ self.blob_sizes.keys()):
            problems.append(Problem(f"blob {artifact_id[:80]}", "missing, or not in the manifest"))
        for artifact_id in sorted(listed.keys() ^ self.facts.keys()):
            problems.append(Problem(f"events of {artifact_id[:80]}", "missing, or not in the manifest"))
        for artifact_id, entry in listed.items():
            proven, events = self.facts.get(artifact_id, (None, entry.events))
            sizes = {entry.size, self.blob_sizes.get(artifact_id, entry.size), proven or entry.size}
            if len(sizes) > 1 or events != entry.events:
                problems.append(
                    Problem(f"artifact {artifact_id}", "its size or event count is not the manifest's")
                )
        self.manifest = manifest
        self.manifest_sha256 = archives.entry_of(self.manifest_raw).sha256


def damaged(path: Path, detail: str) -> InvalidInput:
    return InvalidInput("archive-damaged", f"{path}: {detail}; nothing was changed")
