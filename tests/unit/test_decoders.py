"""Every decoder of record bytes is total: any input gives a value or `InvalidInput` with a
documented reason, never another exception (STYLE 15; reasons in `locker.decoding`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locker import anchors, events, requests, submissions
from locker.decoding import REASONS, Decoder, shorten
from locker.dlq import DeadLetter
from locker.errors import InvalidInput

CHECK_REASONS = REASONS | {"too-large", "invalid-digest", "digest-mismatch", "key-mismatch"}
TAGS = [
    "artifact",
    "artifact.ingested",
    "artifact.resubmitted",
    "ingest.rejected",
    "anchor.create",
    "anchor.recover",
    "anchor.created",
    "anchor.recovered",
    "artifact.deleted",
]
FIELDS = [
    "type",
    "content",
    "kind",
    "subjects",
    "digest",
    "submission_id",
    "schema_version",
    "artifact_id",
    "size",
    "ingested_at",
    "submitted_at",
    "reason",
    "detail",
    "rejected_at",
    "command_id",
    "requested_at",
    "record",
    "replaces_offset",
    "recovered_at",
    "body",
    "key_name",
    "signature",
    "checkpoints",
    "sequence",
    "partitions",
]
HUGE_NUMBERS = ["1e999", "-1e999", "1" * 400, "-" + "9" * 5000, "1" * 5000 + ".5", "0.1e-99999"]


def check(raw: bytes | None) -> submissions.Accepted:
    return submissions.check(raw, None, max_content_bytes=100)


# Each decoder and the reasons it may give.
DECODERS: dict[str, tuple[Callable[[bytes | None], object], frozenset[str]]] = {
    "submissions.check": (check, CHECK_REASONS),
    "events.decode": (events.decode, REASONS),
    "requests.decode": (requests.decode, REASONS),
    "anchors.decode": (anchors.decode, REASONS),
    "anchors.decode_record": (anchors.decode_record, REASONS),
}


def outcome(name: str, raw: bytes | None) -> str:
    """ "value" or the reason `raw` was refused for; fails the test on any other exception."""
    decode, reasons = DECODERS[name]
    try:
        decode(raw)
    except InvalidInput as error:
        assert error.reason in reasons, error
        assert len(error.detail) <= 200
        return error.reason
    return "value"


def reason_of(name: str, raw: bytes | None) -> str:
    found = outcome(name, raw)
    assert found != "value", f"{name} accepted {raw!r}"
    return found


def best_effort_is_total(raw: bytes | None) -> None:
    assert isinstance(submissions.claimed_digest(raw), str)
    assert isinstance(submissions.correlation_of(raw), str)
    effective, _ = anchors.effective_chain([anchors.StoredAnchor(0, b"" if raw is None else raw)])
    assert len(effective) == 1


# Arbitrary JSON text, built as text so that it can hold what no encoder writes: numbers out of
# range, lone surrogate escapes, repeated keys, and known type tags and field names.
json_scalars = st.one_of(
    st.sampled_from(["null", "true", "false", *HUGE_NUMBERS]),
    st.integers().map(str),
    st.integers(min_value=-(10**450), max_value=10**450).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(TAGS).map(json.dumps),
    st.binary(max_size=12).map(lambda b: json.dumps(base64.b64encode(b).decode())),
    st.just('"\\ud800"'),
)
json_keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)).map(json.dumps)
json_texts = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(json_keys, inner), max_size=5).map(
            lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"
        ),
    ),
    max_leaves=12,
)
# Objects with a type tag and some known fields: these reach the schema checks.
tagged_texts = st.builds(
    lambda tag, kvs: "{" + ",".join([f'"type":{json.dumps(tag)}', *(f"{k}:{v}" for k, v in kvs)]) + "}",
    st.sampled_from(TAGS),
    st.lists(st.tuples(json_keys, json_texts), max_size=6),
)
CLOSERS = {"[": "]", '{"a":': "}"}
deep_texts = st.builds(
    lambda depth, opener, where: where.replace("DEEP", opener * depth + "1" + CLOSERS[opener] * depth),
    st.integers(min_value=500, max_value=5000),
    st.sampled_from(sorted(CLOSERS)),
    st.sampled_from(
        ["DEEP", '{"type":"artifact","content":"","x":DEEP}', '{"x":DEEP,"type":"anchor.create"}']
    ),
)
# Arbitrary JSON values as an encoder writes them (NaN and Infinity included, which are not JSON).
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**450), max_value=10**450),
        st.floats(),
        st.text(max_size=12),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def encoded(value: object, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


any_bytes = st.one_of(
    st.binary(max_size=64),
    st.builds(encoded, json_values, st.booleans()),
    json_texts.map(str.encode),
    tagged_texts.map(str.encode),
    deep_texts.map(str.encode),
    st.none(),
)
modest = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(DECODERS))
@modest
@given(raw=any_bytes)
def test_every_decoder_is_total(name: str, raw: bytes | None) -> None:
    outcome(name, raw)


@modest
@given(raw=any_bytes)
def test_best_effort_readers_never_fail(raw: bytes | None) -> None:
    best_effort_is_total(raw)


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=60, deadline=None)
@given(raw=st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_are_refused(name: str, raw: bytes) -> None:
    """Random bytes are (almost) never valid JSON; when they are not, the reason says so."""
    try:
        raw.decode("utf-8")
        json.loads(raw)
    except ValueError:
        assert outcome(name, raw) == "undecodable"


# Regressions: each of these once raised something other than InvalidInput, or gave a wrong reason.
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECTS = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize(("raw", "expected"), [(None, "undecodable"), (b"", "undecodable")])
def test_null_and_empty_values_are_undecodable(name: str, raw: bytes | None, expected: str) -> None:
    assert reason_of(name, raw) == expected
    best_effort_is_total(raw)


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("raw", [DEEP, DEEP_OBJECTS, b'{"type":"x","y":' + DEEP + b"}"])
def test_deep_nesting_is_undecodable(name: str, raw: bytes) -> None:
    assert reason_of(name, raw) == "undecodable"
    best_effort_is_total(raw)


def test_the_reported_deep_submission() -> None:
    raw = b'{"type":"artifact","content":"","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    # Too deep for the interpreter here; were 1000 levels allowed, "x" is an unknown field.
    assert reason_of("submissions.check", raw) in {"undecodable", "schema-invalid"}
    assert reason_of("events.decode", b"[" * 100_000) == "undecodable"


def test_deep_nesting_after_an_early_schema_error_is_still_undecodable() -> None:
    raw = b'{"type":"artifact","content":5,"x":' + DEEP + b"}"
    assert reason_of("submissions.check", raw) == "undecodable"


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize(
    "raw",
    [b"\xff", b'{"type":"artifact","producer":"\xc3\x28"}', b'{"x":"\xed\xa0\x80","type":"anchor.create"}'],
)
def test_invalid_utf8_is_undecodable(name: str, raw: bytes) -> None:
    assert reason_of(name, raw) == "undecodable"


RESUBMITTED = {
    "type": "artifact.resubmitted",
    "artifact_id": "sha256:" + "a" * 64,
    "submitted_at": "2025-01-01T00:00:00Z",
}


def with_field(payload: dict[str, object], name: str, literal: str) -> bytes:
    """`payload` as JSON with field `name` set to the JSON text `literal`."""
    rest = json.dumps({k: v for k, v in payload.items() if k != name})
    return f'{rest[:-1]}, "{name}": {literal}}}'.encode()


def test_invalid_utf8_in_an_ignored_event_field_is_undecodable() -> None:
    raw = with_field(RESUBMITTED, "x", '"ok"').replace(b"ok", b"\xff")
    assert reason_of("events.decode", raw) == "undecodable"


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1" * 5000])
def test_a_number_out_of_range_in_a_field_is_schema_invalid(number: str) -> None:
    assert reason_of("events.decode", with_field(RESUBMITTED, "schema_version", number)) == "schema-invalid"
    assert reason_of("events.decode", with_field(RESUBMITTED, "artifact_id", number)) == "schema-invalid"
    submission = {"type": "artifact", "content": ""}
    assert (
        reason_of("submissions.check", with_field(submission, "schema_version", number)) == "schema-invalid"
    )


def test_a_huge_integer_is_read_as_the_number_it_is() -> None:
    with pytest.raises(InvalidInput) as info:
        events.decode(with_field(RESUBMITTED, "schema_version", str(10**400)))
    assert info.value.reason == "schema-invalid" and "unsupported schema_version" in info.value.detail


@pytest.mark.parametrize("number", ["1e999", str(10**400), "1" * 5000])
def test_numbers_in_ignored_event_fields_are_not_read(number: str) -> None:
    event = events.decode(with_field(RESUBMITTED, "x", number))
    assert event == events.ArtifactResubmitted(
        artifact_id=RESUBMITTED["artifact_id"], submitted_at=datetime(2025, 1, 1, tzinfo=UTC)
    )


def test_a_repeated_key_counts_with_its_last_value() -> None:
    raw = b'{"type":"artifact","content":"QQ==","content":"Qg=="}'
    assert check(raw).submission.content == b"B"
    event = events.decode(with_field(RESUBMITTED, "artifact_id", '"first", "artifact_id": "last"'))
    assert isinstance(event, events.ArtifactResubmitted) and event.artifact_id == "last"


def test_a_type_tag_repeated_with_another_value_is_refused() -> None:
    assert reason_of("submissions.check", b'{"type":"artifact","type":"sbom","content":""}') == "unknown-type"
    assert (
        reason_of("submissions.check", b'{"type":"sbom","type":"artifact","content":""}') == "schema-invalid"
    )
    raw = with_field(RESUBMITTED, "type", '"artifact.resubmitted", "type": "artifact.ingested"')
    assert reason_of("events.decode", raw) == "schema-invalid"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("submissions.check", b'{"content": 5}'),  # no tag: an artifact, whose content is wrong
        ("submissions.check", b'{"type":"artifact","content":5}'),
        ("events.decode", with_field(RESUBMITTED, "artifact_id", "5")),
        ("requests.decode", b'{"type":"anchor.create","command_id":5,"requested_at":"2025-01-01T00:00:00Z"}'),
        (
            "requests.decode",
            b'{"type":"anchor.create","command_id":"c","requested_at":"2025-01-01T00:00:00Z","x":1}',
        ),
        ("requests.decode", b'{"type":"anchor.recover","command_id":"c"}'),
        ("anchors.decode", b'{"type":"anchor.created","key_name":5}'),
        ("anchors.decode", b'{"key_name":5}'),
        ("anchors.decode_record", b'{"type":"anchor.recovered","replaces_offset":"one"}'),
        ("anchors.decode_record", b"[]"),
    ],
)
def test_a_wrong_field_is_schema_invalid_not_an_unknown_type(name: str, raw: bytes) -> None:
    assert reason_of(name, raw) == "schema-invalid"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("submissions.check", b'{"type":"sbom-bundle","content":""}'),
        ("requests.decode", b'{"type":"anchor.delete","command_id":"c"}'),
        ("requests.decode", b'{"command_id":"c"}'),  # several command types: the tag is needed
        ("requests.decode", b'{"type":["anchor.create"]}'),
        ("anchors.decode", b'{"type":"anchor.recovered"}'),
        ("anchors.decode_record", b'{"type":"anchor.deleted"}'),
        ("anchors.decode_record", b'{"type":1e999}'),
    ],
)
def test_an_unknown_type_tag_is_unknown_type(name: str, raw: bytes) -> None:
    assert reason_of(name, raw) == "unknown-type"


def test_commands_are_refused_with_the_common_reasons() -> None:
    """They used to be refused as `invalid-command`, whatever was wrong."""
    assert reason_of("requests.decode", b"{") == "undecodable"
    assert reason_of("requests.decode", b'{"type":"anchor.create"}') == "schema-invalid"


def test_details_are_short_even_for_huge_values() -> None:
    with pytest.raises(InvalidInput) as info:
        check(json.dumps({"type": "artifact", "content": "", "kind": "k" * 100_000}).encode())
    assert info.value.reason == "schema-invalid" and len(info.value.detail) <= 200
    assert info.value.detail.endswith("- at `$.kind`")


def test_shorten_keeps_both_ends() -> None:
    assert shorten("abc", 10) == "abc"
    cut = shorten("a" * 50 + "b" * 50, 21)
    assert len(cut) <= 21 and cut.startswith("aaaa") and cut.endswith("bbbb") and " ... " in cut


def test_a_decoder_of_an_untagged_type_reports_schema_errors() -> None:
    numbers: Decoder[list[int]] = Decoder(list[int], "list")
    assert numbers.decode(b"[1, 2]") == [1, 2]
    with pytest.raises(InvalidInput) as info:
        numbers.decode(b'{"type": "x"}')
    assert info.value.reason == "schema-invalid"


def test_best_effort_readers_of_hostile_submissions() -> None:
    digest = "sha256:" + "ab" * 32
    assert submissions.claimed_digest(b'{"digest":"' + digest.encode() + b'","x":' + DEEP + b"}") == ""
    assert submissions.claimed_digest(b'{"digest":"' + digest.encode() + b'","x":1e999}') == digest
    assert submissions.correlation_of(b'{"submission_id":"s-1","content":5}') == "s-1"
    assert submissions.correlation_of(b'{"submission_id":["s-1"]}') == ""
    assert submissions.correlation_of(b'{"submission_id":"\xff"}') == ""


# Dead-letter headers: anyone who may write to the DLQ topic may have written them.
LETTER = DeadLetter(
    reason="schema-invalid",
    detail="Expected `str`, got `int` - at `$.producer`",
    source_topic="evidence.submissions",
    source_partition=3,
    source_offset=918273,
    rejected_at=datetime(2025, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
)


def test_dead_letter_headers_round_trip() -> None:
    assert DeadLetter.from_headers(LETTER.headers()) == LETTER
    assert [name for name, _ in LETTER.headers()] == [
        "stella.reason",
        "stella.detail",
        "stella.source.topic",
        "stella.source.partition",
        "stella.source.offset",
        "stella.rejected_at",
    ]
    assert dict(LETTER.headers())["stella.rejected_at"] == b"2025-01-02T03:04:05.006000+00:00"


def test_dead_letter_headers_other_headers_are_ignored_and_the_last_of_a_name_counts() -> None:
    headers = [("traceparent", b"\xff"), *LETTER.headers(), ("stella.reason", b"too-large")]
    assert DeadLetter.from_headers(headers).reason == "too-large"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"stella.reason": None}, "schema-invalid"),
        ({"stella.detail": b"\xff"}, "undecodable"),
        ({"stella.source.partition": b"three"}, "schema-invalid"),
        ({"stella.source.offset": b"1e999"}, "schema-invalid"),
        ({"stella.rejected_at": b"yesterday"}, "schema-invalid"),
    ],
)
def test_malformed_dead_letter_headers_are_refused(change: dict[str, bytes | None], expected: str) -> None:
    headers = [(name, change.get(name, value)) for name, value in LETTER.headers()]
    with pytest.raises(InvalidInput) as info:
        DeadLetter.from_headers(headers)
    assert info.value.reason == expected


def test_missing_dead_letter_headers_are_schema_invalid() -> None:
    with pytest.raises(InvalidInput) as info:
        DeadLetter.from_headers(LETTER.headers()[1:])
    assert info.value.reason == "schema-invalid" and "reason" in info.value.detail


header_names = st.one_of(st.sampled_from([name for name, _ in LETTER.headers()]), st.text(max_size=10))
header_values = st.one_of(
    st.none(),
    st.binary(max_size=16),
    st.sampled_from([value for _, value in LETTER.headers()]),
    json_scalars.map(str.encode),
)


@modest
@given(st.lists(st.tuples(header_names, header_values), max_size=10))
def test_dead_letter_headers_are_read_totally(headers: list[tuple[str, bytes | None]]) -> None:
    try:
        DeadLetter.from_headers(headers)
    except InvalidInput as error:
        assert error.reason in {"undecodable", "schema-invalid"}
