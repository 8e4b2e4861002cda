from __future__ import annotations

import stat
from pathlib import Path

import pytest

from locker import tokens
from locker.errors import Refused


def test_a_token_is_made_once_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api-token"
    assert tokens.create(path) and not tokens.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = tokens.read(path)
    assert token is not None and len(token) >= 32
    assert tokens.matches(f"Bearer {token}", token)
    assert not tokens.matches(f"Bearer {token}x", token) and not tokens.matches(token, token)
    assert not tokens.matches(None, token)


def test_a_token_others_can_read_or_a_short_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    assert tokens.read(path) is None
    path.write_text("x" * 40)
    path.chmod(0o644)
    with pytest.raises(Refused, match="readable by others"):
        tokens.read(path)
    path.chmod(0o600)
    path.write_text("short")
    with pytest.raises(Refused, match="at least 32"):
        tokens.read(path)


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("10.1.2.3", False)]
)
def test_loopback(host: str, loopback: bool) -> None:
    assert tokens.is_loopback(host) is loopback
