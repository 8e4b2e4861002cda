"""`backups.replay_steps`: producing the anchors topic back with the gaps transactions left."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locker.backups import Step, replay_steps
from locker.errors import IntegrityError


def offsets_taken(steps: list[Step], offsets: list[int]) -> list[int]:
    """Where each record lands when `steps` are carried out on an empty partition (the broker's
    rule: a record takes the next offset; a transaction's end marker takes one more)."""
    at, landed = 0, []
    for kind, n in steps:
        if kind == "fill":
            at += n + 1
        else:
            landed.append(at)
            at += 2 if kind == "commit" else 1
    return landed


def test_a_log_without_transactions_is_produced_plainly() -> None:
    assert replay_steps([0, 1, 2]) == [("plain", 0), ("plain", 1), ("plain", 2)]


def test_markers_and_aborted_appends_are_made_again() -> None:
    # 0 anchor, 1 marker, 2 anchor, 3 marker, 4-5 a fenced leader's aborted anchor and its marker, 6 anchor
    steps = replay_steps([0, 2, 6])
    assert steps == [("commit", 0), ("plain", 1), ("fill", 2), ("plain", 2)]
    assert offsets_taken(steps, [0, 2, 6]) == [0, 2, 6]


def test_a_lone_marker_before_the_first_record_cannot_be_made() -> None:
    with pytest.raises(IntegrityError):
        replay_steps([1, 2])


@given(st.lists(st.integers(min_value=0, max_value=5), max_size=30), st.integers(0, 5))
def test_every_record_lands_at_its_old_offset(gaps: list[int], first: int) -> None:
    if first == 1:
        first = 0
    offsets, at = [], first
    for gap in gaps:
        offsets.append(at)
        at += 1 + gap
    assert offsets_taken(replay_steps(offsets), offsets) == offsets
