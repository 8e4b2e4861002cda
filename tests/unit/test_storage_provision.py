"""`commands.storage.provision` on real folders: layout, permissions, free space, the config."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from commands import storage
from locker import config
from locker.cas import BlobStore
from locker.errors import Refused, UsageError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STELLA_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("10k", 10 << 10), ("500G", 500 << 30), ("20GB", 20 << 30), ("1.5TiB", 3 << 39)],
)
def test_sizes(text: str, size: int) -> None:
    assert storage.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5X", "-1G", "1.2.3G"])
def test_a_bad_size_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--size"):
        storage.parse_size(text)


def test_provision_prepares_the_layout_and_sets_the_path(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "disk" / "evidence"
    config.ensure_home(home)
    result = storage.provision(config.load(home), "1M", root)
    assert result["path"] == str(root) and result["size_bytes"] == 1 << 20 and result["blobs_present"] == 0
    store = BlobStore(root)
    assert store.tmp.is_dir() and (store.blobs / "ff").is_dir()
    assert stat.S_IMODE(root.stat().st_mode) == 0o750
    assert json.loads((root / storage.MARKER).read_text())["size_bytes"] == 1 << 20
    assert config.load(home).evidence_path == root  # written to the config file
    assert not (root / ".probe").exists()


def test_the_configured_path_is_the_default_and_stays(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config.ensure_home(home)
    settings = config.load(home)
    assert storage.provision(settings, "1K")["path"] == str(settings.evidence_path.resolve())
    assert not settings.config_file.exists()  # nothing to write


def test_not_enough_room_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config.ensure_home(home)
    with pytest.raises(Refused, match=r"less than the 1024\.0 TiB asked for"):
        storage.provision(config.load(home), "1P", tmp_path / "small")


def test_a_file_where_the_root_should_be_is_refused(tmp_path: Path) -> None:
    home, taken = tmp_path / "home", tmp_path / "a-file"
    config.ensure_home(home)
    taken.write_text("x")
    with pytest.raises(Refused, match="not a folder"):
        storage.provision(config.load(home), "1K", taken)
