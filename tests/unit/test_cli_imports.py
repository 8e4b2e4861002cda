"""Quick commands start fast: they must not import the Kafka, faust or rich stacks.

Each case runs the real command in a fresh interpreter (its own child process), then lists every
module that got imported, so a heavy import added anywhere on the command's path (a top-level
import in `cli/main.py`, `commands/queries.py`, or anything they import) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZERO = "sha256:" + "0" * 64

# Packages that cost tens of milliseconds or more to import and that these commands do not need.
HEAVY = (
    *("faust", "mode", "aiokafka", "aiohttp", "asyncio", "ssl"),
    *("structlog", "rich", "cryptography", "pydantic"),
)

PROBE = """
import json, sys
preload, argv = json.loads(sys.argv[1])
for module in preload:
    __import__(module)
from cli.main import main
sys.argv = ["stella", *argv]
try:
    main()
except SystemExit:
    pass
sys.stdout.write("\\n" + json.dumps(sorted(sys.modules)) + "\\n")
"""


def imported(tmp_path: Path, argv: list[str], preload: tuple[str, ...] = ()) -> set[str]:
    """Every module that `stella ARGV` imports in a fresh interpreter (after importing `preload`)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STELLA_")}
    env["STELLA_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([preload, argv])],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["evidence", "exists", ZERO],
        ["evidence", "exists", ZERO, "--format", "json"],
        ["evidence", "index", "lookup", ZERO],
        ["evidence", "index", "lookup", ZERO, "--format", "json"],
        ["frobnicate"],
    ],
)
def test_quick_commands_import_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    modules = imported(tmp_path, argv)
    assert "cli.main" in modules
    assert heavy(modules) == []


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The guard itself works: a heavy module imported on the way is reported."""
    modules = imported(tmp_path, ["evidence", "exists", ZERO], preload=("streams.kafka",))
    assert {"aiokafka", "asyncio"} <= set(heavy(modules))


# Kafka clients and the service's stacks. (sigstore-python imports `requests` for its online
# clients; offline verification uses its Bundle and Verifier with a trusted root read from a file,
# and test_formats.py verifies a real bundle on a machine with no route to Sigstore.)
NETWORK = ("faust", "mode", "aiokafka", "aiohttp", "kafka", "confluent_kafka")


@pytest.mark.parametrize(
    "argv",
    [
        ["evidence", "verify", "--offline", "--input", "pack.tar.gz"],
        ["replay", "--evidence", "pack.tar.gz", "--output", "verdict.json"],
    ],
)
def test_offline_commands_import_no_kafka_client(tmp_path: Path, argv: list[str]) -> None:
    modules = imported(tmp_path, argv)
    assert "commands.offline" in modules
    assert sorted(m for m in modules if m.split(".")[0] in NETWORK) == []
