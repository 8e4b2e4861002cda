"""Commands the CLI sends to the service on `evidence.commands`, each with a `command_id`.

Every event a command causes carries that id as `correlation_id`. Commands forbid unknown
fields (events do not).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Union

import msgspec

from locker.errors import InvalidInput


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


Command = Union[CreateAnchor]  # noqa: UP007 - a runtime alias msgspec reads
_encoder = msgspec.json.Encoder(order="sorted")
_decoder: msgspec.json.Decoder[CreateAnchor] = msgspec.json.Decoder(Command)  # type: ignore[arg-type]


def new_id() -> str:
    return str(uuid.uuid4())


def create_anchor(new_chain_reason: str = "", continue_from: str = "") -> CreateAnchor:
    return CreateAnchor(
        command_id=new_id(),
        requested_at=datetime.now(UTC),
        new_chain_reason=new_chain_reason,
        continue_from=continue_from,
    )


def encode(command: CreateAnchor) -> bytes:
    return _encoder.encode(command)


def decode(raw: bytes) -> CreateAnchor:
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput("invalid-command", str(exc)) from None
