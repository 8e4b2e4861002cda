"""The unexpected: a loop that cannot go on stops the service, loudly; hostile requests and a damaged
Merkle store get JSON errors from the API and one line with a hint from the CLI."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from rocksdict import Options, Rdict

from commands import service
from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from projections.merkle_store import _node_key
from projections.store import wipe
from streams.openapi import PROTECTED
from streams.problems import CONTENT_TYPE as PROBLEM
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import bearer, index_count, produce, submission, wait_for


def put_row(path: Path, key: bytes, value: bytes | None) -> None:
    """Change one row of a RocksDB store behind its writer's back (None deletes it)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(path), options)
    if value is None:
        db.delete(key)
    else:
        db[key] = value
    db.close()


def get(settings: Settings, path: str, *, token: bool = True) -> tuple[int, str, bytes]:
    """GET `path` exactly as written (no normalising of `..` or percent escapes), with the API
    token unless `token` is false."""
    url = urlsplit(settings.api_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.request("GET", path, headers=bearer(settings) if token else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def ingest(settings: Settings, contents: list[bytes]) -> None:
    before = index_count(settings)
    topic = Topics(settings.topic_prefix).submissions
    asyncio.run(produce(settings, topic, [(digest_of(c).encode(), submission(c)) for c in contents]))
    wait_for(lambda: index_count(settings) == before + len(contents), what="ingest")


def test_a_loop_that_cannot_go_on_stops_the_service(settings: Settings) -> None:
    # An index row that no fold ever writes, for an artifact whose blob is there: the ingest loop
    # reads it when the same content is submitted again, and nothing in the code expects that.
    content = b"an artifact whose index row is garbled"
    artifact_id = digest_of(content)
    BlobStore(settings.evidence_path).put(artifact_id, content)
    put_row(settings.index_path, b"a/" + artifact_id.encode(), b"\x00garbled")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.worker"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (service.health(settings) or {}).get("status") == "ok", what="the service")
        asyncio.run(
            produce(settings, Topics(settings.topic_prefix).submissions, [(None, submission(content))])
        )
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert code != 0
    lines = [json.loads(line) for line in (settings.log_path / "service.log").read_text().splitlines()]
    [fatal] = [line for line in lines if line["event"] == "loop cannot go on; the service stops"]
    assert fatal["loop"] == "ingest" and fatal["level"] == "critical"
    assert fatal["error"].startswith("StoreDamaged: ") and "is damaged" in fatal["error"]


ZERO = "sha256:" + "0" * 64
HOSTILE = [
    "/artifacts/..%2F..",
    "/artifacts/../../etc/passwd",
    "/artifacts/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/artifacts/sha256:zz",
    "/artifacts/sha256:zz/meta",
    "/artifacts/" + ZERO,
    "/artifacts/" + ZERO + "/meta",
    "/artifacts?subject=junk",
    "/artifacts?subject=%00%ff",
    "/artifacts?subject=",
    "/artifacts?kind=%ff",
    "/artifacts?kind=",
    "/artifacts",
    "/anchors/junk",
    "/anchors/%ff%fe",
    "/anchors/sha256:",
    "/anchors/..%2F..",
    "/anchors?limit=abc",
    "/anchors?limit=-1",
    "/anchors?limit=%C2%B2",  # a superscript two: a digit to str.isdigit, not to int()
    "/anchors?limit=",
    "/proofs/inclusion/junk?anchor=junk",
    "/proofs/inclusion/" + ZERO + "?anchor=junk",
    "/proofs/inclusion/..%2F..?anchor=..%2F..",
    "/proofs/consistency?old=x&new=y",
    "/proofs/consistency?old=x",
    "/proofs/consistency",
    "/artifacts/sha256:zz/provenance",
    "/artifacts/" + ZERO + "/provenance",
    "/verifications/latest",  # no run yet
    "/verifications/latest?filter=junk",
    "/verifications/junk",
    "/artifacts?subject=" + ZERO + "&subject=" + ZERO,
    "/anchors?limit=1&limt=1",
    "/no/such/route",
]


def protected(path: str) -> bool:
    """Is `path` one of the routes that need the API token (`openapi.PROTECTED`, as templates)?"""
    templates = (re.sub(r"\{[^}]+\}", "[^/]+", t) for t in PROTECTED)
    return any(re.fullmatch(t, urlsplit(path).path) for t in templates)


def test_hostile_requests_and_a_damaged_merkle_store(anchoring: Settings) -> None:
    settings = anchoring
    contents = [b"evidence %d" % i for i in range(8)]
    ingest(settings, contents)
    run_cli("evidence", "anchor", "create")

    for path in HOSTILE:
        for token in (True, False):
            status, content_type, body = get(settings, path, token=token)
            assert 400 <= status < 500 and content_type == PROBLEM, (path, status, body)
            answer = json.loads(body)
            assert answer["error"] and answer["detail"] and b"Traceback" not in body, (path, answer)
            assert answer["status"] == status and b"junk" not in body, (path, answer)  # never echoed
            assert (status == 401) == (not token and protected(path)), (path, token, status)

    # Damage the Merkle store while the service is stopped: delete a node an inclusion proof needs.
    proofs = [json.loads(get(settings, f"/proofs/inclusion/{digest_of(c)}")[2]) for c in contents]
    proof = next(p for p in proofs if p["leaf_index"] ^ 1 < p["tree_size"])
    service.stop(settings)
    put_row(settings.merkle_path, _node_key(proof["partition"], 0, proof["leaf_index"] ^ 1), None)
    service.start(settings)

    status, content_type, body = get(settings, f"/proofs/inclusion/{proof['artifact_id']}")
    answer = json.loads(body)
    assert (status, answer["error"]) == (503, "StoreDamaged") and content_type == PROBLEM
    assert f"Merkle store at {settings.merkle_path} is damaged" in answer["detail"]
    cli = run_cli("evidence", "proof", proof["artifact_id"], check=False)
    assert cli.returncode == 4 and cli.stdout == ""
    [line] = cli.stderr.splitlines()
    assert line.startswith("error: the Merkle store") and "rebuilds it from the log" in line
    assert get(settings, "/healthz")[0] == 200  # the loops go on: they never read old nodes

    # The hint works: without the store, the service rebuilds it from the log.
    service.stop(settings)
    wipe(settings.merkle_path)
    service.start(settings)
    again = ("evidence", "proof", proof["artifact_id"], "--format", "json")
    wait_for(lambda: run_cli(*again, check=False).returncode == 0, what="the Merkle store to be rebuilt")
    assert json.loads(run_cli(*again).stdout) == proof
