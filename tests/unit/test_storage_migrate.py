"""`commands.storage.migrate` on real folders: copy, verify, switch the config; refuse what is unsafe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commands import storage
from locker import config
from locker.cas import BlobStore
from locker.digests import digest_of
from locker.errors import IntegrityError, Refused, StorageUnavailable

CONTENTS = [b"blob %d" % i * (i + 1) for i in range(40)]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STELLA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    blobs = BlobStore(config.load(home).evidence_path)
    blobs.ensure()
    blobs.put_many([(digest_of(c), c) for c in CONTENTS])
    return home


def test_every_blob_is_copied_verified_and_the_config_follows(home: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    target = tmp_path / "new-disk" / "evidence"
    result = storage.migrate(
        config.load(home), target, progress=lambda done, total: seen.append((done, total))
    )
    assert (result.blobs, result.copied, result.already_there, result.verified) == (40, 40, 0, 40)
    assert result.bytes == sum(len(c) for c in CONTENTS) and result.source == str(home / "evidence")
    assert seen[-1] == (40, 40) and len(seen) == 40
    moved = BlobStore(target)
    assert sorted(moved.iter_ids()) == sorted(digest_of(c) for c in CONTENTS)
    assert moved.tmp_files() == []
    assert config.load(home).evidence_path == target
    assert config.read_file(home / "config.toml") == {"EvidenceLocker:Path": str(target)}
    assert len(list(BlobStore(home / "evidence").iter_ids())) == 40  # the old folder is left alone


def test_an_interrupted_migration_is_run_again(home: Path, tmp_path: Path) -> None:
    target = BlobStore(tmp_path / "new")
    target.ensure()
    target.put_many([(digest_of(c), c) for c in CONTENTS[:15]])
    result = storage.migrate(config.load(home), target.root)
    assert (result.copied, result.already_there, result.verified) == (25, 15, 40)


def test_a_relative_target_is_stored_as_an_absolute_path(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = storage.migrate(config.load(home), Path("rel"))
    assert result.target == str(tmp_path / "rel") == str(config.load(home).evidence_path)


def test_a_damaged_source_blob_stops_the_migration_before_the_config_changes(
    home: Path, tmp_path: Path
) -> None:
    victim = BlobStore(home / "evidence").path(digest_of(CONTENTS[7]))
    victim.chmod(0o644)
    victim.write_bytes(b"bit rot")
    with pytest.raises(IntegrityError) as caught:
        storage.migrate(config.load(home), tmp_path / "new")
    assert str(victim) in str(caught.value) and digest_of(CONTENTS[7]) in str(caught.value)
    assert config.read_file(home / "config.toml") == {}


def test_a_damaged_blob_already_at_the_target_is_named(home: Path, tmp_path: Path) -> None:
    target = BlobStore(tmp_path / "new")
    target.ensure()
    bad = digest_of(CONTENTS[3])
    target.path(bad).write_bytes(b"not it")
    with pytest.raises(IntegrityError, match=bad):
        storage.migrate(config.load(home), target.root)
    assert config.read_file(home / "config.toml") == {}


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_a_target_that_overlaps_the_current_path_is_refused(home: Path, where: str) -> None:
    current = home / "evidence"
    target = {"same": current, "inside": current / "v2", "around": home}[where]
    with pytest.raises(Refused) as caught:
        storage.migrate(config.load(home), target)
    assert caught.value.exit_code == 5 and "EvidenceLocker:Path" in str(caught.value)


def test_refused_while_the_service_runs(home: Path, tmp_path: Path) -> None:
    settings = config.load(home)
    settings.run_path.mkdir(parents=True, exist_ok=True)
    (settings.run_path / "service.pid").write_text(f"{os.getpid()}\n")  # a live process
    with pytest.raises(Refused, match="service is running"):
        storage.migrate(settings, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_no_blob_store_to_migrate_from(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="no blob store"):
        storage.migrate(config.load(tmp_path / "home"), tmp_path / "new")


def test_an_environment_override_is_pointed_out(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__PATH", str(home / "evidence"))
    result = storage.migrate(config.load(home), tmp_path / "new")
    assert "STELLA_EVIDENCELOCKER__PATH overrides the config file" in result.as_dict()["note"]
