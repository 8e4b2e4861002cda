"""The service does not trust the log blindly: an `artifact.ingested` whose blob was never stored
(forged, or misrouted) is never reported as present."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from locker.config import Settings
from locker.digests import digest_of
from locker.events import ArtifactIngested, encode
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import index_count, produce, wait_for

pytestmark = pytest.mark.integration


def test_an_ingest_event_without_its_blob_is_reported_blob_missing(running: Settings) -> None:
    content = os.urandom(300)
    forged = ArtifactIngested(
        artifact_id=digest_of(content), size=len(content), kind="sbom", ingested_at=datetime.now(UTC)
    )
    events = Topics(running.topic_prefix).events
    asyncio.run(produce(running, events, [(forged.artifact_id.encode(), encode(forged))]))
    wait_for(lambda: index_count(running) == 1, what="the forged event folded")

    said = run_cli("evidence", "exists", forged.artifact_id, check=False)
    assert said.returncode == 1 and said.stdout.startswith("blob-missing"), said.stdout
    answer = json.loads(
        run_cli("evidence", "exists", forged.artifact_id, "--format", "json", check=False).stdout
    )
    assert (answer["exists"], answer["state"], answer["indexed"]) == (False, "blob-missing", True)

    url = f"{running.api_url}/artifacts/{forged.artifact_id}"
    with urllib.request.urlopen(url + "/meta", timeout=10) as response:
        assert json.loads(response.read())["blob"] == "missing"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 409 and json.loads(refused.value.read())["error"] == "blob-missing"

    verified = run_cli("evidence", "verify", "--mode", "full", "--format", "json", check=False)
    assert verified.returncode == 1
    run = json.loads(verified.stdout)["run"]
    assert run["missing"] == 1
