"""`locker.config`: defaults < file < environment < flags."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from locker import config
from locker.errors import StorageUnavailable, UsageError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STELLA_") or name == "XDG_DATA_HOME":
            monkeypatch.delenv(name)


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def test_defaults(tmp_path: Path) -> None:
    s = config.load(tmp_path)
    assert s.bootstrap == "127.0.0.1:9092"
    assert s.partitions == 4
    assert s.max_content_bytes == 8 * 1024 * 1024
    assert s.topic_prefix == ""
    assert s.evidence_path == tmp_path / "evidence"
    assert s.state_path == tmp_path / "state"
    assert s.config_file == tmp_path / "config.toml"
    assert s.api_url == "http://127.0.0.1:8470"
    assert s.timeout == 30.0
    assert s.sources["Kafka:Bootstrap"] == "default"


def test_precedence_default_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, '[Kafka]\nBootstrap = "file:1"\nPartitions = 6\nGroupId = "file-group"\n')
    monkeypatch.setenv("STELLA_KAFKA__BOOTSTRAP", "env:2")
    monkeypatch.setenv("STELLA_KAFKA__PARTITIONS", "8")
    s = config.load(tmp_path, flags={"kafka:bootstrap": "flag:3", "Kafka:Partitions": None})
    assert s.bootstrap == "flag:3"
    assert s.sources["Kafka:Bootstrap"] == "flag"
    assert s.partitions == 8  # a None flag does not override
    assert s.sources["Kafka:Partitions"] == "env STELLA_KAFKA__PARTITIONS"
    assert s.group_id == "file-group"
    assert s.sources["Kafka:GroupId"] == "file"
    assert s.get("Service:Port") == 8470
    assert s.sources["Service:Port"] == "default"


def test_env_names_are_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("stella_service__port", "9000")
    assert config.load(tmp_path).get("service:port") == 9000


def test_bootstrap_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, '[Kafka]\nBootstrap = "file:1"\n')
    monkeypatch.setenv("STELLA_KAFKA_BOOTSTRAP", "alias:9")
    s = config.load(tmp_path)
    assert s.bootstrap == "alias:9"
    assert s.sources["Kafka:Bootstrap"] == "env STELLA_KAFKA_BOOTSTRAP"
    assert config.load(tmp_path, flags={"Kafka:Bootstrap": "flag:3"}).bootstrap == "flag:3"


def test_evidence_path_from_file(tmp_path: Path) -> None:
    write_config(tmp_path, f'[EvidenceLocker]\nPath = "{tmp_path / "elsewhere"}"\n')
    assert config.load(tmp_path).evidence_path == tmp_path / "elsewhere"


def test_home_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert config.default_home() == tmp_path / "xdg" / "stella"
    monkeypatch.setenv("STELLA_HOME", str(tmp_path / "home"))
    assert config.default_home() == tmp_path / "home"
    assert config.load().home == tmp_path / "home"


def test_unknown_key_in_flags(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown config key"):
        config.load(tmp_path, flags={"Kafka:Bootstrapp": "x"})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    write_config(tmp_path, "[Kafka]\nColour = 'blue'\n")
    with pytest.raises(UsageError, match="unknown config key"):
        config.load(tmp_path)


def test_unknown_env_vars_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLA_KAFKA__COLOUR", "blue")
    assert config.load(tmp_path).bootstrap == "127.0.0.1:9092"


def test_unknown_key_in_write_value_and_get(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        config.write_value(tmp_path, "Nope:Key", "1")
    with pytest.raises(UsageError):
        config.load(tmp_path).get("Nope:Key")
    assert not (tmp_path / "config.toml").exists()


def test_int_coercion_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="must be an integer"):
        config.load(tmp_path, flags={"Kafka:Partitions": "four"})
    monkeypatch.setenv("STELLA_SERVICE__PORT", "eighty")
    with pytest.raises(UsageError, match="must be an integer"):
        config.load(tmp_path)
    monkeypatch.delenv("STELLA_SERVICE__PORT")
    write_config(tmp_path, '[Kafka]\nPartitions = "many"\n')
    with pytest.raises(UsageError, match="must be an integer"):
        config.load(tmp_path)
    with pytest.raises(UsageError, match="must be an integer"):
        config.write_value(tmp_path, "Kafka:Partitions", "1.5")


def test_int_values_are_coerced(tmp_path: Path) -> None:
    s = config.load(tmp_path, flags={"Kafka:Partitions": "12", "Kafka:TopicPrefix": 7})
    assert s.partitions == 12 and s.get("Kafka:Partitions") == 12
    assert s.topic_prefix == "7"


@pytest.mark.parametrize("text", ["[Kafka\n", "Bootstrap = 'x'\n"])
def test_bad_file_is_a_usage_error(tmp_path: Path, text: str) -> None:
    write_config(tmp_path, text)
    with pytest.raises(UsageError):
        config.load(tmp_path)


def test_bad_file_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[Kafka\n")
    with pytest.raises(UsageError, match=re.escape(f"config file {path} is not valid TOML: ") + ".*line 1"):
        config.load(tmp_path)
    path.write_bytes(b"[Kafka]\nBootstrap = '\xff'\n")
    with pytest.raises(UsageError, match=re.escape(f"config file {path} is not UTF-8 text")):
        config.load(tmp_path)
    path.unlink()
    path.mkdir()
    with pytest.raises(UsageError, match=re.escape(f"config file {path} is a folder")):
        config.load(tmp_path)
    with pytest.raises(UsageError, match="is a folder"):
        config.write_value(tmp_path, "Kafka:Bootstrap", "x")


def test_a_missing_home_is_fine_for_reading_and_is_not_created(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    assert config.load(home).home == home
    assert not (tmp_path / "a").exists()


def test_a_home_that_is_not_a_folder_is_unusable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    for bad in (home, home / "below"):
        with pytest.raises(StorageUnavailable, match=re.escape(f"locker home {bad}")):
            config.load(bad)
        with pytest.raises(StorageUnavailable, match=re.escape(f"locker home {bad}")):
            config.ensure_home(bad)
        with pytest.raises(StorageUnavailable):
            config.write_value(bad, "Kafka:Bootstrap", "x")
    assert StorageUnavailable.exit_code == 4


def test_ensure_home_creates_the_folder(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    config.ensure_home(home)
    config.ensure_home(home)
    assert home.is_dir()


def test_write_value_round_trips_and_keeps_other_keys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert (
        config.write_value(home, "kafka:bootstrap", 'broker:9092 "quoted" \\ é')
        == 'broker:9092 "quoted" \\ é'
    )
    assert config.write_value(home, "Kafka:Partitions", "16") == 16
    assert config.write_value(home, "Service:Port", "8000") == 8000
    assert config.write_value(home, "Service:Port", "8001") == 8001
    assert config.read_file(home / "config.toml") == {
        "Kafka:Bootstrap": 'broker:9092 "quoted" \\ é',
        "Kafka:Partitions": 16,
        "Service:Port": 8001,
    }
    s = config.load(home)
    assert s.bootstrap == 'broker:9092 "quoted" \\ é'
    assert s.partitions == 16
    assert s.sources["Service:Port"] == "file"
    assert not list(home.glob("*.tmp"))


def test_write_value_with_non_bmp_text(tmp_path: Path) -> None:
    config.write_value(tmp_path, "Kafka:TopicPrefix", "pre\U0001f600.")
    assert config.load(tmp_path).topic_prefix == "pre\U0001f600."


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1000, 8 * 1024 * 1024, 8 * 1024 * 1024 + 1])
def test_max_message_bytes_fits_base64(size: int) -> None:
    assert config.max_message_bytes(size) >= len(base64.b64encode(b"\0" * size)) + 1024


def test_max_message_bytes_for_8_mib() -> None:
    eight = 8 * 1024 * 1024
    assert config.max_message_bytes(eight) >= len(base64.b64encode(bytes(eight)))
    assert config.max_message_bytes(eight) == 4 * -(-eight // 3) + 64 * 1024


@pytest.mark.parametrize("value", ["3.7", "true", "", "0x10"])
def test_integer_keys_refuse_non_integers_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STELLA_KAFKA__PARTITIONS", value)
    with pytest.raises(UsageError):
        config.load(tmp_path)


@pytest.mark.parametrize("value", ["Partitions = 3.7", "Partitions = true"])
def test_integer_keys_refuse_toml_floats_and_booleans(tmp_path: Path, value: str) -> None:
    (tmp_path / "config.toml").write_text(f"[Kafka]\n{value}\n")
    with pytest.raises(UsageError):
        config.load(tmp_path)


def test_the_canonical_variable_wins_over_the_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLA_KAFKA__BOOTSTRAP", "canonical:1")
    monkeypatch.setenv("STELLA_KAFKA_BOOTSTRAP", "alias:2")
    settings = config.load(tmp_path)
    assert settings.bootstrap == "canonical:1"
    assert settings.sources["Kafka:Bootstrap"] == "env STELLA_KAFKA__BOOTSTRAP"
