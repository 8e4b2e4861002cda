"""`projections.index`: the artifact index as a pure fold."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from locker.events import (
    KINDS,
    ArtifactExpired,
    ArtifactHoldReleased,
    ArtifactHoldSet,
    ArtifactIngested,
    ArtifactResubmitted,
    Event,
    IngestRejected,
)
from projections.index import (
    ARTIFACT,
    KIND,
    SUBJECT,
    ArtifactRecord,
    Position,
    apply,
    artifact_of,
    decode_record,
    fold,
    rows,
)
from projections.tracking import position_key

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
A = "sha256:" + "a" * 64
S1 = "sha256:" + "1" * 64
S2 = "sha256:" + "2" * 64


def ingest(artifact_id: str = A, **changes: object) -> ArtifactIngested:
    fields: dict[str, object] = {
        "artifact_id": artifact_id,
        "size": 3,
        "kind": "sbom",
        "subjects": (S2, S1, S2),
        "producer": "ci",
        "media_type": "application/json",
        "ingested_at": WHEN,
    }
    fields.update(changes)
    return ArtifactIngested(**fields)  # type: ignore[arg-type]


def test_apply_ingest_on_empty_builds_the_record() -> None:
    record = apply(ingest(), None, Position(2, 17))
    assert record == ArtifactRecord(
        artifact_id=A,
        size=3,
        kind="sbom",
        subjects=(S1, S2),  # sorted and deduplicated
        producer="ci",
        media_type="application/json",
        status="ingested",
        ingested_at=WHEN,
        partition=2,
        offset=17,
    )


def test_apply_ingest_first_write_wins() -> None:
    first = apply(ingest(), None, Position(0, 1))
    assert first is not None
    again = apply(ingest(size=99, kind="vex", subjects=(), producer="other"), first, Position(0, 5))
    assert again is first


def test_other_events_leave_the_record_unchanged() -> None:
    record = apply(ingest(), None, Position(0, 1))
    others: list[Event] = [
        ArtifactResubmitted(artifact_id=A, producer="x", submitted_at=WHEN),
        IngestRejected(reason="too-large", detail="d", claimed_digest=A, rejected_at=WHEN),
    ]
    for event in others:
        assert apply(event, record, Position(0, 9)) is record
        assert apply(event, None, Position(0, 9)) is None
        assert artifact_of(event) is None
    assert artifact_of(ingest()) == A


def test_rows_layout() -> None:
    record = apply(ingest(), None, Position(1, 4))
    assert record is not None
    layout = rows(record)
    ident = A.encode()
    assert set(layout) == {
        ARTIFACT + ident,
        SUBJECT + S1.encode() + b"/" + ident,
        SUBJECT + S2.encode() + b"/" + ident,
        KIND + b"sbom/" + ident,
    }
    assert decode_record(layout[ARTIFACT + ident]) == record
    assert all(v == b"" for k, v in layout.items() if k != ARTIFACT + ident)


def test_rows_without_subjects() -> None:
    record = apply(ingest(subjects=(), kind="other"), None, Position(0, 0))
    assert record is not None
    assert set(rows(record)) == {ARTIFACT + A.encode(), KIND + b"other/" + A.encode()}


def test_position_key_sorts_numerically() -> None:
    keys = [position_key(p) for p in (0, 2, 10, 99, 100)]
    assert keys == sorted(keys)
    assert position_key(7) == b"~pos/00007"


def test_public_view() -> None:
    record = apply(ingest(), None, Position(0, 0))
    assert record is not None
    view = record.public()
    assert view["artifact_id"] == view["digest"] == A
    assert view["subjects"] == [S1, S2]
    assert view["ingested_at"] == "2024-01-02T03:04:05Z"


# Property tests.
ids = st.sampled_from(["sha256:" + c * 64 for c in "0123456789"])
subject_ids = st.sampled_from(["sha256:" + c * 64 for c in "abcdef"])
ingests = st.builds(
    ArtifactIngested,
    artifact_id=ids,
    size=st.integers(min_value=0, max_value=10**9),
    kind=st.sampled_from(KINDS),
    subjects=st.lists(subject_ids, max_size=3).map(tuple),
    producer=st.text(max_size=5),
    media_type=st.just(""),
    ingested_at=st.datetimes(timezones=st.just(UTC)),
)
others = st.one_of(
    st.builds(ArtifactResubmitted, artifact_id=ids, submitted_at=st.just(WHEN)),
    st.builds(IngestRejected, reason=st.just("too-large"), detail=st.just(""), rejected_at=st.just(WHEN)),
)
positions = st.builds(Position, st.integers(0, 3), st.integers(0, 10**6))
histories = st.lists(st.tuples(positions, st.one_of(ingests, others)), max_size=30)


def first_occurrences(history: list[tuple[Position, Event]]) -> list[tuple[Position, Event]]:
    seen: set[str] = set()
    kept = []
    for position, event in history:
        artifact_id = artifact_of(event)
        if artifact_id is None or artifact_id in seen:
            continue
        seen.add(artifact_id)
        kept.append((position, event))
    return kept


@given(histories)
def test_fold_is_deterministic(history: list[tuple[Position, Event]]) -> None:
    assert fold(history) == fold(list(history))
    assert fold(iter(history)) == fold(history)


@given(histories, st.data())
def test_fold_ignores_later_duplicates(history: list[tuple[Position, Event]], data: st.DataObject) -> None:
    """Inserting repeats of an already-seen ingest anywhere after it changes nothing."""
    noisy = list(history)
    seen = [i for i, (_, e) in enumerate(noisy) if isinstance(e, ArtifactIngested)]
    for _ in range(data.draw(st.integers(0, 10)) if seen else 0):
        source = data.draw(st.sampled_from(seen))
        _, event = noisy[source]
        repeat = msgspec.structs.replace(
            event, size=data.draw(st.integers(0, 5)), kind=data.draw(st.sampled_from(KINDS))
        )
        where = data.draw(st.integers(source + 1, len(noisy)))
        noisy.insert(where, (data.draw(positions), repeat))
        seen = [i if i < where else i + 1 for i in seen]
    assert fold(noisy) == fold(first_occurrences(history)) == fold(history)


@given(histories)
def test_fold_of_duplicated_list_equals_fold_of_first_occurrences(
    history: list[tuple[Position, Event]],
) -> None:
    doubled = history + history[::-1] + history
    assert fold(doubled) == fold(first_occurrences(history))


@given(histories, st.randoms(use_true_random=False))
def test_fold_only_depends_on_first_occurrence_per_artifact(
    history: list[tuple[Position, Event]], rng: random.Random
) -> None:
    """Shuffling everything except each artifact's first ingest (kept first) gives the same index."""
    seen: set[str] = set()
    firsts, rest = [], []
    for position, event in history:
        artifact_id = artifact_of(event)
        if artifact_id is not None and artifact_id not in seen:
            seen.add(artifact_id)
            firsts.append((position, event))
        else:
            rest.append((position, event))
    rng.shuffle(rest)
    assert fold(firsts + rest) == fold(history)


