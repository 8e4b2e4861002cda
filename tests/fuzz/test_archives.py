"""Fuzzing the readers of whole files: archives (`commands.archive_read.read_archive`, what
`stella evidence recover --source archive` and `archive` itself read) and evidence packs
(`commands.offline.verify` and `replay`, `stella evidence verify --offline` and `stella replay`),
from a valid file changed at every level (`tests/fuzz/tars.py`): members dropped, repeated,
moved, renamed out of the folder, made links or devices, claiming sizes up to 1 TB; their contents
mutated as JSON or bytes, the manifest signed again; header fields, tar blocks and the compressed
stream damaged.

Properties: the reader gives its answer or its documented refusal (`InvalidInput` with reason
`archive-damaged` or `pack-unverified`), nothing else; it succeeds only for a file that still
holds the original contents (or, when the manifest was signed again, contents consistent with
it); it writes nothing but the verdict `replay` is asked for; it uses bounded CPU and memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from commands import offline
from commands.archive_read import Contents, read_archive
from locker import archives
from locker.errors import InvalidInput
from tests.fuzz import samples
from tests.fuzz.conftest import bounded, fuzz_settings, peak_memory
from tests.fuzz.tars import ESCAPED, Entry, Form, Mutant, assemble, compress, tar_mutants

pytestmark = pytest.mark.fuzz

MEMORY = 64 << 20  # bytes: the inputs are a few kB; 1 MiB read buffers are the most a reader needs
ALL = frozenset(samples.BLOB_OF)


@contextlib.contextmanager
def sandbox(tmp_path: Path) -> Iterator[Path]:
    """An empty working folder, the current one while the block runs; afterwards nothing but
    what the block says it wrote may be in `tmp_path`, and nothing at `ESCAPED`."""
    work = tmp_path / "work"
    for child in tmp_path.iterdir():  # what the example before left
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    work.mkdir()
    before = Path.cwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(before)
    assert not ESCAPED.exists()


def written(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}


def read(path: Path) -> Contents | None:
    """The archive's contents, or None if it was refused as damaged."""
    try:
        return read_archive(path, samples.KEY.verifier, max_blob=1 << 20, prove_all=True, wanted=ALL)
    except InvalidInput as error:
        assert error.reason == "archive-damaged", error
        return None


def test_the_seeds_read(tmp_path: Path) -> None:
    for how in ["none", "zstd", "gzip"]:
        data, _ = assemble([Entry(n, d) for n, d in samples.ARCHIVE_MEMBERS])
        (tmp_path / "a").write_bytes(compress(data, how))
        contents = read(tmp_path / "a")
        assert contents is not None and contents.blobs == samples.BLOB_OF
    pack = tmp_path / "pack.tar.gz"
    archives.write_tar_gz(pack, samples.PACK_MEMBERS, mtime=0, what="pack")  # as `export` writes it
    report = offline.verify(pack)
    assert report.verified, [i for i in report.items if not i.ok]
    assert {i.item for i in report.items if i.item.startswith("signature")} == {
        f"signature of {samples.IDS['attestation']}"
    }
    assert offline.replay(pack, tmp_path / "verdict.json").verdict == "pass"


def replaced(members: list[tuple[str, bytes]], name: str, data: bytes, how: str) -> Mutant:
    """The file of `members` with member `name`'s bytes replaced, unsigned again."""
    entries = [Entry(n, data if n == name else d) for n, d in members]
    return Mutant(compress(assemble(entries)[0], how), steps=[f"{name} replaced"])


def bad_first_header(members: list[tuple[str, bytes]], padding: int) -> Mutant:
    """The uncompressed file of `members` and a member of `padding` bytes, its first byte changed
    (the first header's checksum fails)."""
    data = assemble([*(Entry(n, d) for n, d in members), Entry("padding", bytes(padding))])[0]
    return Mutant(b"`" + data[1:], steps=["first byte changed"])


DEEP = b"[" * 100_000 + b"]" * 100_000
# A public key of a type OpenSSL does not know (OID 1.3.101.127), as PEM.
UNKNOWN_KEY = b"\n".join(
    [
        b"-----BEGIN PUBLIC KEY-----",
        base64.b64encode(bytes.fromhex("302a300506032b657f032100") + bytes(32)),
        b"-----END PUBLIC KEY-----",
        b"",
    ]
)


@fuzz_settings(800)
@given(mutant=tar_mutants(samples.ARCHIVE_MEMBERS, samples.KEY, ["none", "none", "zstd", "gzip"]))
# Regressions: JSON nested too deep in the anchor document (json.loads) and in an events line
# (msgspec) raised RecursionError out of the reader.
@example(mutant=replaced(samples.ARCHIVE_MEMBERS, archives.ANCHOR, DEEP, "none"))
@example(mutant=replaced(samples.ARCHIVE_MEMBERS, archives.events_member(0), samples.LINES + DEEP, "zstd"))
def test_mutated_archives_are_read_or_refused(tmp_path: Path, mutant: Mutant) -> None:
    with sandbox(tmp_path) as work:
        path = work / "archive.tar"
        path.write_bytes(mutant.data)
        with bounded(), peak_memory() as peak:
            contents = read(path)
    assert peak.bytes < MEMORY, f"{peak.bytes} bytes held"
    assert written(tmp_path) == {"work", "work/archive.tar"}
    if contents is None:
        return
    assert contents.sha256 == "sha256:" + hashlib.sha256(mutant.data).hexdigest()
    if not mutant.resealed:  # signed by the key: the very contents it signed
        assert contents.manifest == samples.ARCHIVE_MANIFEST
        assert contents.blobs == samples.BLOB_OF and contents.histories == samples.HISTORIES
    assert contents.manifest.anchor_id == contents.anchor_id
    assert all("sha256:" + hashlib.sha256(blob).hexdigest() == i for i, blob in contents.blobs.items())


