"""`locker.events.codec`: the canonical encoder and the upcasting decoder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from locker.errors import InvalidInput
from locker.events import (
    EVENT_TYPES,
    KINDS,
    ArtifactIngested,
    ArtifactResubmitted,
    Event,
    IngestRejected,
    decode,
    encode,
)
from locker.events.codec import CURRENT_VERSION, UPCASTERS

digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)
texts = st.text(max_size=40)
utc_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-1, max_value=2**62)

ingested = st.builds(
    ArtifactIngested,
    artifact_id=digests,
    size=st.integers(min_value=0, max_value=2**53),
    kind=st.sampled_from(KINDS),
    subjects=st.lists(digests, max_size=4).map(tuple),
    producer=texts,
    media_type=texts,
    ingested_at=utc_datetimes,
    correlation_id=texts,
)
resubmitted = st.builds(
    ArtifactResubmitted,
    artifact_id=digests,
    producer=texts,
    submitted_at=utc_datetimes,
    correlation_id=texts,
)
rejected = st.builds(
    IngestRejected,
    reason=st.sampled_from(
        ["undecodable", "unknown-type", "schema-invalid", "too-large", "invalid-digest", "digest-mismatch"]
    ),
    detail=texts,
    claimed_digest=st.one_of(st.just(""), digests),
    source_topic=texts,
    source_partition=st.integers(min_value=-1, max_value=1000),
    source_offset=offsets,
    rejected_at=utc_datetimes,
    correlation_id=texts,
)
events = st.one_of(ingested, resubmitted, rejected)

WHEN = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
RESUBMITTED = ArtifactResubmitted(artifact_id="sha256:" + "a" * 64, producer="ci", submitted_at=WHEN)


def tag_of(event_type: type) -> str:
    return event_type.__struct_config__.tag  # type: ignore[attr-defined, no-any-return]


@given(events)
def test_round_trip(event: Event) -> None:
    decoded = decode(encode(event))
    assert decoded == event
    assert type(decoded) is type(event)


@given(events)
def test_encoding_is_deterministic(event: Event) -> None:
    first = encode(event)
    assert encode(event) == first
    # An equal event built independently (a copy through the decoder) encodes to the same bytes.
    assert encode(decode(first)) == first
    assert encode(msgspec.structs.replace(event)) == first


@given(events)
def test_encoding_is_compact_json_with_the_type_tag(event: Event) -> None:
    raw = encode(event)
    payload = json.loads(raw)
    assert payload["type"] == tag_of(type(event))
    assert payload["schema_version"] == 1
    assert raw == msgspec.json.encode(payload)  # compact: no whitespace between tokens
    assert list(payload) == sorted(payload)  # keys in sorted order


@given(events)
def test_datetimes_are_encoded_in_utc_with_z(event: Event) -> None:
    payload = json.loads(encode(event))
    stamp = next(v for k, v in payload.items() if k.endswith("_at"))
    assert stamp.endswith("Z")


def test_non_utc_offsets_are_preserved_not_normalised() -> None:
    paris = timezone(timedelta(hours=2))
    event = msgspec.structs.replace(RESUBMITTED, submitted_at=WHEN.astimezone(paris))
    decoded = decode(encode(event))
    assert decoded == event  # same instant
    assert b"+02:00" in encode(event)


@given(events)
def test_keys_are_sorted(event: Event) -> None:
    payload = json.loads(encode(event))
    assert list(payload) == sorted(payload)


def test_every_event_type_has_a_current_version() -> None:
    assert {tag_of(t) for t in EVENT_TYPES} == set(CURRENT_VERSION)
    # A type's current version is what it writes, and every older one has an upcast step.
    for event_type in EVENT_TYPES:
        version = CURRENT_VERSION[tag_of(event_type)]
        assert event_type.__struct_defaults__[-1] == version  # schema_version, the last field
        assert all((tag_of(event_type), v) in UPCASTERS for v in range(1, version))


@pytest.mark.parametrize("raw", [b"", b"\xff", b"{", b'{"type": "artifact.resubmitted"', b"nul"])
def test_undecodable(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(raw)
    assert info.value.reason == "undecodable"


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "artifact.deleted", "artifact_id": "x"},
        {"type": "ArtifactIngested", "artifact_id": "x"},
        {"type": 7},
        {"type": None},
        {"artifact_id": "sha256:" + "a" * 64},
    ],
)
def test_unknown_type(payload: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps(payload).encode())
    assert info.value.reason == "unknown-type"


def _resubmitted_payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = json.loads(encode(RESUBMITTED))
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"artifact.ingested"',
        b"42",
        json.dumps(_resubmitted_payload(artifact_id=5)).encode(),
        json.dumps(_resubmitted_payload(submitted_at="yesterday")).encode(),
        json.dumps({k: v for k, v in _resubmitted_payload().items() if k != "artifact_id"}).encode(),
        json.dumps(
            {"type": "artifact.ingested", "artifact_id": "x", "size": 1, "kind": "bogus", "ingested_at": "x"}
        ).encode(),
        json.dumps(_resubmitted_payload(schema_version="1")).encode(),
    ],
    ids=[
        "array",
        "string",
        "number",
        "wrong-id-type",
        "bad-datetime",
        "missing-field",
        "bad-kind",
        "str-ver",
    ],
)
def test_schema_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(raw)
    assert info.value.reason == "schema-invalid"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_future_schema_version_is_rejected(event_type: type) -> None:
    payload = {"type": tag_of(event_type), "schema_version": CURRENT_VERSION[tag_of(event_type)] + 1}
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps(payload).encode())
    assert info.value.reason == "schema-invalid"
    assert "schema_version" in info.value.detail


def test_future_schema_version_of_an_otherwise_valid_event_is_rejected() -> None:
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps(_resubmitted_payload(schema_version=2)).encode())
    assert info.value.reason == "schema-invalid"


@given(events, st.dictionaries(st.text(min_size=1).map(lambda k: "x_" + k), st.integers(), max_size=3))
def test_unknown_extra_fields_are_tolerated(event: Event, extra: dict[str, int]) -> None:
    payload = json.loads(encode(event))
    payload.update(extra)
    assert decode(json.dumps(payload).encode()) == event


def test_missing_schema_version_defaults_to_current() -> None:
    payload = _resubmitted_payload()
    del payload["schema_version"]
    assert decode(json.dumps(payload).encode()) == RESUBMITTED


@pytest.mark.parametrize("version", [0, -3])
def test_schema_version_below_one_is_schema_invalid(version: int) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps(_resubmitted_payload(schema_version=version)).encode())
    assert info.value.reason == "schema-invalid"


@pytest.mark.parametrize("tag", [["artifact.ingested"], {"a": 1}])
def test_unhashable_type_tag_is_unknown_type(tag: object) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps({"type": tag}).encode())
    assert info.value.reason == "unknown-type"
