"""`locker.submissions.check`: the one gate every submission record passes."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from locker import submissions
from locker.errors import InvalidInput
from locker.submissions import ArtifactSubmission, check

CONTENT = b'{"bomFormat": "CycloneDX"}'
DIGEST = "sha256:" + hashlib.sha256(CONTENT).hexdigest()
SUBJECT = "sha256:" + "ab" * 32
LIMIT = 1024


def raw(content: bytes = CONTENT, **fields: object) -> bytes:
    payload: dict[str, object] = {"type": "artifact", "content": base64.b64encode(content).decode()}
    payload.update(fields)
    return json.dumps(payload).encode()


def reason_of(data: bytes, key: bytes | None = None, *, limit: int = LIMIT) -> str:
    with pytest.raises(InvalidInput) as info:
        check(data, key, max_content_bytes=limit)
    return info.value.reason


def test_accepted_artifact_id_is_the_computed_sha256() -> None:
    accepted = check(
        raw(kind="sbom", subjects=[SUBJECT], producer="ci", digest=DIGEST, submission_id="s-1"),
        DIGEST.encode(),
        max_content_bytes=LIMIT,
    )
    assert accepted.artifact_id == DIGEST
    assert accepted.submission.content == CONTENT
    assert accepted.submission.kind == "sbom"
    assert accepted.submission.subjects == (SUBJECT,)
    assert accepted.submission.producer == "ci"
    assert accepted.correlation_id == "s-1"


def test_accepted_minimal_submission_uses_defaults_and_needs_no_key() -> None:
    accepted = check(raw(), None, max_content_bytes=LIMIT)
    assert accepted.artifact_id == DIGEST
    assert accepted.submission.kind == "other"
    assert accepted.submission.subjects == ()
    assert accepted.correlation_id == ""


def test_accepted_content_exactly_at_the_limit() -> None:
    assert check(raw(), None, max_content_bytes=len(CONTENT)).artifact_id == DIGEST


def test_encode_then_check_round_trips() -> None:
    sub = ArtifactSubmission(content=CONTENT, kind="vex", subjects=(SUBJECT,), digest=DIGEST)
    accepted = check(submissions.encode(sub), DIGEST.encode(), max_content_bytes=LIMIT)
    assert accepted.submission == sub
    assert accepted.artifact_id == DIGEST


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"{not json", b'{"type": "artifact",'])
def test_undecodable(data: bytes) -> None:
    assert reason_of(data) == "undecodable"


@pytest.mark.parametrize("tag", ["sbom-bundle", "", 5, ["artifact"]])
def test_unknown_type(tag: object) -> None:
    assert reason_of(raw(type=tag)) == "unknown-type"


@pytest.mark.parametrize(
    "data",
    [
        raw(kind="bogus"),
        raw(unexpected="field"),
        raw(subjects="sha256:" + "ab" * 32),
        raw(subjects=[5]),
        raw(producer=5),
        raw(schema_version="1"),
        json.dumps({"type": "artifact", "content": "!!not base64!!"}).encode(),
        json.dumps({"type": "artifact"}).encode(),
        raw(producer="p" * (submissions.MAX_TEXT + 1)),
        raw(media_type="m" * (submissions.MAX_TEXT + 1)),
        raw(submission_id="i" * 129),
        raw(subjects=[SUBJECT] * (submissions.MAX_SUBJECTS + 1)),
        b"[1, 2]",
        b"null",
    ],
    ids=[
        "bad-kind",
        "unknown-field",
        "subjects-not-a-list",
        "subject-not-a-string",
        "producer-not-a-string",
        "version-not-an-int",
        "content-not-base64",
        "content-missing",
        "producer-too-long",
        "media-type-too-long",
        "submission-id-too-long",
        "too-many-subjects",
        "array",
        "null",
    ],
)
def test_schema_invalid(data: bytes) -> None:
    assert reason_of(data) == "schema-invalid"


def test_too_large() -> None:
    assert reason_of(raw(b"x" * 11), limit=10) == "too-large"


def test_too_large_is_checked_before_the_digest() -> None:
    assert reason_of(raw(b"x" * 11, digest="sha256:" + "0" * 64), limit=10) == "too-large"


@pytest.mark.parametrize(
    "claimed",
    [
        "sha256:../../x",
        "sha256:" + "AB" * 32,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 32,
        "sha256:" + "a" * 64 + "/..",
        "../" + "a" * 64,
    ],
)
def test_invalid_claimed_digest(claimed: str) -> None:
    assert reason_of(raw(digest=claimed)) == "invalid-digest"


@pytest.mark.parametrize("subject", ["sha256:../../etc/passwd", "not-a-digest", "SHA256:" + "a" * 64])
def test_invalid_subject(subject: str) -> None:
    assert reason_of(raw(subjects=[SUBJECT, subject])) == "invalid-digest"


def test_invalid_digest_detail_is_truncated() -> None:
    with pytest.raises(InvalidInput) as info:
        check(raw(digest="sha256:" + "/" * 500), None, max_content_bytes=LIMIT)
    assert info.value.reason == "invalid-digest"
    assert len(info.value.detail) < 200


def test_digest_mismatch() -> None:
    other = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(InvalidInput) as info:
        check(raw(digest=other), None, max_content_bytes=LIMIT)
    assert info.value.reason == "digest-mismatch"
    assert other in info.value.detail and DIGEST in info.value.detail


@pytest.mark.parametrize(
    "key",
    [
        b"sha256:" + b"0" * 64,
        DIGEST.upper().encode(),
        b"",
        b"\xff\xfe",
        DIGEST.encode() + b"\n",
    ],
)
def test_key_mismatch(key: bytes) -> None:
    assert reason_of(raw(digest=DIGEST), key) == "key-mismatch"


def test_claimed_digest_and_correlation_are_best_effort() -> None:
    assert submissions.claimed_digest(raw(digest=DIGEST)) == DIGEST
    assert submissions.claimed_digest(raw(digest="sha256:../../x")) == ""
    assert submissions.claimed_digest(b"\xff") == ""
    assert submissions.claimed_digest(b"[]") == ""
    assert submissions.correlation_of(raw(submission_id="c" * 300)) == "c" * 128
    assert submissions.correlation_of(raw(submission_id=5)) == ""
    assert submissions.correlation_of(b"not json") == ""


def test_missing_type_means_artifact() -> None:
    """While `artifact` is the only submission type, `type` may be left out (README)."""
    data = json.dumps({"content": base64.b64encode(CONTENT).decode()}).encode()
    expected = "sha256:" + hashlib.sha256(CONTENT).hexdigest()
    assert submissions.check(data, None, max_content_bytes=LIMIT).artifact_id == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("producer", "ci\r\nX-Injected: yes"),
        ("producer", "\x1b[31mred"),
        ("media_type", "text/plain\nx"),
        ("media_type", "text/plain\x00"),
        ("submission_id", "s\x85-1"),
        ("producer", "a\u2028b"),
    ],
)
def test_control_characters_are_refused_where_they_could_reach_a_header_or_a_terminal(
    field: str, value: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        check(raw(**{field: value}), None, max_content_bytes=LIMIT)
    assert info.value.reason == "schema-invalid" and field in info.value.detail


def test_printable_text_is_kept() -> None:
    accepted = check(
        raw(producer="CI ☃ build #7", media_type='text/plain; charset="utf-8"'), None, max_content_bytes=LIMIT
    )
    assert accepted.submission.producer == "CI ☃ build #7"
