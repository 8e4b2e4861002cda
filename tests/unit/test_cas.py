"""`locker.cas.BlobStore` on real files in a temp folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from locker.cas import BlobStore
from locker.digests import digest_of
from locker.errors import ArtifactNotFound, IntegrityError, InvalidInput, StorageUnavailable

DATA = b"an attestation"
ID = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture(params=[True, False], ids=["syncfs", "fsync-each"])
def blobs(tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    store = BlobStore(tmp_path / "evidence", group_sync=request.param)
    store.ensure()
    return store


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_ensure_creates_the_layout_and_is_idempotent(blobs: BlobStore) -> None:
    blobs.ensure()
    assert blobs.tmp.is_dir()
    assert len(list(blobs.blobs.iterdir())) == 256
    assert blobs.usage() == (0, 0)
    assert list(blobs.iter_ids()) == []


def test_put_then_read_and_verify(blobs: BlobStore) -> None:
    blobs.put(ID, DATA)
    path = blobs.path(ID)
    assert path == blobs.blobs / ID[7:9] / ID[7:]
    assert path.read_bytes() == DATA
    assert blobs.exists(ID)
    assert blobs.read(ID) == DATA
    assert blobs.hash_of(ID) == ID
    blobs.verify(ID)
    assert list(blobs.iter_ids()) == [ID]
    assert blobs.usage() == (1, len(DATA))
    assert blobs.tmp_files() == []


def test_put_of_an_existing_blob_leaves_it_alone(blobs: BlobStore) -> None:
    blobs.put(ID, DATA)
    before = blobs.path(ID).stat()
    blobs.put(ID, DATA)
    after = blobs.path(ID).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_put_many_and_empty_blob(blobs: BlobStore) -> None:
    items = [(digest_of(d), d) for d in (b"", b"one", b"two" * 100_000)]
    blobs.put_many(items)
    for artifact_id, data in items:
        assert blobs.read(artifact_id) == data
        blobs.verify(artifact_id)
    assert sorted(blobs.iter_ids()) == sorted(i for i, _ in items)


def test_large_blob_spanning_chunks(blobs: BlobStore) -> None:
    data = bytes(range(256)) * (5 * 4096 + 3)  # > 1 MiB chunk, not a multiple of it
    blobs.put(digest_of(data), data)
    assert blobs.read(digest_of(data)) == data
    assert blobs.hash_of(digest_of(data)) == digest_of(data)


def test_put_with_the_wrong_digest_keeps_nothing(blobs: BlobStore) -> None:
    wrong = digest_of(b"something else")
    with pytest.raises(IntegrityError) as info:
        blobs.put(wrong, DATA)
    assert info.value.expected == wrong
    assert info.value.actual == ID
    assert list(blobs.tmp.iterdir()) == []
    assert all_files(blobs.blobs) == []
    assert not blobs.exists(wrong)
    assert not blobs.exists(ID)


def test_put_many_keeps_nothing_of_a_batch_with_a_bad_item(blobs: BlobStore) -> None:
    good = (digest_of(b"good"), b"good")
    bad = (digest_of(b"x"), b"y")
    with pytest.raises(IntegrityError):
        blobs.put_many([good, bad])
    assert not blobs.exists(good[0])
    assert not blobs.exists(bad[0])
    assert list(blobs.tmp.iterdir()) == []


def test_verify_detects_a_tampered_blob(blobs: BlobStore) -> None:
    blobs.put(ID, DATA)
    path = blobs.path(ID)
    path.chmod(0o644)
    path.write_bytes(DATA + b"!")
    with pytest.raises(IntegrityError) as info:
        blobs.verify(ID)
    assert info.value.expected == ID
    assert info.value.actual == digest_of(DATA + b"!")
    assert ID in str(info.value)


def test_missing_blob(blobs: BlobStore) -> None:
    missing = digest_of(b"missing")
    assert not blobs.exists(missing)
    with pytest.raises(ArtifactNotFound) as info:
        blobs.read(missing)
    assert info.value.artifact_id == missing
    with pytest.raises(ArtifactNotFound):
        blobs.verify(missing)


def test_clean_tmp_removes_leftovers_only(blobs: BlobStore) -> None:
    blobs.put(ID, DATA)
    (blobs.tmp / "abc.1.tmp").write_bytes(b"partial")
    (blobs.tmp / "def.2.tmp").write_bytes(b"")
    (blobs.tmp / "keep.txt").write_bytes(b"not a leftover")
    assert [p.name for p in blobs.tmp_files()] == ["abc.1.tmp", "def.2.tmp"]
    assert blobs.clean_tmp() == 2
    assert blobs.tmp_files() == []
    assert (blobs.tmp / "keep.txt").exists()
    assert blobs.read(ID) == DATA
    assert blobs.clean_tmp() == 0


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:../../etc/passwd",
        "sha256:" + "a" * 62 + "/.",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "../" + "a" * 64,
        "/etc/passwd",
        "",
        "sha256:" + "a" * 64 + "\n",
    ],
)
def test_path_refuses_malformed_ids(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        blobs.path(bad)
    assert info.value.reason == "invalid-digest"
    with pytest.raises(InvalidInput):
        blobs.put(bad, DATA)
    with pytest.raises(InvalidInput):
        blobs.read(bad)
    assert all_files(blobs.root) == []


def test_put_without_layout_is_storage_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        BlobStore(tmp_path / "never-ensured").put(ID, DATA)


def test_ensure_on_an_unwritable_root_is_storage_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        BlobStore(tmp_path / "file" / "evidence").ensure()


def test_clean_tmp_leaves_the_files_of_live_writers(blobs: BlobStore) -> None:
    """Workers share a store: one starting must not delete what another is writing."""
    blobs.tmp.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(["sleep", "30"])
    try:
        (blobs.tmp / f"{'a' * 64}.{child.pid}-0011.tmp").write_bytes(b"being written")
        (blobs.tmp / f"{'b' * 64}.{os.getpid()}-0022.tmp").write_bytes(b"an earlier process's")
        dead = subprocess.Popen(["true"])
        dead.wait()
        (blobs.tmp / f"{'c' * 64}.{dead.pid}-0033.tmp").write_bytes(b"left by a crash")
        assert blobs.clean_tmp() == 2
        assert [p.name for p in blobs.tmp_files()] == [f"{'a' * 64}.{child.pid}-0011.tmp"]
    finally:
        child.kill()
        child.wait()
    assert blobs.clean_tmp() == 1


def test_clean_tmp_removes_the_files_of_a_zombie_writer(blobs: BlobStore) -> None:
    """A blob writer killed with its worker stays a zombie until reaped: it writes no more."""
    blobs.tmp.mkdir(parents=True, exist_ok=True)
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    try:
        (blobs.tmp / f"{'d' * 64}.{zombie.pid}-0044.tmp").write_bytes(b"cut short")
        assert blobs.clean_tmp() == 1
    finally:
        zombie.wait()
