"""Every class of bad record on every topic the service reads, put there with a plain producer
while it runs: each is dead-lettered with an accurate reason, and the service still ingests,
indexes, anchors and rebuilds.

Classes: a null value (tombstone), empty bytes, invalid UTF-8, 1500 levels of nesting, 1e999, a
5000-digit integer, a repeated key (the last one counts: a repeated `type` naming no type), a field
of the wrong type and an unknown type tag; the last five are made from a valid record of the topic.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

from locker import anchors, verification
from locker.config import Settings
from locker.digests import digest_of
from streams.topics import Topics
from tests.conftest import run_cli
from tests.contract.goldens import golden_bytes
from tests.integration.helpers import dead_letters, index_count, produce, submission, wait_for

# (label, value, the reason the service must give)
Junk = list[tuple[str, bytes | None, str]]


def with_field(record: bytes, field: str, raw_json: bytes) -> bytes:
    """`record` (a JSON object) with `"field": raw_json` appended: a repeated key counts last."""
    assert record.endswith(b"}")
    return record[:-1] + b',"' + field.encode() + b'":' + raw_json + b"}"


def junk(valid: bytes, tag: str, wrong_type: tuple[str, bytes], number: str) -> Junk:
    """Each class of bad record, the structured ones made from `valid` (a record whose type tag is
    `tag`): `wrong_type` is a field and a JSON value of the wrong type, `number` a numeric field."""
    assert f'"type":"{tag}"'.encode() in valid
    return [
        ("null value", None, "undecodable"),
        ("empty bytes", b"", "undecodable"),
        ("invalid UTF-8", with_field(valid, "note", b'"\xff\xfe"'), "undecodable"),
        ("deep nesting", b"[" * 1500 + b"]" * 1500, "undecodable"),
        ("1e999", with_field(valid, number, b"1e999"), "schema-invalid"),
        ("5000-digit integer", with_field(valid, number, b"9" * 5000), "schema-invalid"),
        ("repeated key", with_field(valid, "type", json.dumps(f"{tag}.bogus").encode()), "unknown-type"),
        ("wrong type", with_field(valid, *wrong_type), "schema-invalid"),
        ("unknown type", valid.replace(f'"type":"{tag}"'.encode(), b'"type":"no.such.type"'), "unknown-type"),
    ]


def junk_by_topic(topics: Topics) -> dict[str, Junk]:
    return {
        topics.submissions: junk(submission(b"a template"), "artifact", ("content", b"5"), "schema_version"),
        topics.events: junk(golden_bytes("artifact.ingested"), "artifact.ingested", ("size", b'"x"'), "size"),
        topics.anchors: junk(
            golden_bytes("anchor.created"), "anchor.created", ("checkpoints", b"5"), "schema_version"
        ),
        topics.commands: junk(
            golden_bytes("anchor.create"), "anchor.create", ("command_id", b"5"), "schema_version"
        ),
        topics.verify_tasks: junk(TASK, "verification.task", ("artifacts", b'"x"'), "planned"),
    }


TASK = verification.encode(
    verification.Task(
        run_id="hostile-run",
        mode="full",
        planned=1,
        artifacts=(("sha256:" + "0" * 64, 1),),
        started_at=datetime(2026, 11, 29, tzinfo=UTC),
    )
)


def healthz(settings: Settings) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(settings.api_url + "/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_healthy(settings: Settings) -> None:
    code, body = healthz(settings)
    assert code == 200, body
    assert {name: loop["state"] for name, loop in body["loops"].items()} == dict.fromkeys(
        ("anchors", "ingest", "projections", "verify"), "running"
    )


def cli_json(*args: str, check: bool = True) -> dict:
    return json.loads(run_cli(*args, "--format", "json", check=check).stdout)


def test_bad_records_on_every_topic(anchoring: Settings) -> None:
    settings = anchoring
    topics = Topics(settings.topic_prefix)
    expected: dict[tuple[str, int, int], tuple[str, bytes | None, str]] = {}
    for topic, records in junk_by_topic(topics).items():
        sent = asyncio.run(produce(settings, topic, [(b"junk", value) for _, value, _ in records]))
        for meta, record in zip(sent, records, strict=True):
            expected[(topic, meta.partition, meta.offset)] = record

    # Every bad record is dead-lettered once, unchanged, with the reason its class calls for.
    letters = dead_letters(settings, len(expected))
    got = {(d.source_topic, d.source_partition, d.source_offset): (d, value) for d, value in letters}
    assert got.keys() == expected.keys()
    for where, (label, value, reason) in expected.items():
        letter, kept = got[where]
        assert (where[0], label, letter.reason) == (where[0], label, reason), letter.detail
        assert letter.detail
        assert kept == (value or b"")  # a tombstone's null value is dead-lettered as empty bytes

    # The service goes on: healthy, and what comes after the junk is ingested and indexed.
    assert_healthy(settings)
    good = [b"good evidence %d" % i for i in range(6)]
    asyncio.run(produce(settings, topics.submissions, [(digest_of(g).encode(), submission(g)) for g in good]))
    wait_for(lambda: index_count(settings) == len(good), what="the good submissions to be indexed")
    assert_healthy(settings)

    # Anchoring works; the latest anchor verifies; the whole chain names the junk, not crashing.
    anchor = cli_json("evidence", "anchor", "create")
    assert sum(anchor["tree_sizes"].values()) == len(good) + 2 * 9  # + rejections + junk events
    latest = cli_json("evidence", "anchor", "verify", "--latest")
    assert latest["verified"] and latest["latest"] == anchor["anchor_id"]
    every = run_cli("evidence", "anchor", "verify", "--all", "--format", "json", check=False)
    assert every.returncode == 1, every.stderr
    breaks = json.loads(every.stdout)["breaks"]
    junk_ids = {anchors.anchor_id(value or b"") for _, value, _ in junk_by_topic(topics)[topics.anchors]}
    assert {b["anchor"] for b in breaks} == junk_ids and {b["check"] for b in breaks} == {"decode"}

    # The index has caught up, and a rebuild from offset 0 gives the same index.
    live = cli_json("evidence", "index", "status", "--checksum")
    assert live["lag"] == 0 and live["entries"] == len(good)
    rebuilt = cli_json("evidence", "index", "rebuild")
    assert rebuilt["checksum"] == live["checksum"] and rebuilt["service_restarted"]
    wait_for(lambda: healthz(settings)[0] == 200, what="the restarted service")

    # A well-formed task of a run this locker never planned is refused, not counted.
    sent = asyncio.run(produce(settings, topics.verify_tasks, [(b"junk", TASK)]))
    [(letter, _)] = [
        (d, v) for d, v in dead_letters(settings, len(expected) + 1) if d.source_offset == sent[0].offset
        and d.source_topic == topics.verify_tasks and d.source_partition == sent[0].partition
    ]  # fmt: skip
    assert letter.reason == "unknown-run"

    # Verification works: the junk tasks counted nothing, and a full run checks the good artifacts.
    report = cli_json("evidence", "verify", "--mode", "full")
    assert (report["run"]["planned"], report["run"]["ok"]) == (len(good), len(good))
    hostile = run_cli("evidence", "verify-report", "--run", "hostile-run", "--filter", "ok", check=False)
    assert hostile.returncode in (0, 1, 4) and "Traceback" not in hostile.stderr
    assert_healthy(settings)
