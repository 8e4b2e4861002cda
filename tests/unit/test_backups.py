"""Backup record streams and manifests: what goes in comes out, and damage is named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locker.backups import (
    BackedUpRecord,
    FileEntry,
    Manifest,
    decode_manifest,
    encode_manifest,
    frame,
    unframe,
)

records = st.builds(
    BackedUpRecord,
    partition=st.integers(0, 63),
    offset=st.integers(0, 2**40),
    timestamp=st.integers(0, 2**45),
    key=st.none() | st.binary(max_size=70),
    value=st.none() | st.binary(max_size=300),
    headers=st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=20)), max_size=3).map(tuple),
)


@given(st.lists(st.lists(records, max_size=20), max_size=5))
def test_framed_streams_give_back_every_record(chunks: list[list[BackedUpRecord]]) -> None:
    data = b"".join(frame(chunk) for chunk in chunks if chunk)
    assert list(unframe(data)) == [r for chunk in chunks for r in chunk]


def test_a_cut_or_garbled_stream_is_an_error() -> None:
    data = frame([BackedUpRecord(0, 0, 1, b"k", None)])
    with pytest.raises(ValueError, match="cut short"):
        list(unframe(data[:-1]))
    with pytest.raises(ValueError, match="cut short"):
        list(unframe(data + b"\x00"))
    with pytest.raises(ValueError, match="does not decode"):
        list(unframe(data[:4] + b"\xc1" * (len(data) - 4)))


def test_the_manifest_round_trips_with_sorted_keys() -> None:
    manifest = Manifest(
        backup_id="elb-x",
        created_at=datetime(2026, 11, 29, tzinfo=UTC),
        topic_prefix="",
        ends={"events": (3, 0), "anchors": (1,)},
        events=3,
        anchors=1,
        artifacts=1,
        blob_bytes=10,
        files={"events.records": FileEntry("sha256:" + "b" * 64, 99)},
        index_checksum="sha256:" + "c" * 64,
        verifier_key="k",
    )
    raw = encode_manifest(manifest)
    assert decode_manifest(raw) == manifest and raw.index(b'"anchors"') < raw.index(b'"artifacts"')
