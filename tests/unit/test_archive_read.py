"""Reading archives back (`commands.archive_read`): a good archive reads; hostile and damaged ones
(links, devices, odd names, duplicates, oversized members, foreign signatures, bad proofs, junk)
are refused with `archive-damaged`, never extracted; a flipped byte anywhere is either refused or
changes the file's digest (which `recover` compares with the one on the log)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands import offline
from commands.archive_read import read_archive, scan
from locker import anchors, archives, merkle, signing
from locker.anchors import PartitionHead, StoredAnchor
from locker.archives import ArchivedArtifact, History, Manifest, ProvedEvent
from locker.errors import InvalidInput
from locker.events import ArtifactIngested, ArtifactReplicated, encode
from locker.merkle import Frontier
from tests.unit.merkle_reference import MemoryNodes

KEY = signing.Signer("stella.test/archives", Ed25519PrivateKey.generate())
ROGUE = signing.Signer("stella.test/archives", Ed25519PrivateKey.generate())
BLOB = os.urandom(1500)
ID = "sha256:" + hashlib.sha256(BLOB).hexdigest()
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _events() -> list[bytes]:
    ingested = ArtifactIngested(
        artifact_id=ID,
        size=len(BLOB),
        kind="sbom",
        subjects=(),
        producer="p",
        media_type="application/json",
        ingested_at=AT,
    )
    replicated = ArtifactReplicated(artifact_id=ID, replica="/replica", replicated_at=AT)
    return [b"not an event: still a leaf", encode(ingested), b"another", encode(replicated)]


LEAVES = _events()


def anchor_record(signer: signing.Signer = KEY) -> bytes:
    root = Frontier().extend(merkle.leaf_hashes(LEAVES))[0].root()
    head = PartitionHead(partition=0, tree_size=len(LEAVES), root=root, last_offset=len(LEAVES) - 1)
    body = anchors.next_body(None, (head,), origin="stella.test/events", created_at=AT, new_chain_id="c1")
    return anchors.encode(anchors.sign(body, signer))


def history(leaf_indices: tuple[int, ...] = (1, 3)) -> History:
    nodes = MemoryNodes(LEAVES)
    return History(
        artifact_id=ID,
        events=tuple(
            ProvedEvent(
                partition=0,
                offset=i,
                leaf_index=i,
                value=LEAVES[i],
                proof=tuple(merkle.inclusion_proof(nodes, i, len(LEAVES))),
            )
            for i in leaf_indices
        ),
    )


Member = tuple[str, bytes]


def good_members(
    *,
    record: bytes | None = None,
    lines: bytes | None = None,
    blob: bytes = BLOB,
    signer: signing.Signer = KEY,
) -> list[Member]:
    record = record or anchor_record()
    stored = StoredAnchor(0, record)
    document = json.dumps(anchors.export_document(stored, anchors.decode(record), KEY.verifier.vkey)).encode()
    lines = lines if lines is not None else archives.encode_lines([history()])
    files = {
        archives.ANCHOR: archives.FileEntry("sha256:" + hashlib.sha256(document).hexdigest(), len(document)),
        archives.events_member(0): archives.FileEntry(
            "sha256:" + hashlib.sha256(lines).hexdigest(), len(lines)
        ),
    }
    artifact = ArchivedArtifact(
        artifact_id=ID, size=len(BLOB), kind="sbom", ingested_at=AT, partition=0, offset=1, events=2
    )
    manifest = archives.encode_manifest(
        Manifest(
            archive_id="ela-test",
            created_at=AT,
            created_by="t",
            older_than="1d",
            cutoff=AT,
            origin="stella.test/events",
            anchor_id=stored.id,
            verifier_key=KEY.verifier.vkey,
            artifacts=(artifact,),
            blob_bytes=len(BLOB),
            files=files,
        )
    )
    return [
        (archives.ANCHOR, document),
        (archives.events_member(0), lines),
        (archives.blob_member(ID), blob),
        (archives.MANIFEST, manifest),
        (archives.SIGNATURE, base64.b64encode(signer.sign(manifest)) + b"\n"),
    ]


def tar_of(members: list[Member], extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read(path: Path, data: bytes, **options: object) -> object:
    path.write_bytes(data)
    return read_archive(path, KEY.verifier, max_blob=8 << 20, wanted=frozenset([ID]), **options)  # type: ignore[arg-type]


def refused(path: Path, data: bytes, **options: object) -> str:
    with pytest.raises(InvalidInput) as caught:
        read(path, data, **options)
    assert caught.value.reason == "archive-damaged"
    return caught.value.detail


def test_a_good_archive_reads_plain_and_compressed(tmp_path: Path) -> None:
    plain = tar_of(good_members())
    for data in (plain, zstandard.ZstdCompressor(write_checksum=True).compress(plain)):
        contents = read(tmp_path / "a", data, prove_all=True)
        assert contents.blobs == {ID: BLOB}  # type: ignore[attr-defined]
        assert [e.offset for e in contents.histories[ID].events] == [1, 3]  # type: ignore[attr-defined]
        assert contents.sha256 == "sha256:" + hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]


def _info(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    "extra",
    [
        _info("blobs/sha256/" + "a" * 64, tarfile.SYMTYPE, linkname="/etc/passwd"),
        _info("blobs/sha256/" + "b" * 64, tarfile.LNKTYPE, linkname="manifest.json"),
        _info("events", tarfile.DIRTYPE),
        _info("dev", tarfile.CHRTYPE, devmajor=1, devminor=3),
        _info("fifo", tarfile.FIFOTYPE),
    ],
    ids=["symlink", "hardlink", "directory", "device", "fifo"],
)
def test_members_that_are_not_plain_files_are_refused(tmp_path: Path, extra: tarfile.TarInfo) -> None:
    before = sorted(tmp_path.rglob("*"))
    assert "not a plain file" in refused(tmp_path / "a", tar_of(good_members(), [extra]))
    assert sorted(tmp_path.rglob("*")) == [*before, tmp_path / "a"]  # nothing was extracted


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../blobs/x", "blobs/sha256/../../x", "README", "blobs/sha256/AB"]
)
def test_names_the_format_does_not_give_are_refused(tmp_path: Path, name: str) -> None:
    assert "not a name the format gives" in refused(tmp_path / "a", tar_of([(name, b"x"), *good_members()]))


def test_duplicates_oversized_members_and_missing_ones_are_refused(tmp_path: Path) -> None:
    members = good_members()
    assert "twice" in refused(tmp_path / "a", tar_of([*members[:3], members[2], *members[3:]]))
    big = [(archives.blob_member("sha256:" + "c" * 64), b"\0" * ((8 << 20) + 1)), *members]
    assert "larger than" in refused(tmp_path / "a", tar_of(big))
    assert "missing" in refused(
        tmp_path / "a", tar_of([m for m in members if m[0] != archives.blob_member(ID)])
    )
    assert "manifest: missing" in refused(tmp_path / "a", tar_of(members[:3]))
    extra = (archives.blob_member("sha256:" + hashlib.sha256(b"x").hexdigest()), b"x")
    assert "not in the manifest" in refused(tmp_path / "a", tar_of([*members, extra]))


def test_foreign_signatures_wrong_bytes_and_bad_proofs_are_refused(tmp_path: Path) -> None:
    assert "does not verify with the trusted key" in refused(
        tmp_path / "a", tar_of(good_members(record=anchor_record(ROGUE)))
    )
    assert "signature does not verify" in refused(tmp_path / "a", tar_of(good_members(signer=ROGUE)))
    assert "does not hash to its id" in refused(tmp_path / "a", tar_of(good_members(blob=BLOB[:-1] + b"?")))
    bad = history()
    forged = ProvedEvent(
        partition=0, offset=1, leaf_index=1, value=LEAVES[1], proof=(b"\0" * 32, *bad.events[0].proof[1:])
    )
    lines = archives.encode_lines([History(artifact_id=ID, events=(forged, bad.events[1]))])
    assert "inclusion proof fails" in refused(
        tmp_path / "a", tar_of(good_members(lines=lines)), prove_all=True
    )
    not_ingest_first = archives.encode_lines([history((3,))])
    assert "not its ingest" in refused(tmp_path / "a", tar_of(good_members(lines=not_ingest_first)))
    foreign = archives.encode_lines([history((0, 1))])
    assert "not an event" in refused(tmp_path / "a", tar_of(good_members(lines=foreign)))


@pytest.mark.parametrize("data", [b"", b"junk" * 300, b"\x28\xb5\x2f\xfd" + os.urandom(200)])
def test_what_is_no_archive_at_all_is_refused(tmp_path: Path, data: bytes) -> None:
    refused(tmp_path / "a", data)


def test_an_archive_cut_short_is_refused(tmp_path: Path) -> None:
    plain = tar_of(good_members())
    refused(tmp_path / "a", plain[: len(plain) // 2])
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(plain)
    refused(tmp_path / "a", packed[:-9])


GOOD = tar_of(good_members())
GOOD_SHA256 = "sha256:" + hashlib.sha256(GOOD).hexdigest()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.integers(0, len(GOOD) - 1), bit=st.integers(0, 7))
def test_a_flipped_bit_anywhere_is_refused_or_changes_the_digest(
    tmp_path: Path, place: int, bit: int
) -> None:
    flipped = bytearray(GOOD)
    flipped[place] ^= 1 << bit
    try:
        contents = read(tmp_path / "a", bytes(flipped))
    except InvalidInput as exc:
        assert exc.reason == "archive-damaged"
    else:
        assert contents.sha256 != GOOD_SHA256  # type: ignore[attr-defined]
        assert contents.blobs == {ID: BLOB}  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_any_bytes_are_read_or_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidInput):
        read(tmp_path / "a", data)


def test_a_stream_of_zeros_after_the_end_and_too_many_bytes_are_refused(tmp_path: Path) -> None:
    bomb = gzip.compress(GOOD + b"\0" * (3 << 20), mtime=0)  # 3 MiB of zeros: ~3 kB of gzip
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(bomb)
    found = scan(path, KEY.verifier, archives.decode_manifest, max_blob=1 << 20)
    assert [str(p) for p in found.problems] == [f"file: more than {1 << 20} bytes after the end of the tar"]
    path.write_bytes(gzip.compress(GOOD, mtime=0))
    assert scan(path, KEY.verifier, archives.decode_manifest, max_blob=1 << 20).problems == []
    capped = scan(path, KEY.verifier, archives.decode_manifest, max_blob=1 << 20, max_total=1000)
    assert [p.item for p in capped.problems] == ["file"] and "more than 1000 bytes" in capped.problems[
        0
    ].detail


def test_an_archive_is_not_an_evidence_pack(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    path.write_bytes(GOOD)
    report = offline.verify(path, KEY.verifier.vkey)
    assert not report.verified
    assert [i.item for i in report.items if not i.ok] == ["manifest"]


def test_lines_and_manifests_that_are_not_utf8_are_refused_not_raised() -> None:
    """msgspec raises UnicodeDecodeError (not its DecodeError) for bad UTF-8 in a string."""
    for decode in (archives.decode_lines, archives.decode_manifest, archives.decode_pack_manifest):
        with pytest.raises(InvalidInput):
            decode(b'{"artifact_id": "\xf3\x28"}')
