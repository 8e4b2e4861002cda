"""Small real-Kafka helpers for integration tests."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from locker import config, submissions
from locker.config import Settings
from locker.digests import digest_of
from locker.dlq import DeadLetter
from locker.errors import InvalidInput
from locker.events import Event, decode
from projections.store import IndexStore
from streams.kafka import assign_all, consumer, producer
from streams.topics import Topics


def use_broker(monkeypatch: pytest.MonkeyPatch, bootstrap: str, env: dict[str, str]) -> Settings:
    """Point this test's locker at a broker (or cluster) of its own, with its login `env`
    (`LocalBroker.client_env`); the settings that gives."""
    monkeypatch.setenv("STELLA_KAFKA__BOOTSTRAP", bootstrap)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return config.load()


def submission(content: bytes, **fields: object) -> bytes:
    return submissions.encode(
        submissions.ArtifactSubmission(
            content=content,
            digest=digest_of(content),
            submission_id=submissions.new_submission_id(),
            **fields,
        )
    )


async def produce(
    settings: Settings, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
) -> list[Any]:
    """Send `records` (key, value; a None value is a tombstone); their `RecordMetadata`, in order.
    As the admin, who may write any topic: tests plant records as a compromised writer would
    (test_kafka_acls.py checks who may write what)."""
    async with producer(settings.acting_as("admin"), linger_ms=20) as p:
        acks = [await p.send(topic, key=k, value=v) for k, v in records]
        return list(await asyncio.gather(*acks))


async def read_all(settings: Settings, topic: str, expect: int, timeout: float = 60) -> list:
    """Read at least `expect` records of `topic` from the beginning (or fail after `timeout`)."""
    out = []
    async with consumer(settings) as c:
        tps = await assign_all(c, topic)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for records in (await c.getmany(timeout_ms=500)).values():
                out.extend(records)
    assert len(out) >= expect, f"only {len(out)} of {expect} records on {topic}"
    return out


def events(settings: Settings, expect: int) -> list[Event]:
    """The valid events on the events topic (records that are not events are skipped)."""
    records = asyncio.run(read_all(settings, Topics(settings.topic_prefix).events, expect))
    out = []
    for r in records:
        try:
            out.append(decode(r.value))
        except InvalidInput:
            continue
    return out


def dead_letters(settings: Settings, expect: int) -> list[tuple[DeadLetter, bytes]]:
    records = asyncio.run(read_all(settings, Topics(settings.topic_prefix).dlq, expect))
    return [(DeadLetter.from_headers(list(r.headers)), r.value) for r in records]


def ingest(settings: Settings, contents: Sequence[bytes]) -> None:
    """Submit `contents` and wait until the index holds them."""
    before = index_count(settings)
    topic = Topics(settings.topic_prefix).submissions
    asyncio.run(produce(settings, topic, [(digest_of(c).encode(), submission(c)) for c in contents]))
    wait_for(lambda: index_count(settings) == before + len(contents), what="ingest")


def wait_for(predicate: Callable[[], bool], timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def index_count(settings: Settings) -> int:
    with IndexStore(settings.index_path, readonly=True) as index:
        return index.count()


def assert_trees_match_the_log(settings: Settings) -> None:
    """Every partition's stored Merkle tree is exactly the RFC 6962 tree of its records."""
    from projections.merkle_store import MerkleStore
    from tests.unit.merkle_reference import mth

    topic = Topics(settings.topic_prefix).events
    with MerkleStore(settings.merkle_path, readonly=True) as trees:
        expected = sum(trees.tree_size(p) for p in range(settings.partitions))
        records = asyncio.run(read_all(settings, topic, expected))
        for partition in range(settings.partitions):
            values = [r.value for r in sorted(records, key=lambda r: r.offset) if r.partition == partition]
            assert trees.tree_size(partition) == len(values), partition
            assert trees.root(partition) == mth(values), partition


def bearer(settings: Settings) -> dict[str, str]:
    """The header that carries the API token (the routes that list artifacts ask for it)."""
    return {"Authorization": "Bearer " + settings.token_file.read_text().strip()}


def scrape(settings: Settings) -> dict[str, float]:
    """The service's /metrics, parsed by the Prometheus client's parser: `name` or
    `name{label="value",...}` (labels in name order) -> value."""
    with urllib.request.urlopen(settings.api_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
