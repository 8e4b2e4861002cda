"""Evidence formats on a running locker: the describe loop reads each ingested artifact's bytes,
the index gains the subjects and dependencies they name (the producer declared none here), the
API finds the evidence by subject, provenance shows the description, and `export --include-deps`
follows a provenance's dependencies to the evidence about them."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sigstore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.dsse import Envelope

from commands import anchors as anchor_ops
from commands import service
from locker import config, formats
from tests.conftest import run_cli
from tests.integration.helpers import bearer, wait_for
from tests.unit.test_formats import BASE, EXAMPLES, RELEASE, SIGSTORE, SOURCE, statement

pytestmark = pytest.mark.integration


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--format", "json").stdout)


@pytest.fixture
def trusting(
    settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ed25519PrivateKey]:
    """A running service whose trust store holds one key; yields its private half."""
    key = Ed25519PrivateKey.generate()
    store = tmp_path / "trust"
    store.mkdir()
    (store / "ci-release.pem").write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    monkeypatch.setenv("STELLA_FORMATS__TRUSTSTORE", str(store))
    monkeypatch.setenv("STELLA_FORMATS__DESCRIBE", "true")
    staging = Path(sigstore.__file__).parent / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"
    monkeypatch.setenv("STELLA_FORMATS__SIGSTORETRUSTEDROOT", str(staging / "trusted_root.json"))
    anchor_ops.ensure_key(settings)
    service.start(settings)
    try:
        yield key
    finally:
        service.stop(settings)


def ingest(path: Path, kind: str) -> str:
    [row] = cli_json("evidence", "ingest", str(path), "--kind", kind)
    return str(row["artifact_id"])


def described(artifact_id: str) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def done() -> bool:
        holder.update(cli_json("evidence", "inspect", artifact_id))
        return bool(holder.get("format"))

    wait_for(done, what=f"{artifact_id} described")
    return holder


def test_formats_are_described_indexed_and_followed(
    trusting: Ed25519PrivateKey, settings: config.Settings, tmp_path: Path
) -> None:
    payload = json.dumps(statement()).encode()
    pae = Envelope(payload, formats.IN_TOTO_PAYLOAD, {}).pae()
    envelope = {
        "payloadType": formats.IN_TOTO_PAYLOAD,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(trusting.sign(pae)).decode()}],
    }
    (tmp_path / "provenance.dsse.json").write_text(json.dumps(envelope))
    sarif = json.loads((EXAMPLES / "api.scan.sarif.json").read_text())
    sarif["runs"][0]["artifacts"] = [{"location": {"uri": "src.tar"}, "hashes": {"sha-256": SOURCE}}]
    (tmp_path / "source.sarif.json").write_text(json.dumps(sarif))
    (tmp_path / "notes.txt").write_text("release notes, not evidence of any format")

    provenance = ingest(tmp_path / "provenance.dsse.json", "attestation")
    vex = ingest(EXAMPLES / "api.openvex.json", "vex")
    scan = ingest(tmp_path / "source.sarif.json", "scan")
    notes = ingest(tmp_path / "notes.txt", "other")
    sbom = ingest(EXAMPLES / "api.cdx.json", "sbom")
    bundle = ingest(SIGSTORE / "bundle_v3.txt.sigstore", "signature")

    found = described(provenance)
    assert (found["format"], found["predicate_type"]) == ("in-toto", formats.SLSA_V1)
    assert found["signature"] == {
        "status": "verified",
        "signed_by": "ci-release.pem",
        "transparency_log": None,
    }
    assert found["subjects"] == [f"sha256:{RELEASE}"]
    assert found["dependencies"] == sorted([f"sha256:{SOURCE}", f"sha256:{BASE}"])
    assert described(vex)["subjects"] == [f"sha256:{RELEASE}"] and described(vex)["format"] == "openvex"
    assert described(scan)["format"] == "sarif" and described(notes)["format"] == "other"
    assert described(sbom)["format"] == "cyclonedx"
    signed = described(bundle)
    assert (signed["format"], signed["signature"]["status"]) == ("sigstore-bundle", "verified")
    assert signed["signature"]["signed_by"].startswith("william@yossarian.net")
    assert signed["signature"]["transparency_log"] == "rekor log index 25915956"

    # The API finds evidence by the subjects its bytes name.
    url = f"{settings.api_url}/artifacts?subject=sha256:{RELEASE}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(settings)), timeout=10) as resp:
        listed = json.loads(resp.read())
    assert {a["artifact_id"] for a in listed["artifacts"]} == {provenance, vex}
    steps = [s["what"] for s in cli_json("evidence", "provenance", "show", provenance)["steps"]]
    assert steps[:2] == ["ingested", "described as in-toto v1"]

    # Export follows the provenance's dependencies to the scan of its source.
    plain = cli_json(
        "evidence", "export", "--digest", f"sha256:{RELEASE}", "--output", str(tmp_path / "p.tar.gz")
    )
    assert plain["artifacts"] == 2
    deps = tmp_path / "full.tar.gz"
    full = cli_json(
        "evidence", "export", "--digest", f"sha256:{RELEASE}", "--include-deps", "--output", str(deps)
    )
    assert full["artifacts"] == 3
    assert cli_json("evidence", "verify", "--offline", "--input", str(deps))["verified"]
    verdict = tmp_path / "verdict.json"
    cli_json("replay", "--evidence", str(deps), "--output", str(verdict))
    replayed = {a["artifact_id"]: a for a in json.loads(verdict.read_text())["artifacts"]}
    assert set(replayed) == {provenance, vex, scan}
    assert [s["what"] for s in replayed[provenance]["provenance"]][:2] == [
        "ingested",
        "described as in-toto v1",
    ]
    assert hashlib.sha256(deps.read_bytes()).hexdigest() == full["sha256"].removeprefix("sha256:")
    assert replayed[provenance]["signature"]["signed_by"] == "ci-release.pem"

    # Offline, the evidence's own signatures are checked again, with the pack's trust material...
    report = cli_json("evidence", "verify", "--offline", "--input", str(deps))
    signatures = {i["item"]: i for i in report["items"] if i["item"].startswith("signature of")}
    assert signatures == {
        f"signature of {provenance}": {
            "item": f"signature of {provenance}",
            "ok": True,
            "detail": "in-toto: verified by ci-release.pem",
        }
    }
    assert "keys: the pack (1)" in report["trust_source"]
    # ... or with other keys: the signature is then not verified, and the pack fails, naming it.
    other = tmp_path / "other-keys"
    other.mkdir()
    rogue = Ed25519PrivateKey.generate().public_key()
    (other / "rogue.pem").write_bytes(rogue.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    proc = run_cli(
        "evidence",
        "verify",
        "--offline",
        "--input",
        str(deps),
        "--trust-store",
        str(other),
        "--format",
        "json",
        check=False,
    )
    failed = [i for i in json.loads(proc.stdout)["items"] if not i["ok"]]
    assert proc.returncode == 1 and failed == [
        {"item": f"signature of {provenance}", "ok": False, "detail": "in-toto: unverified"}
    ]

    # A Sigstore bundle's pack carries the trusted root; offline, the bundle verifies again.
    bundle_digest = "sha256:" + hashlib.sha256((SIGSTORE / "bundle_v3.txt").read_bytes()).hexdigest()
    signed_pack = tmp_path / "signed.tar.gz"
    cli_json("evidence", "export", "--digest", bundle_digest, "--output", str(signed_pack))
    report = cli_json("evidence", "verify", "--offline", "--input", str(signed_pack))
    [item] = [i for i in report["items"] if i["item"] == f"signature of {bundle}"]
    assert item["ok"] and item["detail"].startswith("sigstore-bundle: verified by william@yossarian.net")
