"""`projections.store.IndexStore` on a real RocksDB in a temp folder."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locker.errors import StorageUnavailable
from locker.events import KINDS, ArtifactDescribed, ArtifactIngested, ArtifactResubmitted, IngestRejected
from projections.index import Position, fold
from projections.store import Applied, IndexStore, wipe

WHEN = datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
S = "sha256:" + "5" * 64
EMPTY_CHECKSUM = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def ingest(artifact_id: str, kind: str = "sbom", subjects: tuple[str, ...] = (S,)) -> ArtifactIngested:
    return ArtifactIngested(
        artifact_id=artifact_id,
        size=1,
        kind=kind,
        subjects=subjects,
        ingested_at=WHEN,  # type: ignore[arg-type]
    )


BATCH: list[Applied] = [
    (0, 0, ingest(A)),
    (1, 0, ingest(B, kind="vex", subjects=())),
    (0, 1, ArtifactResubmitted(artifact_id=A, submitted_at=WHEN)),
    (1, 1, IngestRejected(reason="too-large", detail="", rejected_at=WHEN)),
    (0, 2, ingest(A, kind="scan")),
]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with IndexStore(tmp_path / "index") as s:
        yield s


def test_apply_builds_the_index(store: IndexStore) -> None:
    assert store.apply(BATCH) == 5
    assert store.count() == 2
    record = store.get(A)
    assert record is not None
    assert record.kind == "sbom"  # first write wins
    assert (record.partition, record.offset) == (0, 0)
    assert store.by_subject(S) == [A]
    assert store.by_kind("sbom") == [A]
    assert store.by_kind("vex") == [B]
    assert store.by_kind("scan") == []
    assert sorted(r.artifact_id for r in store.records()) == [A, B]
    assert store.get("sha256:" + "0" * 64) is None


def test_applying_the_same_batch_twice_is_a_no_op(store: IndexStore) -> None:
    store.apply(BATCH)
    count, checksum, applied = store.count(), store.checksum(), store.applied()
    assert store.apply(BATCH) == 0
    assert (store.count(), store.checksum(), store.applied()) == (count, checksum, applied)


def test_replaying_a_prefix_is_a_no_op(store: IndexStore) -> None:
    store.apply(BATCH)
    checksum = store.checksum()
    assert store.apply(BATCH[:2]) == 0
    assert store.checksum() == checksum


def test_positions_are_recorded_per_partition(store: IndexStore) -> None:
    store.apply(BATCH)
    assert store.applied() == {0: 2, 1: 1}
    assert store.apply([(7, 40, None), (0, 3, None)]) == 2
    assert store.applied() == {0: 3, 1: 1, 7: 40}


def test_lower_offsets_within_a_batch_are_skipped(store: IndexStore) -> None:
    assert store.apply([(0, 5, ingest(A)), (0, 3, ingest(B))]) == 1
    assert store.applied() == {0: 5}
    assert store.get(B) is None


def test_records_without_an_event_only_advance_the_position(store: IndexStore) -> None:
    before = store.checksum()
    assert store.apply([(3, 10, None)]) == 1
    assert store.applied() == {3: 10}
    assert store.count() == 0
    assert list(store.records()) == []
    assert store.checksum() == before  # positions are bookkeeping, not the index's content
    # The position is really applied: an ingest at or below it is ignored.
    assert store.apply([(3, 10, ingest(A)), (3, 9, ingest(A))]) == 0
    assert store.get(A) is None


def test_empty_batch_writes_nothing(store: IndexStore) -> None:
    assert store.apply([]) == 0
    assert store.checksum() == EMPTY_CHECKSUM


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "index") as s:
        s.apply(BATCH)
        checksum = s.checksum()
    with IndexStore(tmp_path / "index", readonly=True) as ro:
        assert ro.checksum() == checksum
        assert ro.count() == 2
        assert ro.applied() == {0: 2, 1: 1}
        assert ro.get(A) is not None
        with pytest.raises(StorageUnavailable):
            ro.apply([(0, 99, None)])
        assert ro.applied() == {0: 2, 1: 1}


def test_readonly_store_on_a_missing_path_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "here"
    with IndexStore(path, readonly=True) as ro:
        assert ro.count() == 0
        assert ro.applied() == {}
        assert ro.get(A) is None
        assert ro.by_subject(S) == []
        assert ro.by_kind("sbom") == []
        assert list(ro.records()) == []
        assert ro.checksum() == EMPTY_CHECKSUM
        with pytest.raises(StorageUnavailable):
            ro.apply(BATCH)
    assert not path.exists()  # opening read-only created nothing


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "index"), pytest.raises(StorageUnavailable):
        IndexStore(tmp_path / "index")


def test_wipe(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "index") as s:
        s.apply(BATCH)
    wipe(tmp_path / "index")
    with IndexStore(tmp_path / "index") as s:
        assert s.count() == 0
        assert s.checksum() == EMPTY_CHECKSUM


# Property: batching does not matter.
ids = st.sampled_from(["sha256:" + c * 64 for c in "0123456789"])
events = st.one_of(
    st.builds(
        ArtifactIngested,
        artifact_id=ids,
        size=st.integers(0, 1000),
        kind=st.sampled_from(KINDS),
        subjects=st.lists(st.sampled_from([S, A]), max_size=2).map(tuple),
        ingested_at=st.just(WHEN),
    ),
    st.builds(ArtifactResubmitted, artifact_id=ids, submitted_at=st.just(WHEN)),
    st.none(),
)


@st.composite
def logs(draw: st.DrawFn) -> list[Applied]:
    """Records from up to 3 partitions, offsets increasing within each, interleaved."""
    items = draw(st.lists(st.tuples(st.integers(0, 2), events), max_size=25))
    next_offset = {0: 0, 1: 0, 2: 0}
    log: list[Applied] = []
    for partition, event in items:
        next_offset[partition] += draw(st.integers(1, 3))
        log.append((partition, next_offset[partition], event))
    return log


def _apply_in_chunks(path: Path, log: Sequence[Applied], sizes: list[int]) -> tuple[str, int, dict[int, int]]:
    with IndexStore(path) as s:
        start = 0
        for size in sizes:
            s.apply(log[start : start + size])
            start += size
        s.apply(log[start:])
        return s.checksum(), s.count(), s.applied()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.lists(st.integers(1, 5), max_size=25), st.integers(0, 25))
def test_one_batch_or_many_gives_the_same_checksum(log: list[Applied], sizes: list[int], replay: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whole = _apply_in_chunks(root / "whole", log, [])
        chunked = _apply_in_chunks(root / "chunked", log, sizes)
        assert chunked == whole
        # Redelivery of an already-applied prefix changes nothing.
        with IndexStore(root / "whole") as s:
            assert s.apply(log[:replay]) == 0
            assert (s.checksum(), s.count(), s.applied()) == whole
            # The store agrees with the pure fold.
            expected = fold((Position(p, o), e) for p, o, e in log if e is not None)
            assert {r.artifact_id: r for r in s.records()} == expected
            assert s.count() == len(expected)


def test_a_bulk_loaded_store_reopens_as_an_ordinary_one(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "index", bulk=True) as bulk:
        bulk.apply(BATCH)
        expected = bulk.checksum()
    with IndexStore(tmp_path / "index") as store:  # skip-list memtables, concurrent writes allowed
        assert store.checksum() == expected
        assert store.count() == 2
        store.apply([(0, 3, ingest(B))])
        assert store.count() == 2


def test_bulk_and_ordinary_loads_give_identical_stores(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "bulk", bulk=True) as bulk, IndexStore(tmp_path / "plain") as plain:
        for store in (bulk, plain):
            store.apply(BATCH[:2])
            store.apply(BATCH[2:])
        assert bulk.checksum() == plain.checksum()


def test_an_unreadable_row_is_reported_as_a_damaged_store(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    from locker.errors import StoreDamaged

    with IndexStore(tmp_path / "index") as store:
        store.apply(BATCH)
    db = Rdict(str(tmp_path / "index"), Options(raw_mode=True))
    db[b"a/" + A.encode()] = b"{not json"
    db.close()
    with (
        IndexStore(tmp_path / "index", readonly=True) as store,
        pytest.raises(StoreDamaged, match=r"is damaged.*Rebuild it"),
    ):
        store.get(A)


def test_an_expiry_deletes_the_blob_once_and_a_crash_before_it_is_finished(store: IndexStore) -> None:
    from locker.events import ArtifactExpired

    store.apply([(0, 0, ingest(A)), (0, 1, ingest(B))])
    store.apply([(0, 2, ArtifactExpired(artifact_id=A, kind="sbom", size=1, max_age="1d", expired_at=WHEN))])
    assert store.pending_deletions() == [A]  # the crash: the event applied, the blob not deleted yet
    deleted: list[list[str]] = []
    assert store.finish_deletions(deleted.append) == 1
    assert deleted == [[A]] and store.pending_deletions() == []
    assert store.finish_deletions(deleted.append) == 0
    record = store.get(A)
    assert record is not None and record.status == "expired"


def test_a_description_adds_subject_and_dependency_rows_and_a_later_one_replaces_it(
    store: IndexStore,
) -> None:
    artifact = "sha256:" + "a1" * 32
    found, dep, other = "sha256:" + "b2" * 32, "sha256:" + "c3" * 32, "sha256:" + "d4" * 32
    at = datetime(2026, 11, 30, tzinfo=UTC)

    def described(subjects: tuple[str, ...], dependencies: tuple[str, ...]) -> ArtifactDescribed:
        return ArtifactDescribed(
            artifact_id=artifact,
            format="in-toto",
            subjects=subjects,
            dependencies=dependencies,
            described_at=at,
        )

    store.apply([(0, 0, ingest(artifact)), (0, 1, described((found,), (dep,)))])
    record = store.get(artifact)
    assert record is not None and record.format == "in-toto" and record.declared == (S,)
    assert set(record.subjects) == {S, found}
    assert store.by_subject(found) == [artifact] and store.by_subject(S) == [artifact]
    assert store.by_dependency(dep) == [artifact]
    store.apply([(0, 2, described((), (other,)))])  # described again: the producer's subject stays
    assert store.by_subject(found) == [] and store.by_subject(S) == [artifact]
    assert store.by_dependency(dep) == [] and store.by_dependency(other) == [artifact]
    rebuilt = fold([(Position(0, 0), ingest(artifact)), (Position(0, 1), described((found,), (dep,)))])
    assert rebuilt[artifact].dependencies == (dep,)