@given(histories)
def test_fold_keys_and_records(history: list[tuple[Position, Event]]) -> None:
    index = fold(history)
    assert set(index) == {e.artifact_id for _, e in history if isinstance(e, ArtifactIngested)}
    for position, event in first_occurrences(history):
        record = index[event.artifact_id]  # type: ignore[union-attr]
        assert (record.partition, record.offset) == (position.partition, position.offset)
        assert record.subjects == tuple(sorted(set(event.subjects)))  # type: ignore[union-attr]


def test_a_legal_hold_is_set_and_released_on_the_record() -> None:
    record = apply(ingest(), None, Position(0, 0))
    held = apply(
        ArtifactHoldSet(artifact_id=A, reason="case 7", set_at=WHEN, correlation_id="c1"),
        record,
        Position(0, 1),
    )
    assert held is not None and (held.hold, held.held_since, held.changed_by) == ("case 7", WHEN, "c1")
    assert held.public()["hold"] == {"reason": "case 7", "since": "2024-01-02T03:04:05Z"}
    released = apply(
        ArtifactHoldReleased(artifact_id=A, reason="closed", released_at=WHEN), held, Position(0, 2)
    )
    assert released is not None and (released.hold, released.held_since) == ("", None)
    assert rows(released) == rows(record)  # a released hold leaves no trace in the rows
    assert apply(ArtifactHoldSet(artifact_id=A, reason="x", set_at=WHEN), None, Position(0, 3)) is None


def test_an_expiry_marks_the_record_unless_it_is_held_and_a_new_ingest_revives_it() -> None:
    record = apply(ingest(), None, Position(0, 0))
    expiry = ArtifactExpired(artifact_id=A, kind="sbom", size=10, max_age="30d", expired_at=WHEN)
    expired = apply(expiry, record, Position(0, 1))
    assert expired is not None and expired.status == "expired" and "30d" in expired.status_reason
    assert not expired.servable and (expired.partition, expired.offset) == (
        0,
        0,
    )  # its proofs still point at its ingest
    held = apply(ArtifactHoldSet(artifact_id=A, reason="case", set_at=WHEN), record, Position(0, 1))
    assert apply(expiry, held, Position(0, 2)) is held  # a hold wins
    again = apply(ingest(), expired, Position(0, 3))
    assert again is not None and again.status == "ingested" and "again" in again.status_reason
