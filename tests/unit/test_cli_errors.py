"""The real `stella` in a child process: exit codes, and one line on stderr for every error.

No broker is needed: each case fails (or answers) before anything talks to Kafka.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZERO = "sha256:" + "0" * 64
EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # of b""
DAC_CAPS = "-dac_override,-dac_read_search"


def stella(home: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `stella ARGS` with `home` as STELLA_HOME and no other STELLA_ variable."""
    return python(home, "-m", "cli.main", *args, prefix=prefix)


def python(home: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` with `home` as STELLA_HOME and no other STELLA_ variable."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STELLA_")}
    env["STELLA_HOME"] = str(home)
    return subprocess.run(
        [*prefix, sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def assert_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """`proc` exited `code` with exactly one line on stderr, `error: ...`, holding each fragment."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh locker home that does not exist yet."""
    return tmp_path / "home"


@pytest.fixture
def unprivileged() -> tuple[str, ...]:
    """A command prefix under which permission bits hold, for root too (by dropping its overrides)."""
    if os.geteuid() != 0:
        return ()
    prefix = ("setpriv", f"--bounding-set={DAC_CAPS}", f"--inh-caps={DAC_CAPS}", "--")
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], check=False).returncode:
        pytest.skip("running as root, and setpriv cannot drop root's permission overrides here")
    return prefix


# Usage errors: exit 2. --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["evidence", "frobnicate"], "No such command 'frobnicate'"),
        (["evidence", "exists", "--format", "xml", ZERO], "'--format'"),
        (["evidence", "exists", "--bogus", ZERO], "No such option: --bogus"),
        (["evidence", "exists"], "Missing argument"),
        (["evidence", "anchor", "new-chain"], "Missing option '--reason'"),
        (["evidence", "anchor", "list", "--before", "yesterday"], "'--before'"),
        (["evidence", "anchor", "verify"], "give exactly one of"),  # a LockerError (UsageError)
        (["config", "get", "Kafka:Colour"], "unknown config key"),  # a LockerError (UsageError)
    ],
)
def test_usage_errors_exit_2_with_one_line(home: Path, args: list[str], fragment: str) -> None:
    proc = stella(home, *args)
    assert_error(proc, 2, fragment)
    assert proc.stdout == ""


def test_no_command_shows_the_help_and_exits_2(home: Path) -> None:
    proc = stella(home)
    assert "Usage:" in proc.stdout and "evidence" in proc.stdout
    assert_error(proc, 2, "Missing command")


@pytest.mark.parametrize("args", [["--help"], ["evidence", "--help"], ["evidence", "exists", "--help"]])
def test_help_exits_0(home: Path, args: list[str]) -> None:
    proc = stella(home, *args)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("Usage:")


# LockerErrors and answers. ----------------------------------------------------------------------
def test_a_malformed_id_is_refused(home: Path) -> None:
    """A malformed id is "bad input", exit 5 (README, "Exit codes"), as for every digest."""
    assert_error(stella(home, "evidence", "exists", "not-a-digest"), 5, "invalid-digest", "not-a-digest")


def test_exists_in_a_fresh_home_says_no_and_creates_nothing(home: Path) -> None:
    proc = stella(home, "evidence", "exists", ZERO)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "not found\n", "")
    answer = json.loads(stella(home, "evidence", "exists", ZERO, "--format", "json").stdout)
    assert answer == {
        "artifact_id": ZERO,
        "exists": False,
        "state": "not-found",
        "indexed": False,
        "blob_present": False,
    }
    assert not home.exists()  # read-only queries make no folders


def test_lookup_of_a_missing_artifact(home: Path) -> None:
    assert_error(stella(home, "evidence", "index", "lookup", ZERO), 1, f"artifact {ZERO} not found")


def test_config_round_trip_in_json(home: Path) -> None:
    stored = json.loads(stella(home, "config", "set", "Kafka:Bootstrap", "b:1", "--format", "json").stdout)
    assert stored == {"key": "Kafka:Bootstrap", "value": "b:1", "file": str(home / "config.toml")}
    got = json.loads(stella(home, "config", "get", "Kafka:Bootstrap", "--format", "json").stdout)
    assert got == {"key": "Kafka:Bootstrap", "value": "b:1"}


# A bad config file: exit 2. A home that cannot be used: exit 4. ---------------------------------
def test_config_file_that_is_not_toml(home: Path) -> None:
    home.mkdir()
    (home / "config.toml").write_text("[Kafka\n")
    proc = stella(home, "evidence", "exists", ZERO)
    assert "line 1" in assert_error(proc, 2, str(home / "config.toml"), "not valid TOML")


def test_config_file_that_is_not_text(home: Path) -> None:
    home.mkdir()
    (home / "config.toml").write_bytes(b"[Kafka]\nBootstrap = '\xff'\n")
    assert_error(stella(home, "config", "list"), 2, str(home / "config.toml"), "not UTF-8")


def test_config_file_that_is_a_folder(home: Path) -> None:
    (home / "config.toml").mkdir(parents=True)
    assert_error(stella(home, "evidence", "exists", ZERO), 2, str(home / "config.toml"), "is a folder")
    assert_error(stella(home, "config", "set", "Kafka:Bootstrap", "x"), 2, "is a folder")


def test_config_file_that_cannot_be_read(home: Path, unprivileged: tuple[str, ...]) -> None:
    home.mkdir()
    config = home / "config.toml"
    config.write_text("[Kafka]\nBootstrap = 'x'\n")
    config.chmod(0)
    proc = stella(home, "evidence", "exists", ZERO, prefix=unprivileged)
    assert_error(proc, 2, str(config), "Permission denied")


@pytest.mark.parametrize(
    "args",
    [
        ["evidence", "exists", ZERO],
        ["evidence", "index", "lookup", ZERO],
        ["config", "list"],
        ["config", "set", "Kafka:Bootstrap", "x"],
        ["init"],
    ],
)
def test_home_that_is_a_file(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder\n")
    assert_error(stella(home, *args), 4, f"locker home {home} is not a folder")
    assert_error(stella(home / "below", *args), 4, f"locker home {home / 'below'}", "Not a directory")


def test_home_that_is_not_writable(home: Path, unprivileged: tuple[str, ...]) -> None:
    home.mkdir()
    home.chmod(0o555)
    set_key = ("config", "set", "Kafka:Bootstrap", "x")
    assert_error(stella(home, *set_key, prefix=unprivileged), 4, f"locker home {home} is not writable")
    assert_error(stella(home, "init", prefix=unprivileged), 4, f"locker home {home} is not writable")
    below = home / "below"
    assert_error(stella(below, *set_key, prefix=unprivileged), 4, f"cannot create locker home {below}")
    assert stella(home, "evidence", "exists", ZERO, prefix=unprivileged).returncode == 1  # reading works


# Damaged local state: one line with a hint, never a traceback. ----------------------------------
def put_row(path: Path, key: bytes, value: bytes) -> None:
    """Write one row into a RocksDB store behind its writer's back (a damaged store)."""
    from rocksdict import Options, Rdict

    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(path), options)
    db[key] = value
    db.close()


def test_a_damaged_merkle_store_is_one_line_with_how_to_rebuild_it(home: Path) -> None:
    store = home / "state" / "merkle"
    put_row(store, b"~pos/00000", b"not a number")
    line = assert_error(stella(home, "evidence", "index", "status"), 4, f"Merkle store at {store} is damaged")
    assert "start the service, which rebuilds it from the log" in line


def test_anything_unexpected_is_still_one_line(home: Path) -> None:
    # A bug stands in for the unexpected: the query raises what no code path expects.
    bug = (
        "import sys, commands.queries as q\n"
        "def find(*a, **k): raise KeyError('a bug')\n"
        "q.find = find\n"
        f"sys.argv = ['stella', 'evidence', 'inspect', '{ZERO}']\n"
        "import cli.main; cli.main.main()\n"
    )
    line = assert_error(python(home, "-c", bug), 1, "unexpected KeyError")
    assert "STELLA_TRACEBACK=1" in line


def test_an_anchor_id_is_never_a_path_or_a_pattern(home: Path) -> None:
    for anchor_id in ("../../etc/passwd", "*", "sha256:"):
        assert_error(stella(home, "evidence", "anchor", "recover", "--id", anchor_id), 5, "invalid-digest")


# storage migrate: no broker needed. -------------------------------------------------------------
def test_storage_migrate(home: Path, tmp_path: Path) -> None:
    from locker.cas import BlobStore

    blobs = BlobStore(home / "evidence")
    blobs.ensure()
    blobs.put(EMPTY, b"")
    target = tmp_path / "elsewhere"
    done = json.loads(stella(home, "storage", "migrate", "--to", str(target), "--format", "json").stdout)
    assert done["target"] == str(target) and done["copied"] == done["verified"] == 1
    got = json.loads(stella(home, "config", "get", "EvidenceLocker:Path", "--format", "json").stdout)
    assert got["value"] == str(target)
    assert_error(stella(home, "storage", "migrate", "--to", str(target)), 5, "is EvidenceLocker:Path already")
    assert_error(stella(home, "storage", "migrate"), 2, "Missing option '--to'")