def verify(path: Path, trusted_key: str | None) -> offline.OfflineReport | None:
    try:
        return offline.verify(path, trusted_key)
    except InvalidInput as error:  # trust material in the pack that cannot be used
        assert error.reason == "pack-unverified", error
        return None


def replay(path: Path, output: Path, trusted_key: str | None) -> offline.ReplayResult | None:
    try:
        return offline.replay(path, output, trusted_key)
    except InvalidInput as error:
        assert error.reason == "pack-unverified", error
        return None


@fuzz_settings(600)
@given(
    mutant=tar_mutants(samples.PACK_MEMBERS, samples.KEY, ["gzip", "gzip", "none", "zstd"]),
    given_key=st.booleans(),
)
@example(mutant=replaced(samples.PACK_MEMBERS, archives.ANCHOR, DEEP, "gzip"), given_key=False)
# Regression: a pack of more than 1 MiB (the read buffer) refused at its first header reported the
# SHA-256 of the part read as the file's.
@example(mutant=bad_first_header(samples.PACK_MEMBERS, 2 << 20), given_key=False)
# Regression: the pack's trust key of an unknown type raised UnsupportedAlgorithm out of `verify`.
@example(mutant=replaced(samples.PACK_MEMBERS, "trust/evidence.pem", UNKNOWN_KEY, "gzip"), given_key=False)
@example(mutant=replaced(samples.PACK_MEMBERS, archives.events_member(0), DEEP, "gzip"), given_key=True)
def test_mutated_packs_are_verified_replayed_or_refused(
    tmp_path: Path, mutant: Mutant, given_key: bool
) -> None:
    # `--trusted-key`, or the key the pack names (whoever made the pack may hold it: `resealed`).
    trusted_key = samples.KEY.verifier.vkey if given_key else None
    with sandbox(tmp_path) as work:
        path = work / "pack.tar.gz"
        path.write_bytes(mutant.data)
        with bounded(), peak_memory() as peak:
            report = verify(path, trusted_key)
            result = replay(path, work / "verdict.json", trusted_key)
    assert peak.bytes < MEMORY, f"{peak.bytes} bytes held"
    assert written(tmp_path) == {"work", "work/pack.tar.gz"} | ({"work/verdict.json"} if result else set())
    if report is not None:
        assert report.verified == (report.failures == 0) and report.sha256.endswith(
            hashlib.sha256(mutant.data).hexdigest()
        )
    if report is not None and report.verified and not mutant.resealed:
        assert (report.artifacts, report.blobs, report.subject) == (2, 2, samples.SUBJECT)
    if result is not None and not mutant.resealed:
        assert report is not None and report.verified and result.artifacts == 2


# What a member claims, with 1 kB of it there: 1 TB, beyond every limit; 1 GiB - 1, within a
# pack's limits of a blob and a manifest (`commands.offline.MAX_BLOB`, `archive_read.LIMITS`).
CLAIMS = [1 << 40, (1 << 30) - 1]


@pytest.mark.parametrize(
    "name",
    [
        archives.blob_member(samples.IDS["sbom"]),
        archives.events_member(0),
        archives.MANIFEST,
        archives.ANCHOR,
        archives.SIGNATURE,
        "trust/evidence.pem",
    ],
)
@pytest.mark.parametrize("form", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("claim", CLAIMS)
def test_a_member_claiming_more_than_there_is_is_refused_without_holding_the_claim(
    tmp_path: Path, name: str, form: Form, claim: int
) -> None:
    def claiming(members: list[tuple[str, bytes]]) -> bytes:
        """The members, the one named last and cut short, its header claiming `claim` bytes."""
        entries = [Entry(n, d) for n, d in members if n != name]
        return assemble([*entries, Entry(name, b"x" * 1024, size=claim)], form, end=False)[0]

    for how in ["none", "gzip", "zstd"]:
        archive, pack = tmp_path / f"archive.{how}", tmp_path / f"pack.{how}"
        archive.write_bytes(compress(claiming(samples.ARCHIVE_MEMBERS), how))
        pack.write_bytes(compress(claiming(samples.PACK_MEMBERS), how))
        with bounded(), peak_memory() as peak:
            assert read(archive) is None
            report = verify(pack, None)
        assert report is not None and not report.verified
        assert peak.bytes < MEMORY, f"{peak.bytes} bytes held for {name} ({how})"
