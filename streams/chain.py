"""The anchor chain handler: `evidence.anchors` -> the chain projection (`projections.anchor_store`).

Every record joins the chain; one that is not an anchor record is also dead-lettered with its
reason (the chain keeps it as junk, so `anchor verify` still names it).
"""

from __future__ import annotations

from functools import partial

from locker import anchors
from locker.errors import InvalidInput
from streams.kafka import Record
from streams.runtime import Outbox, dead_letter
from streams.services import Services


def handle(services: Services, records: list[Record]) -> Outbox:
    out = Outbox()
    for record in records:
        try:
            anchors.decode_record(record.value)
        except InvalidInput as error:
            out.dead.append((record, dead_letter(record, error)))
    out.writes.append(partial(apply_all, services, records))
    return out


def apply_all(services: Services, records: list[Record]) -> None:
    for record in records:
        services.chain.apply(record.offset, record.value, services.verifier)
