"""The projection handler: events -> the index and the per-partition Merkle trees.

Every record of `evidence.events` is a Merkle leaf, whatever its bytes; records that are not
valid events change no index row (their position is still applied) and are dead-lettered once.
Both stores skip what they applied already, so a redelivered batch is a no-op. After a batch that
expires or archives artifacts, their blobs are deleted (`IndexStore.finish_deletions`): the events are on the
log by then, and a crash before the deletion is finished when the service starts. A batch with a
`state.restored` lets the index read the records it voids (`Services.log`), and forgets the
recently ingested ids: the same content may come again, and must be ingested again.
"""

from __future__ import annotations

from functools import partial

from locker.errors import InvalidInput
from locker.events import ArtifactArchived, ArtifactExpired, Event, StateRestored, decode
from projections.store import Applied
from streams.kafka import Record
from streams.runtime import Outbox, dead_letter
from streams.services import Services


def handle(services: Services, records: list[Record]) -> Outbox:
    """Decode a batch of events into the two stores' writes."""
    out = Outbox()
    index = services.index
    applied: list[Applied] = []
    for record in records:
        if record.offset < index.resume_at(record.partition):
            continue  # redelivered: applied (or dead-lettered) already
        event: Event | None
        try:
            event = decode(record.value)
        except InvalidInput as error:
            event = None
            out.dead.append((record, dead_letter(record, error)))
        applied.append((record.partition, record.offset, event))
    leaves = [(r.partition, r.offset, r.value) for r in records]
    out.writes += [partial(services.trees.apply, leaves), partial(index.apply, applied, services.log)]
    rare = {type(event) for _, _, event in applied} & {StateRestored, ArtifactExpired, ArtifactArchived}
    if StateRestored in rare:
        out.writes.append(services.recent.clear)
    if rare & {ArtifactExpired, ArtifactArchived}:
        out.writes.append(partial(index.finish_deletions, services.delete_blobs))
    return out
