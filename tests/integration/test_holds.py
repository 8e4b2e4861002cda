"""Legal holds through the CLI and the running service: set, shown, released, on the log."""

from __future__ import annotations

import json
from typing import Any

import pytest

from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArtifactHoldReleased, ArtifactHoldSet
from tests.conftest import run_cli
from tests.integration.helpers import events, ingest

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


def test_a_hold_is_set_shown_released_and_recorded(running: Settings) -> None:
    content = b"evidence under a litigation hold"
    ingest(running, [content])
    artifact_id = digest_of(content)

    held = cli_json("evidence", "hold", "set", artifact_id, "--reason", "case 2026-CV-0412")
    assert held["hold"]["reason"] == "case 2026-CV-0412" and held["hold"]["since"]
    assert cli_json("evidence", "index", "lookup", artifact_id)["hold"]["reason"] == "case 2026-CV-0412"
    steps = cli_json("evidence", "provenance", "show", artifact_id)["steps"]
    assert [s["what"] for s in steps] == ["ingested", "legal hold set"]

    released = cli_json("evidence", "hold", "release", artifact_id, "--reason", "case closed")
    assert released["hold"] is None
    again = run_cli("evidence", "hold", "release", artifact_id, "--reason", "twice", check=False)
    assert again.returncode == 2 and "not on hold" in again.stderr

    recorded = [e for e in events(running, 3) if isinstance(e, ArtifactHoldSet | ArtifactHoldReleased)]
    assert [(type(e).__name__, e.reason) for e in recorded] == [
        ("ArtifactHoldSet", "case 2026-CV-0412"),
        ("ArtifactHoldReleased", "case closed"),
    ]
    assert all(e.actor for e in recorded)


def test_a_hold_needs_a_known_artifact_and_a_reason(running: Settings) -> None:
    unknown = run_cli("evidence", "hold", "set", "sha256:" + "0" * 64, "--reason", "x", check=False)
    assert unknown.returncode == 1 and "not" in unknown.stderr
    blank = run_cli("evidence", "hold", "set", "sha256:" + "0" * 64, "--reason", " ", check=False)
    assert blank.returncode == 2 and "--reason" in blank.stderr
