"""What a piece of evidence is, and what it is about: bytes in, a `Description` out. No I/O here.

Recognised so far:
- in-toto Statements (v1, and v0.1), bare or in a DSSE envelope, read with in-toto's own models
  (`in_toto_attestation`, protobuf); a DSSE envelope's signatures are checked with
  securesystemslib against the trusted keys given. Subjects are the statement's subjects; the
  dependencies are SLSA provenance's materials (v0.2) or resolved dependencies (v1);
- SPDX 2.x documents, read with spdx-tools (the packages the document describes are its
  subjects, the other packages its dependencies), and CycloneDX BOMs, read with
  cyclonedx-python-lib (the BOM's own component is its subject, the components its
  dependencies), by their SHA-256 checksums and digests in purls;
- OpenVEX documents (products by digest, in hashes or in their ids), CSAF documents (file hashes in
  the product tree) and SARIF logs (the hashes of the scanned artifacts): none has a maintained
  Python library, so they are read here, from their specifications' fields.
- Sigstore bundles (v0.1-v0.3), read and verified offline with sigstore-python against a
  configured `trusted_root.json`: a DSSE bundle's statement, or a message signature's digest as
  its subject; the signing identity and the transparency log entry.
Anything unrecognised is `other`. Nothing is rejected for its format.

Only SHA-256 digests become subjects and dependencies ("sha256:<hex>"): they are what the index
and `export --digest` look up.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cyclonedx.model import HashAlgorithm
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Signature, SSlibKey  # type: ignore[attr-defined]  # re-exported without __all__
from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier, policy
from sigstore_models.common.v1 import HashAlgorithm as SigstoreHashAlgorithm
from spdx_tools.spdx.model.checksum import ChecksumAlgorithm
from spdx_tools.spdx.model.package import Package
from spdx_tools.spdx.model.relationship import RelationshipType
from spdx_tools.spdx.parser.error import SPDXParsingError
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser

FORMATS = ("in-toto", "sigstore-bundle", "spdx", "cyclonedx", "openvex", "csaf", "sarif", "other")
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle"
FULCIO_ISSUER = "1.3.6.1.4.1.57264.1.1"  # the OIDC issuer, in Fulcio's first extension
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
LISTED = 10_000  # subjects or dependencies kept of one document

_HEX = re.compile(r"^[0-9a-f]{64}$")
_IN_TEXT = re.compile(r"sha256(?::|%3[aA])([0-9a-f]{64})")


class Description(msgspec.Struct, frozen=True, kw_only=True):
    format: str = "other"
    format_version: str = ""
    subjects: tuple[str, ...] = ()
    predicate_type: str = ""
    dependencies: tuple[str, ...] = ()
    signature: str = "none"  # none | verified | unverified (no trusted key verifies it) | failed
    signed_by: str = ""  # the trusted key (its file name) that verified it, or a signing identity
    transparency_log: str = ""  # a Sigstore bundle's log entry
    detail: str = ""


@dataclass(frozen=True)
class TrustedKey:
    name: str  # the key's file name in the trust store
    key: PublicKeyTypes


def describe(
    content: bytes, trusted: Sequence[TrustedKey] = (), sigstore_root: TrustedRoot | None = None
) -> Description:
    """The format of `content` and what it says it is about; DSSE signatures are checked against
    `trusted`, Sigstore bundles against `sigstore_root` (offline). Never raises for bad content."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        return Description(detail="not JSON")
    if not isinstance(document, dict):
        return Description(detail="JSON, not an object")
    try:
        if str(document.get("mediaType", "")).startswith(SIGSTORE_BUNDLE):
            return _sigstore(content, document, sigstore_root)
        if {"payloadType", "payload", "signatures"} <= document.keys():
            return _dsse(document, trusted)
        if str(document.get("_type", "")).startswith("https://in-toto.io/Statement/"):
            return _statement(document, "no envelope: unsigned")
        if document.get("bomFormat") == "CycloneDX":
            return _cyclonedx(document)
        if str(document.get("spdxVersion", "")).startswith("SPDX-2."):
            return _spdx(document)
        if str(document.get("@context", "")).startswith("https://openvex.dev/ns"):
            return _openvex(document)
        if isinstance(document.get("document"), dict) and "csaf_version" in document["document"]:
            return _csaf(document)
        if isinstance(document.get("runs"), list) and str(document.get("version", "")).startswith("2."):
            return _sarif(document)
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        RecursionError,
        json_format.ParseError,
        SigstoreError,
    ) as exc:
        return Description(
            detail=f"looked like a known format but did not parse: {type(exc).__name__}: {exc}"[:300]
        )
    except Exception as exc:  # noqa: BLE001 - a parser library's own error types: hostile bytes never stop the loop
        return Description(detail=f"a parser failed: {type(exc).__name__}: {exc}"[:300])
    return Description(detail="no known evidence format")


