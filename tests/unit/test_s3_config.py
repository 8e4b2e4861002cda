"""The S3 backend's config and credentials: checked before anything is sent, never shown."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from commands.diagnostics import effective_config, known_secrets
from locker import config
from locker.cas import BlobStore, on_filesystem, open_store
from locker.errors import Refused, UsageError
from locker.files import create_secret
from locker.s3store import ACCESS_KEY_ENV, SECRET_KEY_ENV, S3BlobStore, config_from, credentials_text

SECRET = "s3-secret-that-must-never-show"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STELLA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STELLA_EVIDENCELOCKER__BACKEND", "s3")
    monkeypatch.setenv("STELLA_S3__BUCKET", "evidence")
    monkeypatch.setenv("STELLA_S3__ENDPOINT", "http://127.0.0.1:8333")
    return tmp_path / "home"


def with_credentials(home: Path) -> None:
    create_secret(home / "secrets" / "s3-credentials", credentials_text("AKID-TEST", SECRET))


def test_the_default_backend_is_the_filesystem(tmp_path: Path) -> None:
    settings = config.load(tmp_path)
    store = open_store(settings)
    assert settings.backend == "filesystem" and isinstance(store, BlobStore)
    assert on_filesystem(store, "migrate") is store


def test_an_s3_store_from_the_config_and_a_0600_credentials_file(home: Path) -> None:
    with_credentials(home)
    store = open_store(config.load())
    assert isinstance(store, S3BlobStore) and store.location == "s3://evidence/"
    assert store.where("sha256:" + "ab" * 32) == "s3://evidence/sha256/" + "ab" * 32
    assert SECRET not in repr(store.config)
    again = pickle.loads(pickle.dumps(store))  # to the blob writer's and the checkers' processes
    assert again.config == store.config and again._client is None
    with pytest.raises(Refused, match=r"filesystem blob store.*s3://evidence/"):
        on_filesystem(store, "`stella storage migrate`")


def test_the_environment_gives_credentials_and_a_prefix_gets_its_slash(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ACCESS_KEY_ENV, "from-env")
    monkeypatch.setenv(SECRET_KEY_ENV, SECRET)
    monkeypatch.setenv("STELLA_S3__PREFIX", "locker-1")
    c = config_from(config.load())
    assert (c.access_key_id, c.secret_access_key, c.prefix) == ("from-env", SECRET, "locker-1/")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("STELLA_EVIDENCELOCKER__BACKEND", "gcs", "EvidenceLocker:Backend must be one of filesystem, s3"),
        ("STELLA_S3__BUCKET", "", "S3:Bucket is empty"),
        ("STELLA_S3__BUCKET", "Not_A_Bucket", "not a valid bucket name"),
        ("STELLA_S3__ENDPOINT", "127.0.0.1:8333", "S3:Endpoint must be an http"),
        ("STELLA_S3__ENDPOINT", "http://host/path", "S3:Endpoint must be an http"),
        ("STELLA_S3__PREFIX", "/abs", "S3:Prefix"),
        ("STELLA_S3__PREFIX", "a/../b", "S3:Prefix"),
        ("STELLA_S3__ADDRESSINGSTYLE", "dns", "S3:AddressingStyle"),
        ("STELLA_S3__CONCURRENCY", "0", "S3:Concurrency"),
    ],
)
def test_a_bad_config_is_a_usage_error_naming_the_key(
    home: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str, message: str
) -> None:
    with_credentials(home)
    monkeypatch.setenv(key, value)
    with pytest.raises(UsageError, match=message):
        open_store(config.load())


def test_missing_open_or_incomplete_credentials_are_refused(home: Path) -> None:
    with pytest.raises(UsageError, match=r"no S3 credentials.*s3-credentials"):
        open_store(config.load())
    path = home / "secrets" / "s3-credentials"
    create_secret(path, b'access_key_id = "only-this"\n')
    with pytest.raises(UsageError, match="needs access_key_id and secret_access_key"):
        open_store(config.load())
    path.write_bytes(credentials_text("AKID", SECRET))
    path.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others") as refused:
        open_store(config.load())
    assert SECRET not in str(refused.value)
    path.chmod(0o600)
    path.write_bytes(f'access_key_id = "AKID"\nsecret_access_key = {SECRET}\n'.encode())  # bad TOML
    with pytest.raises(UsageError, match="unusable") as bad:
        open_store(config.load())
    assert SECRET not in str(bad.value)


def test_diagnostics_redact_the_s3_credentials(home: Path) -> None:
    with_credentials(home)
    settings = config.load()
    assert {SECRET.encode(), b"AKID-TEST"} <= known_secrets(settings)
    shown = effective_config(settings)
    assert shown["S3:CredentialsFile"]["value"].endswith("secrets/s3-credentials")
    assert SECRET not in str(shown)
