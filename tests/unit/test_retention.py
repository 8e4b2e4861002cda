"""The retention policy and the choice of what it expires: pure code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from locker.errors import UsageError
from locker.events import ArtifactExpired, ArtifactIngested
from locker.requests import RecordArchive
from locker.retention import Policy
from locker.sizes import parse_age
from projections.archiving import decide
from projections.index import ARCHIVED, INGESTED, ArtifactRecord, Position, apply
from projections.retention import due, summary

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def record(kind: str, age: timedelta, *, hold: str = "", size: int = 10, n: int = 0) -> ArtifactRecord:
    return ArtifactRecord(
        artifact_id="sha256:" + f"{n:064x}",
        size=size,
        kind=kind,
        subjects=(),
        producer="p",
        media_type="",
        status=INGESTED,
        ingested_at=NOW - age,
        partition=0,
        offset=n,
        hold=hold,
    )


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("365d", 365 * DAY),
        ("12h", timedelta(hours=12)),
        ("2w", 14 * DAY),
        ("1y", 365 * DAY),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_ages(text: str, age: timedelta) -> None:
    assert parse_age(text, what="k") == age


@pytest.mark.parametrize("text", ["forever", "Never", "0"])
def test_forever(text: str) -> None:
    assert parse_age(text, what="k") is None


@pytest.mark.parametrize("text", ["", "10", "1 fortnight", "-3d", "d"])
def test_bad_ages_name_the_key(text: str) -> None:
    with pytest.raises(UsageError, match="Retention:sbom"):
        parse_age(text, what="Retention:sbom")


def test_a_kinds_own_age_wins_and_aggressive_caps_every_kind() -> None:
    policy = Policy(default=None, by_kind={"scan": 30 * DAY}, aggressive=7 * DAY)
    assert policy.max_age("scan") == 30 * DAY and policy.max_age("sbom") is None
    assert policy.max_age("scan", aggressive=True) == 7 * DAY
    assert policy.max_age("sbom", aggressive=True) == 7 * DAY
    assert policy.describe(("scan", "sbom")) == {"scan": "30d", "sbom": "forever"}


def test_due_skips_held_expired_and_young_artifacts() -> None:
    policy = Policy(default=10 * DAY, by_kind={}, aggressive=DAY)
    old = record("sbom", 11 * DAY)
    assert due(old, policy, NOW)
    assert not due(record("sbom", 9 * DAY), policy, NOW)
    assert due(record("sbom", 2 * DAY), policy, NOW, aggressive=True)
    assert not due(record("sbom", 99 * DAY, hold="case 7"), policy, NOW, aggressive=True)  # a hold wins
    assert not due(msgspec.structs.replace(old, status="expired"), policy, NOW)


def test_summary_counts_per_kind() -> None:
    found = summary(
        [record("scan", 3 * DAY, size=5, n=1), record("scan", DAY, size=7, n=2), record("vex", 2 * DAY, n=3)]
    )
    assert (found["artifacts"], found["bytes"]) == (3, 22)
    assert found["oldest"] == "2026-11-27T12:00:00Z" and found["newest"] == "2026-11-29T12:00:00Z"
    assert found["by_kind"] == [
        {"kind": "scan", "artifacts": 2, "bytes": 12},
        {"kind": "vex", "artifacts": 1, "bytes": 10},
    ]


def test_archived_artifacts_are_never_due() -> None:
    policy = Policy(default=DAY, by_kind={}, aggressive=DAY)
    assert not due(msgspec.structs.replace(record("sbom", 9 * DAY), status="archived"), policy, NOW)


def archive_command(ids: list[str]) -> RecordArchive:
    return RecordArchive(
        command_id="c1",
        requested_at=NOW,
        archive_id="ela-1",
        location="/archive/a.tar",
        archive_sha256="sha256:" + "7e" * 32,
        anchor_id="sha256:" + "5c" * 32,
        artifact_ids=ids,
        requested_by="ops",
    )


def test_the_service_archives_only_what_is_still_ingested_and_not_held() -> None:
    good, held, corrupted = (
        record("sbom", DAY, n=1),
        record("sbom", DAY, hold="case", n=2),
        record("scan", DAY, n=3),
    )
    corrupted = msgspec.structs.replace(corrupted, status="corrupted")
    records = {r.artifact_id: r for r in (good, held, corrupted)}
    gone = "sha256:" + "f" * 64
    events, done = decide(archive_command([*records, gone, good.artifact_id, "../x"]), records, NOW)
    assert [e.artifact_id for e in events] == [good.artifact_id]  # once, though named twice
    assert events[0].location == "/archive/a.tar" and events[0].correlation_id == "c1"
    assert (done.archived, done.bytes) == (1, good.size)
    assert done.skipped == {
        held.artifact_id: "under legal hold (case)",
        corrupted.artifact_id: "its status is corrupted",
        gone: "not in the index",
        "../x": "not in the index",
    }


def test_the_fold_archives_once_keeps_holds_and_revives_on_ingest() -> None:
    good = record("sbom", DAY, n=1)
    [event], _ = decide(archive_command([good.artifact_id]), {good.artifact_id: good}, NOW)
    at = Position(0, 9)
    archived = apply(event, good, at)
    assert archived is not None and archived.status == ARCHIVED
    assert archived.archive is not None and archived.archive.location == "/archive/a.tar"
    assert apply(event, archived, at) is archived  # a repeated event changes nothing
    held = msgspec.structs.replace(good, hold="case 9")
    assert apply(event, held, at) is held
    expired = ArtifactExpired(
        artifact_id=good.artifact_id, kind="sbom", size=10, max_age="1d", expired_at=NOW
    )
    assert apply(expired, archived, at) is archived  # nothing left here to expire
    again = ArtifactIngested(
        artifact_id=good.artifact_id,
        size=10,
        kind="sbom",
        subjects=(),
        producer="p",
        media_type="",
        ingested_at=NOW,
    )
    revived = apply(again, archived, at)
    assert (
        revived is not None
        and revived.status == INGESTED
        and "after it was archived" in revived.status_reason
    )
