from __future__ import annotations

from collections.abc import Iterator

import pytest

from commands import access, service
from commands import anchors as anchor_ops
from locker import config, tokens
from locker.cas import open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(locker_env: dict[str, str]) -> config.Settings:
    s = config.load()
    open_store(s).ensure()
    tokens.create(s.token_file)  # as `stella init` does
    access.set_up(s)
    return s


@pytest.fixture
def running(settings: config.Settings) -> Iterator[config.Settings]:
    """A started service for this test's locker; stopped (and its log shown on failure) after."""
    service.start(settings)
    try:
        yield settings
    finally:
        service.stop(settings)


@pytest.fixture
def anchoring(settings: config.Settings) -> Iterator[config.Settings]:
    """A running service with an anchor signing key."""
    anchor_ops.ensure_key(settings)
    service.start(settings)
    try:
        yield settings
    finally:
        service.stop(settings)
