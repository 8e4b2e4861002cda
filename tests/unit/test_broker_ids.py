"""The local broker's cluster id never looks like an option to Kafka's storage tool."""

from __future__ import annotations

import uuid

import pytest

from commands import broker


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x08" + bytes(15))])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(ids))
    assert broker.new_cluster_id() == "CAAAAAAAAAAAAAAAAAAAAA"  # the first candidate began "-A"
