"""Bad input goes to the dead-letter topic with a reason; the service keeps going."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from commands import service
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArtifactIngested, IngestRejected
from streams.topics import Topics
from tests.integration.helpers import (
    assert_trees_match_the_log,
    dead_letters,
    events,
    index_count,
    produce,
    submission,
    wait_for,
)

LIMIT = 4096


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_SUBMISSIONS: list[tuple[str, bytes | None, bytes]] = [
    ("undecodable", None, b"\xff\xfe{ not json"),
    ("unknown-type", None, raw({"type": "artifact-ref", "url": "s3://x"})),
    ("schema-invalid", None, raw({"type": "artifact", "content": b64(b"x"), "kind": "banana"})),
    ("schema-invalid", None, raw({"type": "artifact", "content": b64(b"x"), "surprise": 1})),
    ("too-large", None, raw({"type": "artifact", "content": b64(b"x" * (LIMIT + 1))})),
    (
        "digest-mismatch",
        None,
        raw({"type": "artifact", "content": b64(b"real"), "digest": digest_of(b"claimed")}),
    ),
    (
        "invalid-digest",
        None,
        raw({"type": "artifact", "content": b64(b"p"), "digest": "sha256:../../../etc/passwd"}),
    ),
    ("key-mismatch", b"../../etc/passwd", raw({"type": "artifact", "content": b64(b"k")})),
]


@pytest.fixture
def small_limit(locker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLA_INGEST__MAXCONTENTBYTES", str(LIMIT))


def test_every_bad_input_is_dead_lettered_and_the_service_goes_on(
    small_limit: None, running: Settings
) -> None:
    topics = Topics(running.topic_prefix)
    asyncio.run(produce(running, topics.submissions, [(k, v) for _, k, v in BAD_SUBMISSIONS]))
    asyncio.run(
        produce(
            running,
            topics.events,
            [(b"junk", b"not an event"), (b"junk", raw({"type": "artifact.exploded"}))],
        )
    )
    good = b"a valid attestation after all that"
    asyncio.run(produce(running, topics.submissions, [(digest_of(good).encode(), submission(good))]))

    wait_for(lambda: index_count(running) == 1, what="the valid submission to be indexed")
    assert service.status(running)["healthy"]

    letters = dead_letters(running, len(BAD_SUBMISSIONS) + 2)
    by_source = {(d.source_topic, d.source_offset, d.source_partition): (d, value) for d, value in letters}
    sub_letters = sorted(
        (d for d, _ in by_source.values() if d.source_topic == topics.submissions),
        key=lambda d: (d.source_partition, d.source_offset),
    )
    assert sorted(d.reason for d in sub_letters) == sorted(r for r, _, _ in BAD_SUBMISSIONS)
    assert {value for _, value in by_source.values()} >= {v for _, _, v in BAD_SUBMISSIONS}
    event_letters = [d for d, _ in by_source.values() if d.source_topic == topics.events]
    assert sorted(d.reason for d in event_letters) == ["undecodable", "unknown-type"]
    assert all(d.detail for d, _ in by_source.values())

    facts = events(running, len(BAD_SUBMISSIONS) + 3)
    rejected = [e for e in facts if isinstance(e, IngestRejected)]
    assert sorted(e.reason for e in rejected) == sorted(r for r, _, _ in BAD_SUBMISSIONS)
    assert all(e.source_topic == topics.submissions and e.source_offset >= 0 for e in rejected)
    ingested = [e for e in facts if isinstance(e, ArtifactIngested)]
    assert [e.artifact_id for e in ingested] == [digest_of(good)]

    service.stop(running)
    assert_trees_match_the_log(running)  # junk on the events topic is a leaf like any record

    blobs = BlobStore(running.evidence_path)
    assert list(blobs.iter_ids()) == [digest_of(good)]
    assert blobs.tmp_files() == []
