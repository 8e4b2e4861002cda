"""Recovery events: a point-in-time restore, and a restore from a backup.

A point-in-time restore never truncates the log. `state.restored` says that, on its own
partition, the records from `voided_from` up to itself no longer count; one is appended to every
partition of `evidence.events`, all with the same `restore_id`. Every projection folds it (the
index drops or reverts what the voided events did), and a fold from offset 0 meets it at the same
place, so a rebuild gives the same result. The voided records stay leaves of their partition's
Merkle tree: every anchor ever published stays consistent with the log.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class StateRestored(msgspec.Struct, frozen=True, kw_only=True, tag="state.restored", tag_field="type"):
    """`stella evidence restore --to-anchor`: the state of partition `partition` is what it was at
    anchor `anchor_id`; records `voided_from` up to this one are voided (they stay in the log)."""

    restore_id: str
    anchor_id: str
    partition: int  # the partition this record is on: the one whose records it voids
    voided_from: int  # the first voided offset: the anchor's last offset of the partition + 1
    reason: str = ""
    actor: str = ""
    restored_at: datetime
    correlation_id: str = ""
    schema_version: int = 1


class BackupRestored(msgspec.Struct, frozen=True, kw_only=True, tag="backup.restored", tag_field="type"):
    """`stella evidence restore --backup-id`: the log before this record was produced again from a
    backup (its records, at their old offsets), and its blobs were put back under `target`."""

    backup_id: str
    manifest_sha256: str
    events: int
    anchors: int
    artifacts: int
    target: str
    new_chain: str = ""  # the reason given with --new-chain, if the restore forked a published anchor
    actor: str = ""
    restored_at: datetime
    correlation_id: str = ""
    schema_version: int = 1
