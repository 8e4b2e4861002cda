"""Reading an archive back and checking all of it (`locker.archives` is its format): what
`stella evidence archive` does before it records anything, and `recover` before it restores a
blob. The archive is streamed once (never extracted: nothing is written, whatever its member
names), so its size costs time, not memory; only the blobs and events asked for are kept.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import msgspec
import zstandard

from locker import anchors, archives, signing
from locker.anchors import AnchorCreated
from locker.archives import History, Manifest
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
    try:
        total = path.stat().st_size
        with path.open("rb") as raw:
            compressed = raw.read(4) == archives.ZSTD_MAGIC
            raw.seek(0)
            hashing = _Hashing(raw)
            reader = _Reader(trusted, max_blob, prove_all, wanted)
            with _unpacking(hashing, compressed) as stream:
                for _ in reader.read(stream):
                    if progress is not None:
                        progress(hashing.count, total)
            hashing.read_to_end()
    except (tarfile.TarError, EOFError, zstandard.ZstdError) as exc:
        raise damaged(path, f"not a readable archive: {exc}") from None
    except OSError as exc:
        raise StorageUnavailable(f"cannot read {path}: {exc}") from exc
    except InvalidInput as exc:
        raise damaged(path, exc.detail) from None
    problems = reader.finish()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise damaged(path, problems[0] + more)
    assert reader.manifest is not None
    return Contents(
        manifest=reader.manifest, manifest_sha256=reader.manifest_sha256,
        sha256="sha256:" + hashing.hasher.hexdigest(), file_bytes=hashing.count, compressed=compressed,
        anchor_id=reader.anchor_id, histories=reader.histories, blobs=reader.blobs,
    )  # fmt: skip


@contextlib.contextmanager
def _unpacking(hashing: _Hashing, compressed: bool) -> Iterator[IO[bytes]]:
    """The tar stream of the file `hashing` reads; read to its end (a zstd frame's checksum is
    checked there) when the caller is done."""
    stream: IO[bytes]
    if compressed:
        source: Any = hashing  # a readable file object, as zstandard wants
        stream = cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(source, read_size=_CHUNK))
    else:
        stream = io.BufferedReader(hashing, _CHUNK)
    yield stream
    while stream.read(_CHUNK):
        pass


class _Reader:
    """The checks of `read_archive`, member by member as the tar stream goes by, then as a whole."""

    def __init__(
        self, trusted: signing.Verifier, max_blob: int, prove_all: bool, wanted: frozenset[str]
    ) -> None:
        self.trusted, self.max_blob, self.prove_all, self.wanted = trusted, max_blob, prove_all, wanted
        self.anchor: AnchorCreated | None = None
        self.anchor_id = ""
        self.names: set[str] = set()
        self.files: dict[str, archives.FileEntry] = {}  # every member but blobs, manifest, signature
        self.blob_sizes: dict[str, int] = {}
        self.facts: dict[
            str, tuple[int | None, int]
        ] = {}  # artifact -> (its ingest's size if proven, events)
        self.problems: list[str] = []
        self.histories: dict[str, History] = {}
        self.blobs: dict[str, bytes] = {}
        self.manifest_raw: bytes | None = None
        self.signature: bytes | None = None
        self.manifest: Manifest | None = None
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
        if not member.isreg():
            raise InvalidInput("archive-damaged", f"member {name[:200]!r} is not a plain file")
        if name in self.names:
            raise InvalidInput("archive-damaged", f"member {name[:200]!r} is there twice")
        self.names.add(name)
        artifact_id = archives.blob_of(name)
        limit = (
            self.max_blob
            if artifact_id is not None
            else EVENTS_LIMIT
            if archives.is_events_member(name)
            else LIMITS.get(name)
        )
        if limit is None:
            raise InvalidInput("archive-damaged", f"member {name[:200]!r} is not part of an archive")
        if member.size > limit:
            raise InvalidInput("archive-damaged", f"member {name} is larger than {limit} bytes")
        source = tar.extractfile(member)
        assert source is not None  # a plain file
        if artifact_id is not None:
            self._blob(artifact_id, source)
            return
        data = source.read()
        if len(data) != member.size:
            raise InvalidInput("archive-damaged", f"member {name} is cut short")
        if name == archives.MANIFEST:
            self.manifest_raw = data
        elif name == archives.SIGNATURE:
            self.signature = data
        else:
            self.files[name] = archives.FileEntry("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
            self._anchor(data) if name == archives.ANCHOR else self._lines(name, data)

    def _blob(self, artifact_id: str, source: IO[bytes]) -> None:
        hasher = hashlib.sha256()
        keep = artifact_id in self.wanted
        chunks = []
        size = 0
        while chunk := source.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            if keep:
                chunks.append(chunk)
        if "sha256:" + hasher.hexdigest() != artifact_id:
            self.problems.append(f"the blob of {artifact_id} does not hash to its id")
        elif keep:
            self.blobs[artifact_id] = b"".join(chunks)
        self.blob_sizes[artifact_id] = size

    def _anchor(self, data: bytes) -> None:
        try:
            record = base64.b64decode(json.loads(data)["record"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput("archive-damaged", f"{archives.ANCHOR} is unreadable: {exc}") from None
        anchor = anchors.decode(record)
        self.anchor_id = anchors.anchor_id(record)
        findings = anchors.check_anchor(anchor, self.anchor_id, self.trusted)
        if findings:
            raise InvalidInput(
                "archive-damaged", f"its anchor does not verify with this locker's key: {findings[0].detail}"
            )
        self.anchor = anchor

    def _lines(self, name: str, data: bytes) -> None:
        if self.anchor is None:
            raise InvalidInput("archive-damaged", f"{name} comes before {archives.ANCHOR}")
        for history in archives.decode_lines(data):
            artifact_id = history.artifact_id
            if artifact_id in self.facts:
                self.problems.append(f"the events of {artifact_id[:80]} are there twice")
                continue
            size = None
            if self.prove_all or artifact_id in self.wanted:
                problems, size = archives.check_history(history, self.anchor)
                self.problems += problems
            self.facts[artifact_id] = (size, len(history.events))
            if artifact_id in self.wanted:
                self.histories[artifact_id] = history

    def finish(self) -> list[str]:
        """Every problem found, the whole-archive checks included ([] for a good archive)."""
        problems = self.problems
        if self.manifest_raw is None or self.signature is None:
            return [*problems, "it has no manifest or no signature (cut short?)"]
        try:
            signature = base64.b64decode(self.signature.strip(), validate=True)
        except ValueError:
            signature = b""
        if not self.trusted.verify(self.manifest_raw, signature):
            return [*problems, "the manifest's signature does not verify with this locker's key"]
        try:
            manifest = archives.decode_manifest(self.manifest_raw)
        except InvalidInput as exc:
            return [*problems, exc.detail]
        if manifest.anchor_id != self.anchor_id:
            problems.append(
                f"the manifest names anchor {manifest.anchor_id}, the archive holds {self.anchor_id}"
            )
        for name in sorted(manifest.files.keys() | self.files.keys()):
            if manifest.files.get(name) != self.files.get(name):
                problems.append(
                    f"member {name} is not the one the manifest names (missing, changed or extra)"
                )
        listed = {a.artifact_id: a for a in manifest.artifacts}
        for artifact_id in sorted(listed.keys() ^ self.blob_sizes.keys()):
            problems.append(f"the blob of {artifact_id[:80]} is missing or not in the manifest")
        for artifact_id in sorted(listed.keys() ^ self.facts.keys()):
            problems.append(f"the events of {artifact_id[:80]} are missing or not in the manifest")
        for artifact_id, entry in listed.items():
            proven, events = self.facts.get(artifact_id, (None, entry.events))
            sizes = {entry.size, self.blob_sizes.get(artifact_id, entry.size)} | ({proven} - {None})
            if len(sizes) > 1 or events != entry.events:
                problems.append(f"{artifact_id}: its size or event count is not the manifest's")
        self.manifest = manifest
        self.manifest_sha256 = "sha256:" + hashlib.sha256(self.manifest_raw).hexdigest()
        return problems


def damaged(path: Path, detail: str) -> InvalidInput:
    return InvalidInput("archive-damaged", f"{path}: {detail}; nothing was changed")
