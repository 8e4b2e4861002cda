"""Dead-letter records: the rejected bytes unchanged as the value, the context in headers.

Headers (UTF-8): `stella.reason`, `stella.detail`, `stella.source.topic`,
`stella.source.partition`, `stella.source.offset`, `stella.rejected_at` (RFC 3339).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

Headers = list[tuple[str, bytes]]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_at: datetime

    def headers(self) -> Headers:
        return [
            ("stella.reason", self.reason.encode()),
            ("stella.detail", self.detail.encode()),
            ("stella.source.topic", self.source_topic.encode()),
            ("stella.source.partition", str(self.source_partition).encode()),
            ("stella.source.offset", str(self.source_offset).encode()),
            ("stella.rejected_at", self.rejected_at.isoformat().encode()),
        ]

    @classmethod
    def from_headers(cls, headers: Headers) -> DeadLetter:
        h = {name: value.decode() for name, value in headers}
        return cls(
            reason=h["stella.reason"],
            detail=h["stella.detail"],
            source_topic=h["stella.source.topic"],
            source_partition=int(h["stella.source.partition"]),
            source_offset=int(h["stella.source.offset"]),
            rejected_at=datetime.fromisoformat(h["stella.rejected_at"]),
        )
