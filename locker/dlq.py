"""Dead-letter records: the rejected bytes unchanged as the value, the context in headers.

Headers (UTF-8): `stella.reason`, `stella.detail`, `stella.source.topic`,
`stella.source.partition`, `stella.source.offset`, `stella.rejected_at` (RFC 3339).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from locker.decoding import Decoder
from locker.errors import InvalidInput

Headers = list[tuple[str, bytes]]

# Header name -> DeadLetter field.
_FIELD_OF = {
    "stella.reason": "reason",
    "stella.detail": "detail",
    "stella.source.topic": "source_topic",
    "stella.source.partition": "source_partition",
    "stella.source.offset": "source_offset",
    "stella.rejected_at": "rejected_at",
}


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_at: datetime

    def headers(self) -> Headers:
        return [(name, _header_value(getattr(self, field))) for name, field in _FIELD_OF.items()]

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes | None]]) -> DeadLetter:
        """The dead letter that a record's headers describe (anyone who may write to the topic
        may have written them). Raises `InvalidInput`: `undecodable` for a header that is not
        UTF-8, `schema-invalid` for one that is missing or malformed.
        """
        fields: dict[str, str] = {}
        for name, value in headers:
            if name not in _FIELD_OF or value is None:
                continue
            try:
                fields[_FIELD_OF[name]] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    "undecodable", f"header {name} is not UTF-8 (at byte {exc.start})"
                ) from None
        return _letters.convert(fields, strict=False)


_letters: Decoder[DeadLetter] = Decoder(DeadLetter, "dead letter")


def _header_value(value: object) -> bytes:
    return (value.isoformat() if isinstance(value, datetime) else str(value)).encode()
