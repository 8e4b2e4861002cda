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
    # Named, not detected: typer otherwise looks for a shell among this process's parents, and a
    # suite started outside one (a detached job) has none.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
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


def leaf_commands() -> list[tuple[str, ...]]:
    import typer.main

    from cli.main import app

    def walk(command: object, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], object]]:
        subs = getattr(command, "commands", None)
        if subs is None:
            return [(path, command)]
        return [leaf for name, sub in subs.items() for leaf in walk(sub, (*path, name))]

    found = walk(typer.main.get_command(app), ())
    without = [" ".join(p) for p, c in found if "--format" not in {o for q in c.params for o in q.opts}]  # type: ignore[attr-defined]
    assert not without, f"commands without --format: {without}"
    return [p for p, _ in found]


def test_every_command_takes_format_json(home: Path) -> None:
    assert len(leaf_commands()) > 40
    # Those that answer without a broker, parsed here; the integration tests parse the others'.
    for args in (
        ("config", "list"),
        ("config", "get", "Kafka:Bootstrap"),
        ("evidence", "exists", ZERO),
        ("doctor", "--check", "check.evidence.config"),
        ("evidence", "cleanup", "--temp-only", "--dry-run"),
    ):
        proc = stella(home, *args, "--format", "json")
        assert proc.returncode in (0, 1), (args, proc.stderr)
        json.loads(proc.stdout)
