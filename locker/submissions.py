"""What producers send to `evidence.submissions`, and the check every submission passes.

A submission is a JSON object (schema in README, "Submitting evidence"). `check` is pure: it
either returns an `Accepted` or raises `InvalidInput` with a stable reason code, which the
service records in an `IngestRejected` event and a dead-letter record.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Union

import msgspec

from locker.digests import is_digest
from locker.errors import InvalidInput
from locker.events.ingest import Kind

MAX_TEXT = 256
MAX_SUBJECTS = 1024


class ArtifactSubmission(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="artifact",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """One artifact with its content inline (standard base64 in JSON)."""

    content: bytes
    kind: Kind = "other"
    subjects: tuple[str, ...] = ()
    producer: str = ""
    media_type: str = ""
    digest: str = ""
    submission_id: str = ""
    schema_version: int = 1


Submission = Union[ArtifactSubmission]  # noqa: UP007 - more submission types will join
_decoder: msgspec.json.Decoder[ArtifactSubmission] = msgspec.json.Decoder(Submission)  # type: ignore[arg-type]
_encoder = msgspec.json.Encoder(order="deterministic")


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """A submission that passed every check; `artifact_id` is the computed digest."""

    artifact_id: str
    submission: ArtifactSubmission

    @property
    def correlation_id(self) -> str:
        return self.submission.submission_id


def encode(submission: ArtifactSubmission) -> bytes:
    return _encoder.encode(submission)


def new_submission_id() -> str:
    return str(uuid.uuid4())


def check(raw: bytes, key: bytes | None, *, max_content_bytes: int) -> Accepted:
    """Decode and validate one submission record. Raises `InvalidInput`."""
    submission = _decode(raw)
    if len(submission.content) > max_content_bytes:
        raise InvalidInput(
            "too-large",
            f"content is {len(submission.content)} bytes, the limit is {max_content_bytes}",
        )
    for name, text in (("producer", submission.producer), ("media_type", submission.media_type)):
        if len(text) > MAX_TEXT:
            raise InvalidInput("schema-invalid", f"{name} is longer than {MAX_TEXT} characters")
    if len(submission.submission_id) > 128:
        raise InvalidInput("schema-invalid", "submission_id is longer than 128 characters")
    if len(submission.subjects) > MAX_SUBJECTS:
        raise InvalidInput("schema-invalid", f"more than {MAX_SUBJECTS} subjects")
    for subject in submission.subjects:
        if not is_digest(subject):
            raise InvalidInput("invalid-digest", f"subject {_short(subject)!r} is not sha256:<hex>")
    artifact_id = "sha256:" + hashlib.sha256(submission.content).hexdigest()
    if submission.digest:
        if not is_digest(submission.digest):
            raise InvalidInput(
                "invalid-digest", f"claimed digest {_short(submission.digest)!r} is not sha256:<hex>"
            )
        if submission.digest != artifact_id:
            raise InvalidInput(
                "digest-mismatch",
                f"claimed digest {submission.digest}, content hashes to {artifact_id}",
            )
    if key is not None and key != artifact_id.encode():
        raise InvalidInput(
            "key-mismatch",
            f"record key {_short(key.decode(errors='replace'))!r} is not the content digest {artifact_id}",
        )
    return Accepted(artifact_id=artifact_id, submission=submission)


def claimed_digest(raw: bytes) -> str:
    """Best-effort digest a rejected submission claimed, for the rejection record."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return ""
    digest = value.get("digest", "") if isinstance(value, dict) else ""
    return digest if isinstance(digest, str) and is_digest(digest) else ""


def correlation_of(raw: bytes) -> str:
    """Best-effort submission id of a (possibly invalid) submission."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return ""
    sid = value.get("submission_id", "") if isinstance(value, dict) else ""
    return sid[:128] if isinstance(sid, str) else ""


def _decode(raw: bytes) -> ArtifactSubmission:
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        if isinstance(exc, msgspec.ValidationError):
            return _explain(raw, exc)
        raise InvalidInput("undecodable", f"not a JSON submission: {exc}") from None


def _explain(raw: bytes, exc: msgspec.ValidationError) -> ArtifactSubmission:
    value = msgspec.json.decode(raw)
    tag = value.get("type") if isinstance(value, dict) else None
    if isinstance(value, dict) and tag != "artifact":
        raise InvalidInput("unknown-type", f"unknown submission type {tag!r}") from None
    raise InvalidInput("schema-invalid", str(exc)) from None


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
