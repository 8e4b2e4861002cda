"""The Merkle projection on real RocksDB files: roots, proofs, idempotent replay."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from locker import merkle
from locker.errors import StorageUnavailable, StoreDamaged
from projections.merkle_store import MerkleStore
from tests.unit import merkle_reference as ref

records = st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=12)), min_size=1, max_size=60)


def with_offsets(items: list[tuple[int, bytes]], gap: int = 1) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) with per-partition increasing offsets, `gap` apart."""
    next_offset: dict[int, int] = {}
    out = []
    for partition, value in items:
        offset = next_offset.get(partition, 0)
        next_offset[partition] = offset + gap
        out.append((partition, offset, value))
    return out


@settings(max_examples=30, deadline=None)
@given(records, st.integers(1, 7), st.integers(1, 3))
def test_roots_and_proofs_match_the_reference(items: list[tuple[int, bytes]], chunk: int, gap: int) -> None:
    batch = with_offsets(items, gap)
    with tempfile.TemporaryDirectory() as tmp, MerkleStore(Path(tmp) / "m") as store:
        for start in range(0, len(batch), chunk):
            store.apply(batch[start : start + chunk])
        assert store.apply(batch) == 0  # replaying everything changes nothing
        for partition in {p for p, _, _ in batch}:
            values = [v for p, _, v in batch if p == partition]
            offsets = [o for p, o, _ in batch if p == partition]
            root = ref.mth(values)
            assert store.tree_size(partition) == len(values)
            assert store.root(partition) == root
            for size in range(1, len(values) + 1):
                assert store.root_at(partition, size) == ref.mth(values[:size])
            for index, offset in enumerate(offsets):
                assert store.leaf_index(partition, offset) == index
                proof = store.inclusion_proof(partition, index, len(values))
                merkle.verify_inclusion(index, len(values), merkle.leaf_hash(values[index]), proof, root)
            old = max(1, len(values) // 2)
            proof = store.consistency_proof(partition, old, len(values))
            merkle.verify_consistency(old, len(values), ref.mth(values[:old]), root, proof)


def test_positions_survive_reopening(tmp_path: Path) -> None:
    with MerkleStore(tmp_path / "m") as store:
        store.apply([(0, 0, b"a"), (0, 1, b"b"), (1, 0, b"c")])
    with MerkleStore(tmp_path / "m", readonly=True) as store:
        assert store.applied() == {0: 1, 1: 0}
        assert store.root(0) == ref.mth([b"a", b"b"])
        with pytest.raises(StorageUnavailable):
            store.apply([(0, 2, b"d")])


def test_a_missing_store_reads_as_empty(tmp_path: Path) -> None:
    with MerkleStore(tmp_path / "absent", readonly=True) as store:
        assert store.applied() == {} and store.tree_size(0) == 0 and store.root(0) == merkle.EMPTY_ROOT
    assert not (tmp_path / "absent").exists()


def damage(path: Path, key: bytes, value: bytes | None) -> None:
    """Change one row behind the store's back (`None` deletes it), as a disk or a person might."""
    db = Rdict(str(path), Options(raw_mode=True))
    if value is None:
        db.delete(key)
    else:
        db[key] = value
    db.close()


@pytest.mark.parametrize(
    ("key", "value", "read", "says"),
    [
        (b"n/00000/00/000000000001", None, lambda s: s.inclusion_proof(0, 0, 3), "node 1 at level 0"),
        (b"f/00000", b"\xc1garbled", lambda s: s.tree_size(0), "frontier row of partition 0"),
        (b"l/00000/00000000000000000002", b"two", lambda s: s.leaf_index(0, 2), "leaf row of 0/2"),
        (b"~pos/00000", b"x", lambda s: None, "applied position"),
    ],
)
def test_a_damaged_store_says_so_and_how_to_rebuild_it(
    tmp_path: Path, key: bytes, value: bytes | None, read, says: str
) -> None:
    with MerkleStore(tmp_path / "m") as store:
        store.apply([(0, 0, b"a"), (0, 1, b"b"), (0, 2, b"c")])
    damage(tmp_path / "m", key, value)
    with pytest.raises(StoreDamaged) as caught, MerkleStore(tmp_path / "m", readonly=True) as store:
        read(store)
    message = str(caught.value)
    assert says in message and str(tmp_path / "m") in message and "rebuilds it from the log" in message
    assert caught.value.exit_code == 4
