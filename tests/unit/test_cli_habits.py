"""CLI habits: shell completion, --verbose causes, hints, --quiet, NO_COLOR. No broker needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_cli_errors import ZERO, home, stella

__all__ = ["home"]  # the fixture


def test_shell_completion_is_offered_and_installs(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = stella(home, "--show-completion", "bash")
    assert shown.returncode == 0 and "complete" in shown.stdout
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "user").mkdir()
    installed = stella(home, "--install-completion", "bash")
    assert installed.returncode == 0, installed.stderr
    assert "completion" in (tmp_path / "user" / ".bashrc").read_text()


def test_every_error_has_a_hint_and_verbose_keeps_its_cause(home: Path) -> None:
    missing = stella(home, "evidence", "index", "lookup", ZERO)
    assert missing.returncode == 1 and "(hint: check the id" in missing.stderr
    home.mkdir()
    (home / "config.toml").write_text("[Kafka\n")
    plain = stella(home, "config", "list")
    assert plain.returncode == 2 and len(plain.stderr.splitlines()) == 1
    verbose = stella(home, "--verbose", "config", "list")
    assert verbose.returncode == 2
    first, cause = verbose.stderr.splitlines()
    assert first == plain.stderr.strip() and cause.startswith("  caused by TOMLDecodeError: ")


def test_quiet_prints_no_table_but_json_still(home: Path) -> None:
    assert stella(home, "--quiet", "config", "list").stdout == ""
    listed = json.loads(stella(home, "-q", "config", "list", "--format", "json").stdout)
    assert listed


def test_colour_follows_no_color(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    args = ("doctor", "--check", "check.evidence.config")
    assert "\x1b[32m" in stella(home, *args).stdout  # ok, in green
    monkeypatch.setenv("NO_COLOR", "1")
    plain = stella(home, *args).stdout
    assert "ok" in plain and not any(f"\x1b[3{n}m" in plain for n in range(8))