def _dsse(document: dict[str, Any], trusted: Sequence[TrustedKey]) -> Description:
    envelope = Envelope.from_dict(document)
    signature, signed_by = _check(envelope, trusted)
    if envelope.payload_type != IN_TOTO_PAYLOAD:
        return Description(
            signature=signature, signed_by=signed_by, detail=f"DSSE of {envelope.payload_type[:100]}"
        )
    found = _statement(json.loads(envelope.payload), f"DSSE, {len(envelope.signatures)} signature(s)")
    return msgspec.structs.replace(found, signature=signature, signed_by=signed_by)


def _sigstore(content: bytes, document: dict[str, Any], root: TrustedRoot | None) -> Description:
    """Read with sigstore-python: a DSSE bundle's statement, or a message signature's digest as its
    subject; the signing identity from the certificate, the log entry; verified offline against
    `root` (a `trusted_root.json`), the identity recorded rather than required."""
    bundle = Bundle.from_json(content)
    media = str(document["mediaType"])
    version = (
        media.split("bundle.", 1)[1].split("+", 1)[0] if "bundle.v" in media else media.rsplit("=", 1)[-1]
    )
    envelope = document.get("dsseEnvelope")
    verify: Callable[[Verifier], object]
    if envelope is not None:
        if envelope.get("payloadType") == IN_TOTO_PAYLOAD:
            found = _statement(json.loads(base64.b64decode(envelope["payload"])), "Sigstore bundle, DSSE")
        else:
            found = Description(detail=f"Sigstore bundle, DSSE of {str(envelope.get('payloadType'))[:100]}")
        verify = partial(Verifier.verify_dsse, bundle=bundle, policy=policy.UnsafeNoOp())
    else:
        digest = document["messageSignature"]["messageDigest"]
        if digest.get("algorithm") != "SHA2_256":
            raise ValueError(f"a message digest of {str(digest.get('algorithm'))[:40]}")
        raw = base64.b64decode(digest["digest"], validate=True)
        found = Description(subjects=_digests([raw.hex()]), detail="Sigstore bundle, message signature")
        hashed = Hashed(algorithm=SigstoreHashAlgorithm.SHA2_256, digest=raw)
        verify = partial(Verifier.verify_artifact, input_=hashed, bundle=bundle, policy=policy.UnsafeNoOp())
    status, why = "unverified", "no trusted root (Formats:SigstoreTrustedRoot)"
    if root is not None:
        try:
            verify(Verifier(trusted_root=root))
            status, why = "verified", "verified offline against the trusted root"
        except SigstoreError as exc:
            status, why = "failed", f"does not verify: {exc}"[:200]
    entries = document.get("verificationMaterial", {}).get("tlogEntries") or [{}]
    log = f"rekor log index {entries[0].get('logIndex', '?')}" if entries[0] else ""
    return msgspec.structs.replace(
        found,
        format="sigstore-bundle",
        format_version=version[:20],
        signature=status,
        signed_by=_identity(bundle.signing_certificate),
        transparency_log=log,
        detail=f"{found.detail}; {why}",
    )


