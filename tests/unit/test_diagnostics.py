from __future__ import annotations

from pathlib import Path

import pytest

from commands.diagnostics import REDACTED, known_secrets, redact, tail
from locker import config


def test_a_secret_inside_a_longer_one_does_not_leave_the_longer_ones_rest() -> None:
    secrets = {b"abcdef", b"xxabcdefyy"}
    assert redact(b"1 xxabcdefyy 2 abcdef 3", secrets) == b"1 " + REDACTED + b" 2 " + REDACTED + b" 3"


def test_the_secrets_known_are_the_key_its_fields_and_secret_named_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2-long")
    monkeypatch.setenv("HARMLESS", "not-a-secret-value")
    monkeypatch.setenv("SOME_TOKEN", "abc")  # too short to search for without matching everywhere
    settings = config.load()
    settings.key_file.parent.mkdir(parents=True)
    settings.key_file.write_text("PRIVATE+KEY+stella.local/x+1a2b3c4d+QUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n")
    found = known_secrets(settings)
    assert b"PRIVATE+KEY+stella.local/x+1a2b3c4d+QUJDREVGR0hJSktMTU5PUFFSU1RVVldY" in found
    assert b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY" in found
    assert b"hunter2-long" in found
    assert b"not-a-secret-value" not in found and b"abc" not in found


def test_tail_keeps_the_last_lines_of_a_big_file(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    last = tail(log, lines=3).splitlines()
    assert last[-3:] == [b"line 99997", b"line 99998", b"line 99999"]
    assert b"no such file" in tail(tmp_path / "missing.log")
