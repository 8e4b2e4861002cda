"""Commands the CLI sends to the service on `evidence.commands`, each with a `command_id`.

Every event a command causes carries that id as `correlation_id`. Commands forbid unknown
fields (events do not).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Union

import msgspec

from locker.decoding import Decoder


class CreateAnchor(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="anchor.create",
    tag_field="type",
    forbid_unknown_fields=True,
):
    command_id: str
    requested_at: datetime
    new_chain_reason: str = ""  # non-empty: start a new chain segment ...
    continue_from: str = ""  # ... continuing this anchor (the old chain's last good one)
    schema_version: int = 1


class RecoverAnchor(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="anchor.recover",
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Replace the damaged anchor record at `replaces_offset` by `record`, a checked backup copy."""

    command_id: str
    requested_at: datetime
    record: bytes
    replaces_offset: int
    reason: str
    schema_version: int = 1


Command = Union[CreateAnchor, RecoverAnchor]  # noqa: UP007 - a runtime alias msgspec reads
_encoder = msgspec.json.Encoder(order="sorted")
_decoder: Decoder[CreateAnchor | RecoverAnchor] = Decoder(Command, "command")


def new_id() -> str:
    return str(uuid.uuid4())


def create_anchor(new_chain_reason: str = "", continue_from: str = "") -> CreateAnchor:
    return CreateAnchor(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        new_chain_reason=new_chain_reason,
        continue_from=continue_from,
    )


def recover_anchor(record: bytes, replaces_offset: int, reason: str) -> RecoverAnchor:
    return RecoverAnchor(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        record=record,
        replaces_offset=replaces_offset,
        reason=reason,
    )


def encode(command: CreateAnchor | RecoverAnchor) -> bytes:
    return _encoder.encode(command)


def decode(raw: bytes | None) -> CreateAnchor | RecoverAnchor:
    """A command record value (None for a null value).

    Raises `InvalidInput` with a reason from `locker.decoding.REASONS`.
    """
    return _decoder.decode(raw)