def _identity(certificate: x509.Certificate) -> str:
    """A Fulcio certificate's identity (its SAN: an email or a URI) and its OIDC issuer."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.RFC822Name) + san.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        names = []
    issuer = ""
    for extension in certificate.extensions:
        if extension.oid.dotted_string == FULCIO_ISSUER and isinstance(
            extension.value, x509.UnrecognizedExtension
        ):
            issuer = extension.value.value.decode(errors="replace")
    return (", ".join(names) + (f" (issuer {issuer})" if issuer else ""))[:300]


def _check(envelope: Envelope, trusted: Sequence[TrustedKey]) -> tuple[str, str]:
    """("verified", key name), ("failed", key name) when a trusted key with the signature's key id
    does not verify it, else ("unverified", "")."""
    pae = envelope.pae()
    outcome = ("unverified", "")
    for signature in envelope.signatures.values():
        for trusted_key in trusted:
            key = SSlibKey.from_crypto(trusted_key.key, keyid=signature.keyid or None)
            if _verifies(key, signature, pae):
                return "verified", trusted_key.name
            if signature.keyid and signature.keyid == SSlibKey.from_crypto(trusted_key.key).keyid:
                outcome = ("failed", trusted_key.name)
    return outcome


def _verifies(key: SSlibKey, signature: Signature, pae: bytes) -> bool:
    try:
        key.verify_signature(Signature(key.keyid, signature.signature), pae)
    except (UnverifiedSignatureError, VerificationError):
        return False
    return True


def _statement(statement: dict[str, Any], how: str) -> Description:
    kind = statement.get("_type")
    if kind == STATEMENT_V1:
        # Unknown fields are ignored, as the in-toto specification tells consumers to.
        message = json_format.ParseDict(statement, statement_pb2.Statement(), ignore_unknown_fields=True)
        parsed = Statement.copy_from_pb(message)
        parsed.validate()
        version = "v1"
    elif kind == STATEMENT_V01:
        version = "v0.1"  # the models read v1 only: its fields are read as they are
    else:
        raise ValueError(f"unknown statement type {str(kind)[:100]}")
    subjects = _digests(s.get("digest", {}).get("sha256") for s in statement.get("subject", []))
    predicate_type = str(statement.get("predicateType", ""))
    predicate = statement.get("predicate") or {}
    if predicate_type == SLSA_V1:
        used = predicate.get("buildDefinition", {}).get("resolvedDependencies", [])
    elif predicate_type == SLSA_V02:
        used = predicate.get("materials", [])
    else:
        used = []
    dependencies = _digests(d.get("digest", {}).get("sha256") for d in used if isinstance(d, dict))
    return Description(
        format="in-toto",
        format_version=version,
        subjects=subjects,
        predicate_type=predicate_type[:300],
        dependencies=dependencies,
        detail=f"{how}; {len(subjects)} subject(s), {len(dependencies)} dependency digest(s)",
    )


def _cyclonedx(document: dict[str, Any]) -> Description:
    """Read with cyclonedx-python-lib: the subject is the BOM's own component (metadata.component),
    the dependencies every component listed; by their SHA-256 hashes, and digests in purls."""
    bom = Bom.from_json(document)  # type: ignore[attr-defined]  # added by py-serializable
    top = bom.metadata.component
    listed: list[Component] = []
    todo = list(bom.components)
    while todo:
        component = todo.pop()
        listed.append(component)
        todo.extend(component.components)
    subjects = _digests(_component_digests(top)) if top is not None else ()
    dependencies = _digests(d for c in listed for d in _component_digests(c))
    return Description(
        format="cyclonedx",
        format_version=str(document.get("specVersion", ""))[:20],
        subjects=subjects,
        dependencies=dependencies,
        detail=f"{len(listed)} component(s), {len(dependencies)} with a SHA-256",
    )


def _component_digests(component: Component) -> list[str]:
    found = [h.content.lower() for h in component.hashes if h.alg is HashAlgorithm.SHA_256]
    return found + _in_text(str(component.purl or ""))


def _spdx(document: dict[str, Any]) -> Description:
    """Read with spdx-tools: the subjects are the packages the document describes, the
    dependencies every other package; by their SHA-256 checksums."""
    try:
        parsed = JsonLikeDictParser().parse(document)  # type: ignore[no-untyped-call]
    except SPDXParsingError as exc:
        raise ValueError(str(exc)[:300]) from None
    me = parsed.creation_info.spdx_id
    described = {
        r.related_spdx_element_id
        for r in parsed.relationships
        if r.spdx_element_id == me and r.relationship_type is RelationshipType.DESCRIBES
    } | {
        r.spdx_element_id
        for r in parsed.relationships
        if r.related_spdx_element_id == me and r.relationship_type is RelationshipType.DESCRIBED_BY
    }

    def sha256(package: Package) -> list[str]:
        return [c.value.lower() for c in package.checksums if c.algorithm is ChecksumAlgorithm.SHA256]

    subjects = _digests(d for p in parsed.packages if p.spdx_id in described for d in sha256(p))
    dependencies = _digests(d for p in parsed.packages if p.spdx_id not in described for d in sha256(p))
    return Description(
        format="spdx",
        format_version=parsed.creation_info.spdx_version[:20],
        subjects=subjects,
        dependencies=dependencies,
        detail=f"{len(parsed.packages)} package(s), {len(described)} described",
    )


def _openvex(document: dict[str, Any]) -> Description:
    found: list[str] = []
    statements = document.get("statements", [])
    for statement in statements:
        for product in statement.get("products", []):
            if isinstance(product, str):  # v0.0.1: a product is its id
                found += _in_text(product)
            else:
                found += _in_text(str(product.get("@id", "")))
                found.append(str(product.get("hashes", {}).get("sha-256", "")))
    version = str(document.get("@context", "")).rsplit("/", 1)[-1]
    subjects = _digests(found)
    return Description(
        format="openvex",
        format_version=version if version.startswith("v") else "",
        subjects=subjects,
        detail=f"{len(statements)} statement(s), {len(subjects)} product digest(s)",
    )


def _csaf(document: dict[str, Any]) -> Description:
    meta = document["document"]
    found = []
    for helper in _find(document.get("product_tree", {}), "product_identification_helper"):
        for entry in helper.get("hashes", []) if isinstance(helper, dict) else []:
            for file_hash in entry.get("file_hashes", []):
                if str(file_hash.get("algorithm", "")).lower() in ("sha256", "sha-256"):
                    found.append(str(file_hash.get("value", "")).lower())
        if isinstance(helper, dict):
            found += _in_text(str(helper.get("purl", "")))
    subjects = _digests(found)
    return Description(
        format="csaf",
        format_version=str(meta.get("csaf_version", ""))[:20],
        subjects=subjects,
        detail=f"{meta.get('category', '?')}; {len(document.get('vulnerabilities', []))} "
        f"vulnerability entries, {len(subjects)} product digest(s)",
    )


def _sarif(document: dict[str, Any]) -> Description:
    found: list[str] = []
    results = 0
    tools = []
    for run in document["runs"]:
        tools.append(str(run.get("tool", {}).get("driver", {}).get("name", "?"))[:60])
        results += len(run.get("results", []) or [])
        for artifact in run.get("artifacts", []) or []:
            found.append(str((artifact.get("hashes") or {}).get("sha-256", "")).lower())
    subjects = _digests(found)
    return Description(
        format="sarif",
        format_version=str(document.get("version", ""))[:20],
        subjects=subjects,
        detail=f"{', '.join(tools) or 'no tool'}: {results} result(s), {len(subjects)} artifact digest(s)",
    )


def _find(node: Any, key: str) -> Iterator[Any]:
    """Every value under `key` anywhere in `node` (the product tree nests branches)."""
    stack = [node]
    while stack:
        here = stack.pop()
        if isinstance(here, dict):
            for k, v in here.items():
                if k == key:
                    yield v
                else:
                    stack.append(v)
        elif isinstance(here, list):
            stack.extend(here)


def _in_text(text: str) -> list[str]:
    return [m.group(1) for m in _IN_TEXT.finditer(text)]


def _digests(values: Iterable[object]) -> tuple[str, ...]:
    """The well-formed SHA-256 hex values as sorted, unique "sha256:<hex>" digests."""
    found = {f"sha256:{v}" for v in values if isinstance(v, str) and _HEX.match(v)}
    return tuple(sorted(found)[:LISTED])


def load_trust_store(pems: Iterable[tuple[str, bytes]]) -> list[TrustedKey]:
    """Trusted keys from PEM public keys (name, bytes); raises `ValueError` naming a bad one."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys = []
    for name, pem in pems:
        # UnsupportedAlgorithm, not a ValueError, is what a key type OpenSSL does not know gives.
        try:
            key = load_pem_public_key(pem)
            SSlibKey.from_crypto(key)  # a key type DSSE signatures can be checked with
        except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
            raise ValueError(f"{name} is not a PEM public key of a signing scheme DSSE uses: {exc}") from None
        keys.append(TrustedKey(name, key))
    return keys
