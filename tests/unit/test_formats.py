"""Evidence formats (`locker.formats`): real-format samples made for the tests are recognised with
the right subjects, dependencies and signature status; anything else is `other`, never an error."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sigstore
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]
from sigstore.models import TrustedRoot

from locker import formats
from locker.formats import TrustedKey, describe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "evidence"
RELEASE = "d20141dbeaeb24ed0d7bbc855d6b7f7c4bfce46b85d8b851f36ad8a47db7b7d1"
SOURCE = hashlib.sha256(b"source tarball").hexdigest()
BASE = hashlib.sha256(b"base image").hexdigest()


def statement(
    predicate_type: str = formats.SLSA_V1, predicate: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "_type": formats.STATEMENT_V1,
        "subject": [{"name": "registry.example.com/shop/api", "digest": {"sha256": RELEASE}}],
        "predicateType": predicate_type,
        "predicate": predicate
        or {
            "buildDefinition": {
                "buildType": "https://example.com/ci/build@v1",
                "resolvedDependencies": [
                    {"uri": "git+https://git.example.com/shop/api", "digest": {"sha256": SOURCE}},
                    {"uri": "oci://base", "digest": {"sha256": BASE, "sha512": "00"}},
                    {"uri": "no digest"},
                ],
            },
            "runDetails": {"builder": {"id": "https://ci.example.com/runners/42"}},
        },
    }


def envelope(payload: dict[str, Any], sign: Any, keyid: str = "") -> bytes:
    raw = json.dumps(payload).encode()
    pae = Envelope(raw, formats.IN_TOTO_PAYLOAD, {}).pae()
    sig = base64.b64encode(sign(pae)).decode()
    body = {"payloadType": formats.IN_TOTO_PAYLOAD, "payload": base64.b64encode(raw).decode()}
    return json.dumps({**body, "signatures": [{"keyid": keyid, "sig": sig}]}).encode()


def test_a_signed_in_toto_statement_in_dsse() -> None:
    key = Ed25519PrivateKey.generate()
    found = describe(envelope(statement(), key.sign), [TrustedKey("ci.pem", key.public_key())])
    assert (found.format, found.format_version, found.predicate_type) == ("in-toto", "v1", formats.SLSA_V1)
    assert found.subjects == (f"sha256:{RELEASE}",)
    assert found.dependencies == tuple(sorted((f"sha256:{SOURCE}", f"sha256:{BASE}")))
    assert (found.signature, found.signed_by) == ("verified", "ci.pem")


def test_an_ecdsa_signature_with_its_key_id_and_one_that_does_not_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    keyid = SSlibKey.from_crypto(key.public_key()).keyid
    signed = envelope(statement(), lambda data: key.sign(data, ec.ECDSA(ec.hashes.SHA256())), keyid)
    trusted = [
        TrustedKey("other.pem", Ed25519PrivateKey.generate().public_key()),
        TrustedKey("ci.pem", key.public_key()),
    ]
    assert describe(signed, trusted).signature == "verified"
    document = json.loads(signed)
    forged = statement()
    forged["subject"][0]["digest"]["sha256"] = BASE  # the payload changed, the signature did not
    document["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
    found = describe(json.dumps(document).encode(), trusted)
    assert (found.signature, found.signed_by, found.subjects) == ("failed", "ci.pem", (f"sha256:{BASE}",))
    assert describe(signed, []).signature == "unverified"  # no trusted key at all


def test_unsigned_and_older_statements_and_slsa_v02_materials() -> None:
    bare = describe(json.dumps(statement()).encode())
    assert (bare.format, bare.signature) == ("in-toto", "none") and bare.subjects == (f"sha256:{RELEASE}",)
    old = statement(formats.SLSA_V02, {"materials": [{"uri": "git", "digest": {"sha256": SOURCE}}]})
    old["_type"] = formats.STATEMENT_V01
    found = describe(json.dumps(old).encode())
    assert (found.format_version, found.dependencies) == ("v0.1", (f"sha256:{SOURCE}",))
    example = describe((EXAMPLES / "api.provenance.intoto.json").read_bytes())
    assert (example.format, example.subjects) == ("in-toto", (f"sha256:{RELEASE}",))


def test_a_v1_statement_in_toto_s_models_reject_is_not_in_toto() -> None:
    no_subject = statement()
    no_subject["subject"] = []
    found = describe(json.dumps(no_subject).encode())
    assert found.format == "other" and "did not parse" in found.detail


def test_openvex_csaf_and_sarif() -> None:
    vex = describe((EXAMPLES / "api.openvex.json").read_bytes())
    assert (vex.format, vex.format_version, vex.subjects) == ("openvex", "v0.2.0", (f"sha256:{RELEASE}",))
    csaf = {
        "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "t", "publisher": {}},
        "product_tree": {
            "branches": [
                {
                    "name": "shop",
                    "branches": [
                        {
                            "name": "api",
                            "product": {
                                "product_id": "api-1.4.2",
                                "name": "api 1.4.2",
                                "product_identification_helper": {
                                    "hashes": [
                                        {
                                            "file_hashes": [
                                                {"algorithm": "sha256", "value": RELEASE.upper()}
                                            ],
                                            "filename": "api.tar",
                                        }
                                    ],
                                    "purl": f"pkg:oci/api@sha256%3A{BASE}",
                                },
                            },
                        }
                    ],
                }
            ]
        },
        "vulnerabilities": [{"cve": "CVE-2023-45853"}],
    }
    found = describe(json.dumps(csaf).encode())
    assert (found.format, found.format_version) == ("csaf", "2.0")
    assert found.subjects == tuple(sorted((f"sha256:{RELEASE}", f"sha256:{BASE}")))
    sarif = json.loads((EXAMPLES / "api.scan.sarif.json").read_text())
    sarif["runs"][0]["artifacts"] = [{"location": {"uri": "api.tar"}, "hashes": {"sha-256": RELEASE}}]
    found = describe(json.dumps(sarif).encode())
    assert (found.format, found.format_version, found.subjects) == ("sarif", "2.1.0", (f"sha256:{RELEASE}",))


def test_anything_else_is_other() -> None:
    for content in (
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"hello": "world"}',
        b"[" * 5000 + b"]" * 5000,
        b"%PDF-1.7",
    ):
        assert describe(content).format == "other"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        *("payloadType", "payload", "signatures", "_type", "@context", "document", "runs", "version"),
        *("metadata", "components", "packages", "relationships", "creationInfo"),
        *("verificationMaterial", "messageSignature", "dsseEnvelope"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_any_bytes_are_described(data: bytes) -> None:
    assert describe(data).format in formats.FORMATS


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(KEYS, JSON, max_size=5))
def test_any_json_with_the_formats_keys_is_described(document: dict[str, Any]) -> None:
    markers = (
        {},
        {"_type": formats.STATEMENT_V1},
        {"@context": "https://openvex.dev/ns/v0.2.0"},
        {"bomFormat": "CycloneDX", "specVersion": "1.6"},
        {"spdxVersion": "SPDX-2.3"},
        {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"},
    )
    for marker in markers:
        assert describe(json.dumps({**document, **marker}).encode()).format in formats.FORMATS


def test_the_trust_store_reads_pem_keys_and_names_a_bad_one() -> None:
    def pem(key: Any) -> bytes:
        return bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))

    good = pem(Ed25519PrivateKey.generate())
    assert [k.name for k in formats.load_trust_store([("ci.pem", good)])] == ["ci.pem"]
    for name, bad in (("junk.pem", b"not a key"), ("x25519.pem", pem(X25519PrivateKey.generate()))):
        with pytest.raises(ValueError, match=name):
            formats.load_trust_store([("ci.pem", good), (name, bad)])


def test_cyclonedx_and_spdx_read_with_their_own_libraries() -> None:
    cdx = json.loads((EXAMPLES / "api.cdx.json").read_text())
    cdx["metadata"]["component"]["purl"] = f"pkg:oci/api@sha256:{RELEASE}"
    cdx["components"][0]["hashes"] = [
        {"alg": "SHA-256", "content": BASE},
        {"alg": "SHA-1", "content": "0" * 40},
    ]
    cdx["components"][1]["components"] = [
        {"type": "library", "name": "inner", "hashes": [{"alg": "SHA-256", "content": SOURCE}]}
    ]
    found = describe(json.dumps(cdx).encode())
    assert (found.format, found.format_version, found.subjects) == (
        "cyclonedx",
        "1.6",
        (f"sha256:{RELEASE}",),
    )
    assert found.dependencies == tuple(sorted((f"sha256:{BASE}", f"sha256:{SOURCE}")))
    assert describe((EXAMPLES / "api.cdx.json").read_bytes()).format == "cyclonedx"

    def package(ref: str, digest: str) -> dict[str, Any]:
        checksums = [{"algorithm": "SHA256", "checksumValue": digest}]
        return {"SPDXID": ref, "name": ref, "downloadLocation": "NOASSERTION", "checksums": checksums}

    spdx = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "api",
        "documentNamespace": "https://example.com/spdx/api-1.4.2",
        "creationInfo": {"created": "2026-11-01T00:00:00Z", "creators": ["Tool: stella-tests"]},
        "packages": [package("SPDXRef-api", RELEASE), package("SPDXRef-zlib", BASE)],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": "SPDXRef-api",
            },
            {
                "spdxElementId": "SPDXRef-api",
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": "SPDXRef-zlib",
            },
        ],
    }
    found = describe(json.dumps(spdx).encode())
    assert (found.format, found.format_version) == ("spdx", "SPDX-2.3")
    assert (found.subjects, found.dependencies) == ((f"sha256:{RELEASE}",), (f"sha256:{BASE}",))
    del spdx["creationInfo"]
    broken = describe(json.dumps(spdx).encode())
    assert broken.format == "other" and "did not parse" in broken.detail


SIGSTORE = Path(__file__).resolve().parents[1] / "samples" / "sigstore"


def shipped_root(instance: str) -> TrustedRoot:
    """A trusted root the sigstore package ships (prod or staging): offline, no TUF fetch."""
    folder = {"prod": "tuf-repo-cdn.sigstore.dev", "staging": "tuf-repo-cdn.sigstage.dev"}[instance]
    return TrustedRoot.from_file(
        str(Path(sigstore.__file__).parent / "_store" / f"https%3A%2F%2F{folder}" / "trusted_root.json")
    )


def test_real_sigstore_bundles_are_parsed_and_verified_offline() -> None:
    raw = (SIGSTORE / "bundle_v3.txt.sigstore").read_bytes()
    artifact = "sha256:" + hashlib.sha256((SIGSTORE / "bundle_v3.txt").read_bytes()).hexdigest()
    found = describe(raw, sigstore_root=shipped_root("staging"))
    assert (found.format, found.format_version, found.subjects) == ("sigstore-bundle", "v0.3", (artifact,))
    assert (found.signature, found.transparency_log) == ("verified", "rekor log index 25915956")
    assert found.signed_by == "william@yossarian.net (issuer https://github.com/login/oauth)"
    assert describe(raw, sigstore_root=shipped_root("prod")).signature == "failed"  # not prod's
    assert describe(raw).signature == "unverified"  # no trusted root configured

    dsse = describe(
        (SIGSTORE / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes(),
        sigstore_root=shipped_root("staging"),
    )
    assert (dsse.format, dsse.signature) == ("sigstore-bundle", "verified")
    assert dsse.subjects and dsse.predicate_type and "token.actions.githubusercontent.com" in dsse.signed_by

    document = json.loads(raw)
    document["messageSignature"]["messageDigest"]["digest"] = base64.b64encode(b"\1" * 32).decode()
    forged = describe(json.dumps(document).encode(), sigstore_root=shipped_root("staging"))
    assert forged.signature == "failed" and forged.subjects == ("sha256:" + "01" * 32,)
    document["verificationMaterial"] = {}
    assert describe(json.dumps(document).encode()).format == "other"
