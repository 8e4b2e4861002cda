"""What producers send to `evidence.submissions`, and the check every submission passes.

A submission is a JSON object (schema in README, "Submitting evidence"). `check` is pure and
total: whatever the record holds, it either returns an `Accepted` or raises `InvalidInput` with a
stable reason code (`locker.decoding.REASONS` for what does not decode, then `too-large`,
`invalid-digest`, `digest-mismatch`, `key-mismatch`), which the service records in an
`IngestRejected` event and a dead-letter record.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Union

import msgspec

from locker.decoding import Decoder, json_string, shorten
from locker.digests import is_digest
from locker.errors import InvalidInput
from locker.events.ingest import Kind

MAX_TEXT = 256
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line and paragraph separators
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


class _Echoed(msgspec.Struct):
    """The fields a rejection echoes, read from any JSON object however invalid the rest is."""

    digest: msgspec.Raw = msgspec.Raw()
    submission_id: msgspec.Raw = msgspec.Raw()


Submission = Union[ArtifactSubmission]  # noqa: UP007 - more submission types will join
_decoder: Decoder[ArtifactSubmission] = Decoder(Submission, "submission")
_echoes: Decoder[_Echoed] = Decoder(_Echoed, "submission")
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


def check(raw: bytes | None, key: bytes | None, *, max_content_bytes: int) -> Accepted:
    """Decode and validate one submission record value (None for a null value). Raises `InvalidInput`."""
    submission = _decoder.decode(raw)
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
    for name, text in (
        ("producer", submission.producer),
        ("media_type", submission.media_type),
        ("submission_id", submission.submission_id),
    ):
        if (control := CONTROL.search(text)) is not None:  # they reach headers, logs and terminals
            where = control.start()
            raise InvalidInput(
                "schema-invalid", f"{name} has a control character (U+{ord(text[where]):04X}) at {where}"
            )
    if len(submission.subjects) > MAX_SUBJECTS:
        raise InvalidInput("schema-invalid", f"more than {MAX_SUBJECTS} subjects")
    for subject in submission.subjects:
        if not is_digest(subject):
            raise InvalidInput("invalid-digest", f"subject {shorten(subject, 80)!r} is not sha256:<hex>")
    artifact_id = "sha256:" + hashlib.sha256(submission.content).hexdigest()
    if submission.digest:
        if not is_digest(submission.digest):
            raise InvalidInput(
                "invalid-digest", f"claimed digest {shorten(submission.digest, 80)!r} is not sha256:<hex>"
            )
        if submission.digest != artifact_id:
            raise InvalidInput(
                "digest-mismatch",
                f"claimed digest {submission.digest}, content hashes to {artifact_id}",
            )
    if key is not None and key != artifact_id.encode():
        shown = shorten(key.decode(errors="replace"), 80)
        raise InvalidInput("key-mismatch", f"record key {shown!r} is not the content digest {artifact_id}")
    return Accepted(artifact_id=artifact_id, submission=submission)


def claimed_digest(raw: bytes | None) -> str:
    """The digest a (possibly invalid) submission claims, if it is a well-formed one; else ""."""
    digest = _echoed(raw, "digest")
    return digest if is_digest(digest) else ""


def correlation_of(raw: bytes | None) -> str:
    """The submission id of a (possibly invalid) submission, cut to 128 characters; else ""."""
    return _echoed(raw, "submission_id")[:128]


def _echoed(raw: bytes | None, name: str) -> str:
    try:
        field: msgspec.Raw = getattr(_echoes.decode(raw), name)
    except InvalidInput:
        return ""
    return json_string(field) or ""
