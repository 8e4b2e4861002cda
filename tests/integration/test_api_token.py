"""The HTTP API beyond loopback needs its token; the token is the owner's alone and never printed."""

from __future__ import annotations

import json

import pytest

from commands import service
from locker.config import Settings
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_the_service_refuses_to_listen_beyond_loopback_without_a_token(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = settings.token_file.read_text().strip()
    settings.token_file.unlink()
    monkeypatch.setenv("STELLA_SERVICE__HOST", "0.0.0.0")
    refused = run_cli("service", "start", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "beyond loopback" in refused.stderr and "`stella init`" in refused.stderr

    made = json.loads(run_cli("init", "--format", "json").stdout)
    assert made["api_token_created"] is True and made["api_token_file"] == str(settings.token_file)
    assert oct(settings.token_file.stat().st_mode & 0o777) == "0o600"
    new_token = settings.token_file.read_text().strip()
    assert new_token != token and new_token not in json.dumps(made)  # never printed
    try:
        run_cli("service", "start")
        assert service.health(settings) is not None
    finally:
        service.stop(settings)
    log = (settings.log_path / "service.log").read_text()
    assert new_token not in log
