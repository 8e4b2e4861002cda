"""Point-in-time restores in the index: the pure parts, and `IndexStore` folding `state.restored`
on a real RocksDB. The log here is a list of encoded records, read back by a `LogRange`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locker.events import (
    ArtifactIngested,
    ArtifactMarkedCorrupted,
    ArtifactReplicated,
    Event,
    StateRestored,
    VerificationStarted,
    decode,
    encode,
)
from projections.index import CORRUPTED, INGESTED, Position, VoidedRange, as_of, counts, voided_range
from projections.store import IndexStore

WHEN = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
IDS = ["sha256:" + c * 64 for c in "abcdef"]


def ingest(artifact_id: str) -> ArtifactIngested:
    return ArtifactIngested(artifact_id=artifact_id, size=10, kind="sbom", subjects=(), ingested_at=WHEN)


def corrupt(artifact_id: str) -> ArtifactMarkedCorrupted:
    return ArtifactMarkedCorrupted(artifact_id=artifact_id, reason="bad", marked_at=WHEN)


def restored(partition: int, voided_from: int, restore_id: str = "r1") -> StateRestored:
    return StateRestored(
        restore_id=restore_id, anchor_id="sha256:" + "0" * 64, partition=partition,
        voided_from=voided_from, restored_at=WHEN,
    )  # fmt: skip


class Log:
    """One topic's partitions as lists of record values; `read` is the store's `LogRange`."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[bytes]] = {}

    def append(self, partition: int, event: Event | bytes) -> tuple[int, int, Event | None]:
        records = self.partitions.setdefault(partition, [])
        records.append(event if isinstance(event, bytes) else encode(event))
        return partition, len(records) - 1, None if isinstance(event, bytes) else event

    def read(self, partition: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        records = self.partitions.get(partition, [])
        for offset in range(max(start, 0), min(end, len(records))):
            yield offset, records[offset]


def test_a_restore_voids_from_its_offset_up_to_itself() -> None:
    r = voided_range(restored(2, 5), Position(2, 9))
    assert r is not None and (r.partition, r.start, r.end) == (2, 5, 9)
    assert voided_range(restored(1, 5), Position(2, 9)) is None  # it names another partition
    clamped = voided_range(restored(2, 50), Position(2, 9))
    assert clamped is not None and (clamped.start, clamped.end) == (9, 9)


def test_counts_skips_voided_ranges() -> None:
    r = VoidedRange(restore_id="r", anchor_id="a", partition=0, start=3, end=6, restored_at=WHEN)
    assert [o for o in range(8) if counts(o, [r])] == [0, 1, 2, 6, 7]


def test_as_of_folds_only_the_given_artifacts() -> None:
    a, b = IDS[:2]
    history = [(Position(0, 0), ingest(a)), (Position(0, 1), ingest(b)), (Position(0, 2), corrupt(a))]
    records = as_of({a}, history)
    assert set(records) == {a}
    assert records[a] is not None and records[a].status == CORRUPTED


def test_restore_removes_what_came_after_the_anchor(tmp_path: Path) -> None:
    log = Log()
    a, b, c = IDS[:3]
    with IndexStore(tmp_path / "i") as store:
        store.apply([log.append(0, ingest(a)), log.append(1, ingest(b))], log.read)
        at_anchor = store.checksum()
        later = [
            log.append(0, ingest(c)),  # bad ingest after the anchor
            log.append(0, corrupt(a)),  # a status change after the anchor
            log.append(1, ArtifactReplicated(artifact_id=b, replica="/r", replicated_at=WHEN)),
            log.append(1, b"not an event"),
        ]
        store.apply(later, log.read)
        assert store.count() == 3 and store.get(a).status == CORRUPTED  # type: ignore[union-attr]
        store.apply([log.append(0, restored(0, 1)), log.append(1, restored(1, 1))], log.read)
        assert store.checksum() == at_anchor
        assert store.count() == 2 and store.get(c) is None
        record = store.get(a)
        assert record is not None and record.status == INGESTED
        voided = list(store.voided("r1"))
        assert [(v.partition, v.offset, v.type) for v in voided] == [
            (0, 1, "artifact.ingested"),
            (0, 2, "artifact.marked_corrupted"),
            (1, 1, "artifact.replicated"),
            (1, 2, "not an event"),
        ]
        assert [(r.partition, r.start, r.end) for r in store.voided_ranges()] == [(0, 1, 3), (1, 1, 3)]
        # New events after the restore count again; the same content can be ingested again.
        store.apply([log.append(0, ingest(c))], log.read)
        assert store.get(c) is not None and store.count() == 3


def test_a_restore_is_applied_once(tmp_path: Path) -> None:
    log = Log()
    a, b = IDS[:2]
    with IndexStore(tmp_path / "i") as store:
        batch = [log.append(0, ingest(a)), log.append(0, ingest(b)), log.append(0, restored(0, 1))]
        assert store.apply(batch, log.read) == 3
        assert store.apply(batch, log.read) == 0  # redelivered
        assert store.count() == 1 and len(list(store.voided())) == 1


def test_a_later_restore_does_not_bring_back_what_an_earlier_one_voided(tmp_path: Path) -> None:
    log = Log()
    a, b, c = IDS[:3]
    with IndexStore(tmp_path / "i") as store:
        store.apply([log.append(0, ingest(a)), log.append(0, ingest(b))], log.read)  # 0, 1
        store.apply([log.append(0, restored(0, 1, "r1"))], log.read)  # 2: voids b
        store.apply([log.append(0, ingest(c)), log.append(0, corrupt(a))], log.read)  # 3, 4
        store.apply([log.append(0, restored(0, 3, "r2"))], log.read)  # 5: voids c and the corruption
        assert {i for i in IDS[:3] if store.get(i) is not None} == {a}
        assert store.get(a).status == INGESTED  # type: ignore[union-attr]
        assert [v.offset for v in store.voided("r2")] == [3, 4]


def test_a_restore_needs_the_log(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "i") as store:
        try:
            store.apply([(0, 0, restored(0, 0))])
        except TypeError as error:
            assert "needs the log" in str(error)
        else:
            raise AssertionError("a restore without a log reader was applied")


EVENTS = st.lists(
    st.tuples(
        st.integers(0, 1),  # partition
        st.sampled_from(["ingest", "corrupt", "run", "restore"]),
        st.integers(0, 3),  # artifact, or how far back a restore goes
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EVENTS, st.integers(1, 7))
def test_a_rebuild_gives_what_the_live_fold_gave(tmp_path_factory, steps, batch_size) -> None:  # type: ignore[no-untyped-def]
    """Whatever the events and the batching, folding the log record by record (the live
    projection) or in batches of another size, partition by partition (a rebuild), ends in the
    same index."""
    log = Log()
    folder = tmp_path_factory.mktemp("fold")
    with IndexStore(folder / "live") as live:
        for n, (restore_partition, what, k) in enumerate(steps):
            # An artifact's events are on its key's partition; a restore's on each partition.
            partition = restore_partition if what in ("run", "restore") else k % 2
            offset = len(log.partitions.get(partition, []))
            event: Event
            if what == "ingest":
                event = ingest(IDS[k])
            elif what == "corrupt":
                event = corrupt(IDS[k])
            elif what == "run":
                event = VerificationStarted(run_id=f"run-{n}", mode="full", planned=0, started_at=WHEN)
            else:
                event = restored(partition, max(offset - k, 0), f"r{n}")
            live.apply([log.append(partition, event)], log.read)
        checksum = live.checksum()
    with IndexStore(folder / "rebuilt") as rebuilt:
        records = [(p, o, v) for p, values in sorted(log.partitions.items()) for o, v in enumerate(values)]
        batch: list[tuple[int, int, Event | None]] = []
        for p, o, v in records:
            batch.append((p, o, decode(v)))
            if len(batch) >= batch_size:
                rebuilt.apply(batch, log.read)
                batch = []
        rebuilt.apply(batch, log.read)
        assert rebuilt.checksum() == checksum
