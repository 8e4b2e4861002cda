"""Progress as plain lines when stderr is not a terminal."""

from __future__ import annotations

import pytest

from cli.render import Lines


def test_lines_are_rate_limited_and_end_with_the_last_state(capsys: pytest.CaptureFixture[str]) -> None:
    lines = Lines("verified", every=3600)
    lines.update(0, 10)
    lines.update(5, 10)  # within the interval: not printed yet
    lines.update(10, 10)
    lines.close()
    assert capsys.readouterr().err.splitlines() == ["verified: 0 of 10", "verified: 10 of 10"]


def test_nothing_to_say_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Lines("verified").close()
    assert capsys.readouterr().err == ""
