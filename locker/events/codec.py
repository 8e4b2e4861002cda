"""The one deterministic encoder for events, and the decoder with upcasting.

Event record values are canonical: `encode(event)` is the only way events become bytes, and
the Merkle leaf hashes those exact stored bytes, never a re-encoding. Deterministic encoding is
not a standard canonical form, so msgspec's version is pinned in pyproject.toml and golden
payloads with their hashes live in tests/contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union, cast

import msgspec

from locker.errors import InvalidInput
from locker.events.ingest import ArtifactIngested, ArtifactResubmitted, IngestRejected

Event = Union[ArtifactIngested, ArtifactResubmitted, IngestRejected]  # noqa: UP007 - a runtime alias msgspec reads
EVENT_TYPES: tuple[type[Any], ...] = (ArtifactIngested, ArtifactResubmitted, IngestRejected)
CURRENT_VERSION: dict[str, int] = {
    t.__struct_config__.tag: 1  # type: ignore[attr-defined]
    for t in EVENT_TYPES
}

# (tag, version) -> function turning a version-N payload dict into a version-N+1 dict.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

_encoder = msgspec.json.Encoder(order="sorted")
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]


def encode(event: Event) -> bytes:
    """The canonical bytes of `event`: JSON with keys in sorted order."""
    return _encoder.encode(event)


def decode(raw: bytes) -> Event:
    """Decode an event record value, upcasting old schema versions.

    Raises `InvalidInput` with reason `undecodable`, `unknown-type` or `schema-invalid`.
    """
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return _decode_slow(raw, exc)
    except msgspec.DecodeError as exc:
        raise InvalidInput("undecodable", f"not a JSON event: {exc}") from None
    tag = str(type(event).__struct_config__.tag)
    if event.schema_version != CURRENT_VERSION[tag]:
        return _decode_slow(raw, None)
    return event


def _decode_slow(raw: bytes, error: msgspec.ValidationError | None) -> Event:
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput("undecodable", f"not a JSON event: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("schema-invalid", "an event must be a JSON object")
    tag = payload.get("type")
    if not isinstance(tag, str) or tag not in CURRENT_VERSION:
        raise InvalidInput("unknown-type", f"unknown event type {tag!r}")
    version = payload.get("schema_version", 1)
    if not isinstance(version, int) or not 1 <= version <= CURRENT_VERSION[tag]:
        raise InvalidInput("schema-invalid", f"unsupported schema_version {version!r} for {tag}")
    while version < CURRENT_VERSION[tag]:
        payload = UPCASTERS[(tag, version)](payload)
        version += 1
        payload["schema_version"] = version
    try:
        return cast(Event, msgspec.convert(payload, Event))  # type: ignore[arg-type]
    except msgspec.ValidationError as exc:
        raise InvalidInput("schema-invalid", str(error or exc)) from None
