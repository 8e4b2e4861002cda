"""Evidence packs: exported on a running locker, then verified and replayed with the service stopped
and the broker's address pointing at a closed port. Tampering with any part is named; the same
state exports the same bytes and the same pack replays to the same bytes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commands import service
from commands.broker import free_port
from locker import signing
from locker.config import Settings
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def cli_json(*args: str, check: bool = True) -> Any:
    return json.loads(run_cli(*args, "--format", "json", check=check).stdout)


def ingest(tmp_path: Path, subject: str, n: int, kind: str = "sbom") -> list[str]:
    files = []
    for i in range(n):
        f = tmp_path / f"{subject[7:15]}-{kind}-{i}.json"
        f.write_bytes(json.dumps({"n": i, "noise": os.urandom(8).hex()}).encode())
        files.append(str(f))
    rows = cli_json("evidence", "ingest", *files, "--kind", kind, "--subject", subject)
    return [r["artifact_id"] for r in rows]


def members(pack: Path) -> dict[str, bytes]:
    with tarfile.open(pack, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def repack(members: dict[str, bytes], path: Path) -> Path:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(out.getvalue(), mtime=0))
    return path


def failed_items(pack: Path, *options: str) -> list[str]:
    proc = run_cli(
        "evidence", "verify", "--offline", "--input", str(pack), *options, "--format", "json", check=False
    )
    assert proc.returncode == 1, proc.stderr
    return [f"{i['item']}: {i['detail']}" for i in json.loads(proc.stdout)["items"] if not i["ok"]]


def test_export_verify_offline_and_replay(
    anchoring: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = "sha256:" + hashlib.sha256(b"registry.example.com/app:1.0").hexdigest()
    other = "sha256:" + hashlib.sha256(b"registry.example.com/app:2.0").hexdigest()
    about = ingest(tmp_path, release, 3) + ingest(tmp_path, release, 1, kind="vex")
    bad = ingest(tmp_path, other, 2)
    run_cli("evidence", "mark-corrupted", "--id", bad[0], "--reason", "hash-mismatch")
    run_cli("evidence", "hold", "set", about[0], "--reason", "case 5")  # three events for about[0]
    run_cli("evidence", "hold", "release", about[0], "--reason", "case 5 closed")

    pack = tmp_path / "pack.tar.gz"
    done = cli_json("evidence", "export", "--digest", release, "--output", str(pack))
    assert (done["artifacts"], done["with_blob"]) == (4, 4)
    again = cli_json("evidence", "export", "--digest", release, "--output", str(tmp_path / "again.tar.gz"))
    assert again["sha256"] == done["sha256"] and again["anchor"] == done["anchor"]  # byte-identical
    assert pack.read_bytes() == (tmp_path / "again.tar.gz").read_bytes()
    mixed = tmp_path / "mixed.tar.gz"
    cli_json("evidence", "export", "--digest", other, "--output", str(mixed))
    run_cli("evidence", "anchor", "export", "--latest", "--output", str(tmp_path / "a.json"))
    key = json.loads((tmp_path / "a.json").read_text())["verifier_key"]

    # Offline: no service, and the broker's address is a closed port.
    service.stop(anchoring)
    monkeypatch.setenv("STELLA_KAFKA__BOOTSTRAP", f"127.0.0.1:{free_port()}")
    report = cli_json("evidence", "verify", "--offline", "--input", str(pack), "--trusted-key", key)
    assert report["verified"] and report["key_source"] == "--trusted-key"
    assert (report["artifacts"], report["blobs"], report["subject"]) == (4, 4, release)
    assert all(i["ok"] for i in report["items"]) and {f"blob {i}" for i in about} <= {
        i["item"] for i in report["items"]
    }
    text = run_cli("evidence", "verify", "--offline", "--input", str(pack)).stdout
    assert "verified" in text and "the pack's own" in text

    verdict = tmp_path / "verdict.json"
    replayed = cli_json("replay", "--evidence", str(pack), "--output", str(verdict))
    first = verdict.read_bytes()
    cli_json("replay", "--evidence", str(pack), "--output", str(verdict))
    assert verdict.read_bytes() == first  # the same pack, the same bytes
    document = json.loads(first)
    assert replayed["verdict"] == "pass" and document["anchor"]["id"] == done["anchor"]
    assert {a["artifact_id"]: a["status"] for a in document["artifacts"]} == dict.fromkeys(about, "ingested")
    assert all(a["provenance"][0]["what"] == "ingested" for a in document["artifacts"])
    steps = next(a for a in document["artifacts"] if a["artifact_id"] == about[0])["provenance"]
    assert [s["what"] for s in steps] == ["ingested", "legal hold set", "legal hold released"]

    # A corrupted artifact is in its pack by its events; the replay says so and fails.
    proc = run_cli("replay", "--evidence", str(mixed), "--output", str(tmp_path / "v2.json"), check=False)
    assert proc.returncode == 1
    marked = {a["artifact_id"]: a for a in json.loads((tmp_path / "v2.json").read_text())["artifacts"]}
    assert marked[bad[0]]["status"] == "corrupted" and marked[bad[0]]["verdict"] == "bad"
    assert marked[bad[0]]["blob"] == "not in the pack" and marked[bad[1]]["verdict"] == "good"

    # A key that is not the locker's (same name): the anchor does not verify. A garbled key: exit 2.
    rogue = signing.Signer(key.split("+")[0], Ed25519PrivateKey.generate()).verifier.vkey
    found = failed_items(pack, "--trusted-key", rogue)
    assert len(found) == 1 and found[0].startswith(f"anchor {done['anchor']}: does not verify"), found
    garbled = run_cli(
        "evidence",
        "verify",
        "--offline",
        "--input",
        str(pack),
        "--trusted-key",
        key[:-4] + "AAA=",
        check=False,
    )
    assert garbled.returncode == 2 and "--trusted-key" in garbled.stderr

    # Tamper with each part: verification names it.
    good = members(pack)
    blob = f"blobs/sha256/{about[0][7:]}"
    [events_name] = [n for n in good if n.startswith("events/")]
    lines = [json.loads(line) for line in good[events_name].splitlines()]

    def with_lines(changed: list[dict[str, Any]]) -> bytes:
        return b"".join(json.dumps(h, separators=(",", ":")).encode() + b"\n" for h in changed)

    tampered_blob = {**good, blob: good[blob][:-1] + b"!"}
    assert any(
        f"blob {about[0]}: does not hash" in f
        for f in failed_items(repack(tampered_blob, tmp_path / "t1.tar.gz"))
    )

    event_changed = json.loads(json.dumps(lines))
    value = json.loads(base64.b64decode(event_changed[0]["events"][0]["value"]))
    value["size"] += 1
    event_changed[0]["events"][0]["value"] = base64.b64encode(json.dumps(value).encode()).decode()
    found = failed_items(repack({**good, events_name: with_lines(event_changed)}, tmp_path / "t2.tar.gz"))
    assert any(f"events of {lines[0]['artifact_id']}: " in f and "proof fails" in f for f in found), found

    proof_changed = json.loads(json.dumps(lines))
    target = next(h for h in proof_changed if h["events"][0]["proof"])
    target["events"][0]["proof"][0] = base64.b64encode(b"\0" * 32).decode()
    found = failed_items(repack({**good, events_name: with_lines(proof_changed)}, tmp_path / "t3.tar.gz"))
    assert any(f"events of {target['artifact_id']}: " in f and "proof fails" in f for f in found), found

    document_changed = json.loads(good["anchor.json"])
    record = json.loads(base64.b64decode(document_changed["record"]))
    record["checkpoints"][0] = record["checkpoints"][0].replace("\n", "\n\n", 1)
    document_changed["record"] = base64.b64encode(json.dumps(record).encode()).decode()
    found = failed_items(
        repack({**good, "anchor.json": json.dumps(document_changed).encode()}, tmp_path / "t4.tar.gz")
    )
    assert any(f.startswith("anchor ") and "checkpoint" in f for f in found), found

    manifest_changed = good["manifest.json"].replace(b'"kind":"vex"', b'"kind":"sbom"')
    assert manifest_changed != good["manifest.json"]
    found = failed_items(repack({**good, "manifest.json": manifest_changed}, tmp_path / "t5.tar.gz"))
    assert found == ["manifest: its signature does not verify with the trusted key"], found

    # Reordered events: the pack no longer verifies, and replay refuses it.
    reordered = json.loads(json.dumps(lines))
    held = next(h for h in reordered if h["artifact_id"] == about[0])
    assert [json.loads(base64.b64decode(e["value"]))["type"] for e in held["events"]] == [
        "artifact.ingested",
        "artifact.hold_set",
        "artifact.hold_released",
    ]
    held["events"].reverse()
    shuffled = repack({**good, events_name: with_lines(reordered)}, tmp_path / "t6.tar.gz")
    assert failed_items(shuffled)
    proc = run_cli("replay", "--evidence", str(shuffled), "--output", str(tmp_path / "v3.json"), check=False)
    assert proc.returncode == 5 and "pack-unverified" in proc.stderr and not (tmp_path / "v3.json").exists()
