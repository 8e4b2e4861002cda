"""Anchors end to end: create, verify, list, export, prove; forgeries, new-chain, a cut log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from locker import anchors, merkle, signing
from locker.config import Settings
from locker.digests import digest_of
from streams.kafka import admin
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import ingest, produce, scrape, wait_for


def cli_json(*args: str, check: bool = True) -> dict:
    return json.loads(run_cli(*args, "--format", "json", check=check).stdout)


def test_anchor_lifecycle(settings: Settings, running: Settings, tmp_path: Path) -> None:
    run_cli("init")  # creates the signing key; the service was started before it existed
    refused = run_cli("evidence", "anchor", "create", check=False)
    assert refused.returncode == 5 and "anchoring is off" in refused.stderr, refused.stderr
    run_cli("service", "restart")
    first = [b"first %d" % i for i in range(30)]
    ingest(running, first)
    a1 = cli_json("evidence", "anchor", "create")
    assert a1["sequence"] == 0 and sum(a1["tree_sizes"].values()) == 30
    second = [b"second %d" % i for i in range(20)]
    ingest(running, second)
    a2 = cli_json("evidence", "anchor", "create")
    assert a2["sequence"] == 1 and sum(a2["tree_sizes"].values()) == 50

    result = cli_json("evidence", "anchor", "verify", "--all")
    assert result["verified"] and result["anchors_checked"] == 2 and result["breaks"] == []
    assert cli_json("evidence", "anchor", "verify", "--latest")["verified"]
    listing = json.loads(run_cli("evidence", "anchor", "list", "--show-links", "--format", "json").stdout)
    assert [row["link"] for row in listing] == ["ok", "ok"]
    assert (
        json.loads(run_cli("evidence", "anchor", "list", "--before", "2000-01-01", "--format", "json").stdout)
        == []
    )
    assert cli_json("evidence", "anchor", "inspect", a1["anchor_id"])["sequence"] == 0

    consistency = cli_json("evidence", "anchor", "consistency", a1["anchor_id"], a2["anchor_id"])
    assert consistency["consistent"]

    # A proof an auditor checks with nothing but the JSON and RFC 6962.
    proof = cli_json("evidence", "proof", digest_of(first[3]))
    value = base64.b64decode(proof["leaf_value"])
    assert json.loads(value)["artifact_id"] == digest_of(first[3])
    leaf = merkle.leaf_hash(value)
    assert base64.b64encode(leaf).decode() == proof["leaf_hash"]
    merkle.verify_inclusion(
        proof["leaf_index"],
        proof["tree_size"],
        leaf,
        [base64.b64decode(p) for p in proof["proof"]],
        base64.b64decode(proof["root"]),
    )
    assert proof["anchor_id"] == a2["anchor_id"]

    # The API serves the same proofs, the anchors and the metrics.
    api = running.api_url
    served = _get_json(f"{api}/proofs/inclusion/{digest_of(first[3])}")
    assert proof == served  # the verifier key included, as the CLI gives it
    assert _get_json(f"{api}/proofs/consistency?old={a1['anchor_id']}&new={a2['anchor_id']}") == consistency
    assert [a["anchor_id"] for a in _get_json(f"{api}/anchors")["anchors"]] == [
        a1["anchor_id"],
        a2["anchor_id"],
    ]
    assert _get_json(f"{api}/anchors/latest")["anchor_id"] == a2["anchor_id"]
    metrics = scrape(running)
    assert metrics["stella_evidence_artifacts_total"] == 50
    assert 0 <= metrics["stella_merkle_anchor_age_seconds"] < 600
    assert metrics["stella_merkle_anchor_chain_broken_links"] == 0

    # The export verifies offline, with a fresh verifier built from the file alone.
    out = tmp_path / "anchor.json"
    run_cli("evidence", "anchor", "export", "--latest", "--output", str(out))
    exported = json.loads(out.read_text())
    verifier = signing.Verifier.from_vkey(exported["verifier_key"])
    record = base64.b64decode(exported["record"])
    assert anchors.anchor_id(record) == a2["anchor_id"]
    assert anchors.check_anchor(anchors.decode(record), a2["anchor_id"], verifier) == []
    # ... and with the CLI on "another machine": another home, no broker, no key of its own.
    elsewhere = {
        **os.environ,
        "STELLA_HOME": str(tmp_path / "auditor"),
        "STELLA_KAFKA__BOOTSTRAP": "127.0.0.1:1",
    }
    trusted = exported["verifier_key"]

    def verify_elsewhere(path: Path) -> subprocess.CompletedProcess[str]:
        argv = ["evidence", "anchor", "verify", "--input", str(path), "--key", trusted, "--format", "json"]
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *argv],
            capture_output=True,
            text=True,
            env=elsewhere,
            timeout=60,
        )

    offline = verify_elsewhere(out)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["verified"]
    record = base64.b64decode(exported["record"]).replace(b'"sequence":1', b'"sequence":7')
    tampered = tmp_path / "tampered.json"
    tampered.write_text(out.read_text().replace(exported["record"], base64.b64encode(record).decode()))
    rejected = verify_elsewhere(tampered)
    assert rejected.returncode == 1 and "signature" in rejected.stdout
    for note, head in zip(exported["checkpoints"], exported["anchor"]["partitions"], strict=True):
        _origin, size, root = signing.parse_checkpoint(signing.open_note(note, verifier))
        assert (size, base64.b64encode(root).decode()) == (head["tree_size"], head["root"])

    # Forged anchors appended with a plain producer: verify names each break, list shows where,
    # and a new chain continuing from the last good anchor verifies again with the break recorded.
    real = signing.load_signer(running.key_file, running.origin)
    rogue = signing.Signer(real.name, Ed25519PrivateKey.generate())
    last_good = a2["anchor_id"]
    forgeries = [
        ("signature", rogue, lambda prev, raw: {"previous": hashlib.sha256(raw).digest()}),
        ("link", real, lambda prev, raw: {"previous": b"\x00" * 32}),
        (
            "monotonic",
            real,
            lambda prev, raw: {
                "previous": hashlib.sha256(raw).digest(),
                "partitions": tuple(
                    anchors.PartitionHead(
                        partition=h.partition,
                        tree_size=max(h.tree_size - 1, 0),
                        root=h.root,
                        last_offset=h.last_offset,
                    )
                    for h in prev.body.partitions
                ),
            },
        ),
    ]
    for check, signer, change in forgeries:
        raw = asyncio.run(_last_raw(running))
        prev = anchors.decode(raw)
        fields = {
            "chain_id": prev.body.chain_id,
            "sequence": prev.body.sequence + 1,
            "created_at": datetime.now(UTC),
            "origin": prev.body.origin,
            "partitions": prev.body.partitions,
            **change(prev, raw),
        }
        forged = anchors.encode(anchors.sign(anchors.AnchorBody(**fields), signer))
        asyncio.run(produce(running, Topics(running.topic_prefix).anchors, [(b"forged", forged)]))
        broken = run_cli("evidence", "anchor", "verify", "--all", check=False)
        assert broken.returncode == 1, check
        assert f"{check}:" in broken.stdout and anchors.anchor_id(forged) in broken.stdout
        links = json.loads(run_cli("evidence", "anchor", "list", "--show-links", "--format", "json").stdout)
        assert links[-1]["anchor_id"] == anchors.anchor_id(forged) and links[-1]["link"].startswith(check)

        new = cli_json("evidence", "anchor", "new-chain", "--reason", f"{check}-break-recovery")
        assert new["sequence"] == 0 and new["previous_chain_anchor"] == last_good
        healed = cli_json("evidence", "anchor", "verify", "--all")
        assert healed["verified"], healed
        assert cli_json("evidence", "anchor", "verify", "--latest")["verified"]
        assert anchors.anchor_id(forged) in {b["anchor"] for b in healed["recorded_breaks"]}
        assert check in {b["check"] for b in healed["recorded_breaks"]}
        last_good = new["anchor_id"]

    # Records deleted from the head of an events partition: the roots no longer match the log.
    partition = next(int(p) for p, size in new["tree_sizes"].items() if size >= 2)
    asyncio.run(_delete_head(running, partition, 1))
    cut = run_cli("evidence", "anchor", "verify", "--all", check=False)
    assert cut.returncode == 1 and "root" in cut.stdout and f"partition {partition}" in cut.stdout


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


async def _last_raw(settings: Settings) -> bytes:
    from streams.anchoring import read_anchors

    stored = anchors.decoded(await read_anchors(settings))
    assert stored
    return stored[-1][0].raw


async def _delete_head(settings: Settings, partition: int, before: int) -> None:
    from aiokafka.admin import RecordsToDelete

    async with admin(settings.acting_as("admin")) as client:  # as an attacker with the broker's keys
        tp = TopicPartition(Topics(settings.topic_prefix).events, partition)
        await client.delete_records({tp: RecordsToDelete(before)})


def test_recover_a_damaged_anchor_from_its_backup(settings: Settings, running: Settings) -> None:
    run_cli("init")
    run_cli("service", "restart")
    ingest(running, [b"r %d" % i for i in range(12)])
    a1 = cli_json("evidence", "anchor", "create")
    assert (running.anchor_backup_path / f"{a1['anchor_id'].removeprefix('sha256:')}.json").exists()

    # The writer's good anchor 2 is in the backup, but what reached the log is damaged; anchor 3
    # links to the good bytes.
    real = signing.load_signer(running.key_file, running.origin)
    raw1 = asyncio.run(_last_raw(running))
    prev = anchors.decode(raw1)

    def body(sequence: int, previous: bytes) -> anchors.AnchorBody:
        return anchors.AnchorBody(
            chain_id=prev.body.chain_id,
            sequence=sequence,
            previous=previous,
            created_at=datetime.now(UTC),
            origin=prev.body.origin,
            partitions=prev.body.partitions,
        )

    good2 = anchors.sign(body(1, hashlib.sha256(raw1).digest()), real)
    raw2 = anchors.encode(good2)
    good2_id = anchors.anchor_id(raw2)
    document = anchors.export_document(anchors.StoredAnchor(-1, raw2), good2, real.verifier.vkey)
    (running.anchor_backup_path / f"{good2_id.removeprefix('sha256:')}.json").write_text(json.dumps(document))
    damaged = raw2.replace(b'"signature":"', b'"signature":"AAAA', 1)
    raw3 = anchors.encode(anchors.sign(body(2, hashlib.sha256(raw2).digest()), real))
    asyncio.run(produce(running, Topics(running.topic_prefix).anchors, [(b"c", damaged), (b"c", raw3)]))

    broken = run_cli("evidence", "anchor", "verify", "--all", check=False)
    assert broken.returncode == 1 and anchors.anchor_id(damaged) in broken.stdout

    refused = run_cli(
        "evidence", "anchor", "recover", "--id", a1["anchor_id"], "--source", "backup", check=False
    )
    assert refused.returncode == 5 and "intact" in refused.stderr
    result = cli_json("evidence", "anchor", "recover", "--id", good2_id, "--source", "backup")
    assert result["recovered"] == good2_id and result["damaged"] == anchors.anchor_id(damaged)

    healed = cli_json("evidence", "anchor", "verify", "--all")
    assert healed["verified"] and healed["breaks"] == []
    assert healed["repaired"] == [
        {"offset": result["replaced_offset"], "damaged": anchors.anchor_id(damaged), "recovered": good2_id}
    ]
    # The writer carries on from the repaired chain.
    a4 = cli_json("evidence", "anchor", "create")
    assert a4["sequence"] == 3 and a4["chain_id"] == prev.body.chain_id
    assert cli_json("evidence", "anchor", "verify", "--all")["verified"]


def test_the_service_anchors_by_itself_after_n_events(
    settings: Settings, locker_env: dict[str, str], monkeypatch
) -> None:
    from commands import service
    from locker import config

    monkeypatch.setenv("STELLA_ANCHORS__EVERYEVENTS", "25")
    run_cli("init")
    s = config.load()
    service.start(s)
    try:
        ingest(s, [b"auto %d" % i for i in range(40)])
        wait_for(
            lambda: len(json.loads(run_cli("evidence", "anchor", "list", "--format", "json").stdout)) >= 1,
            timeout=60,
            what="an automatic anchor",
        )
        assert cli_json("evidence", "anchor", "verify", "--all")["verified"]
    finally:
        service.stop(s)


def test_scheduled_anchors_only_when_the_trees_grew(
    settings: Settings, locker_env: dict[str, str], monkeypatch
) -> None:
    import time

    from commands import service
    from locker import config

    monkeypatch.setenv("STELLA_ANCHORS__INTERVAL", "2")
    run_cli("init")
    s = config.load()
    service.start(s)
    try:
        ingest(s, [b"tick %d" % i for i in range(5)])

        def count() -> int:
            return len(json.loads(run_cli("evidence", "anchor", "list", "--format", "json").stdout))

        wait_for(lambda: count() == 1, timeout=30, what="a scheduled anchor")
        time.sleep(5)  # two more ticks with nothing new: no new anchor
        assert count() == 1
        ingest(s, [b"tock"])
        wait_for(lambda: count() == 2, timeout=30, what="the next scheduled anchor")
    finally:
        service.stop(s)
    # After a restart the writer remembers the last anchor's sizes: still nothing new to anchor.
    service.start(s)
    try:
        time.sleep(5)
        assert count() == 2
    finally:
        service.stop(s)
    assert cli_json("evidence", "anchor", "verify", "--all")["verified"]
