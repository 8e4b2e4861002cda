"""The one deterministic encoder for events, and the decoder with upcasting.

Event record values are canonical: `encode(event)` is the only way events become bytes, and
the Merkle leaf hashes those exact stored bytes, never a re-encoding. Deterministic encoding is
not a standard canonical form, so msgspec's version is pinned in pyproject.toml and golden
payloads with their hashes live in tests/contract.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Union

import msgspec

from locker.decoding import Decoder, shorten
from locker.errors import InvalidInput
from locker.events.ingest import ArtifactDescribed, ArtifactIngested, ArtifactResubmitted, IngestRejected
from locker.events.integrity import (
    ArtifactMarkedCorrupted,
    ArtifactRecovered,
    ArtifactReplicated,
    ArtifactVerificationFailed,
    BackupCreated,
    VerificationCompleted,
    VerificationStarted,
)
from locker.events.recovery import BackupRestored, StateRestored
from locker.events.retention import (
    ArchiveRecorded,
    ArtifactArchived,
    ArtifactExpired,
    ArtifactHoldReleased,
    ArtifactHoldSet,
    RetentionApplied,
)

Event = Union[  # noqa: UP007 - a runtime alias msgspec reads
    ArtifactIngested,
    ArtifactResubmitted,
    IngestRejected,
    VerificationStarted,
    VerificationCompleted,
    ArtifactVerificationFailed,
    ArtifactMarkedCorrupted,
    ArtifactReplicated,
    ArtifactRecovered,
    BackupCreated,
    StateRestored,
    BackupRestored,
    ArtifactHoldSet,
    ArtifactHoldReleased,
    ArtifactExpired,
    RetentionApplied,
    ArtifactArchived,
    ArchiveRecorded,
    ArtifactDescribed,
]
EVENT_TYPES: tuple[type[Any], ...] = typing.get_args(Event)


def _version(event_type: type[Any]) -> int:
    """The schema version an event type writes: its `schema_version` default."""
    [field] = [f for f in msgspec.structs.fields(event_type) if f.name == "schema_version"]
    return int(field.default)


CURRENT_VERSION: dict[str, int] = {t.__struct_config__.tag: _version(t) for t in EVENT_TYPES}

# (tag, version) -> function turning a version-N payload dict into a version-N+1 dict.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _run_of_the_whole_index(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "to_anchor": ""}


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("verification.started", 1): _run_of_the_whole_index,
}

_encoder = msgspec.json.Encoder(order="sorted")
_decoder: Decoder[Event] = Decoder(Event, "event")
_payloads: Decoder[dict[str, Any]] = Decoder(dict[str, Any], "event")


def encode(event: Event) -> bytes:
    """The canonical bytes of `event`: JSON with keys in sorted order."""
    return _encoder.encode(event)


def decode(raw: bytes | None) -> Event:
    """Decode an event record value (None for a null value), upcasting old schema versions.

    Raises `InvalidInput` with a reason from `locker.decoding.REASONS`.
    """
    try:
        event = _decoder.decode(raw)
    except InvalidInput as error:
        if error.reason != "schema-invalid":
            raise
        refused: InvalidInput | None = error
    else:
        if event.schema_version == CURRENT_VERSION[str(type(event).__struct_config__.tag)]:
            return event
        refused = None
    return _upcast(_payloads.decode(raw), refused)


def _upcast(payload: dict[str, Any], refused: InvalidInput | None) -> Event:
    """The event of `payload` at its type's current schema version.

    `refused` is why the payload did not decode as it is; that stands if it is current already.
    """
    tag, version = payload.get("type"), payload.get("schema_version", 1)
    if not isinstance(tag, str) or tag not in CURRENT_VERSION:
        raise InvalidInput("unknown-type", f"unknown event type {shorten(repr(tag), 80)}")
    current = CURRENT_VERSION[tag]
    if not isinstance(version, int) or not 1 <= version <= current:
        raise InvalidInput(
            "schema-invalid", f"unsupported schema_version {shorten(repr(version), 80)} for {tag}"
        )
    if refused is not None and version == current:
        raise refused
    while version < current:
        payload = UPCASTERS[(tag, version)](payload)
        version += 1
        payload["schema_version"] = version
    return _decoder.convert(payload)
