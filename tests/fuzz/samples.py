"""Small valid archives, evidence packs and backup streams, made without a broker by the
functions their writers use (`locker.archives`, `commands.export._members`, `locker.backups`):
the seeds the fuzz tests mutate. Everything is deterministic (fixed keys, times and contents), so
that a derandomized run makes the same examples every time."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import sigstore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.dsse import Envelope

from commands.export import _members as pack_members
from locker import anchors, archives, backups, formats, merkle, signing
from locker.anchors import AnchorCreated, PartitionHead, StoredAnchor
from locker.archives import ArchivedArtifact, History, Manifest, PackManifest, ProvedEvent
from locker.backups import BackedUpRecord, PackedBlob
from locker.events import ArtifactIngested, ArtifactReplicated, encode
from locker.merkle import Frontier
from tests.unit.merkle_reference import MemoryNodes

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ORIGIN = "stella.test/events"
KEY = signing.Signer("stella.test/fuzz", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
# The key a piece of evidence (a DSSE envelope) is signed with; the pack carries its public half.
EVIDENCE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
SUBJECT = "sha256:" + hashlib.sha256(b"registry.example.com/app:1.0").hexdigest()


def _envelope() -> bytes:
    statement = {
        "_type": formats.STATEMENT_V1,
        "subject": [{"name": "app", "digest": {"sha256": SUBJECT.removeprefix("sha256:")}}],
        "predicateType": formats.SLSA_V1,
        "predicate": {"buildDefinition": {"buildType": "https://example.com/build@v1"}},
    }
    payload = json.dumps(statement).encode()
    pae = Envelope(payload, formats.IN_TOTO_PAYLOAD, {}).pae()
    signature = base64.b64encode(EVIDENCE_KEY.sign(pae)).decode()
    return json.dumps(
        {
            "payloadType": formats.IN_TOTO_PAYLOAD,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "", "sig": signature}],
        }
    ).encode()


BLOBS = {
    "sbom": b'{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1}\n',
    "attestation": _envelope(),
}
IDS = {kind: "sha256:" + hashlib.sha256(blob).hexdigest() for kind, blob in BLOBS.items()}
BLOB_OF = {IDS[kind]: blob for kind, blob in BLOBS.items()}


def _ingested(kind: str) -> ArtifactIngested:
    return ArtifactIngested(
        artifact_id=IDS[kind],
        size=len(BLOBS[kind]),
        kind=kind,  # type: ignore[arg-type]
        subjects=(SUBJECT,),
        producer="fuzz",
        media_type="application/json",
        ingested_at=AT,
    )


# Partition 0 of the log: a record that is no event (still a leaf), and the artifacts' events.
LEAVES = [
    b"not an event: still a leaf",
    encode(_ingested("sbom")),
    encode(_ingested("attestation")),
    encode(ArtifactReplicated(artifact_id=IDS["sbom"], replica="/replica", replicated_at=AT)),
]
EVENTS_OF = {IDS["sbom"]: (1, 3), IDS["attestation"]: (2,)}


def _anchor() -> tuple[StoredAnchor, AnchorCreated]:
    root = Frontier().extend(merkle.leaf_hashes(LEAVES))[0].root()
    head = PartitionHead(partition=0, tree_size=len(LEAVES), root=root, last_offset=len(LEAVES) - 1)
    body = anchors.next_body(None, (head,), origin=ORIGIN, created_at=AT, new_chain_id="c1")
    record = anchors.encode(anchors.sign(body, KEY))
    return StoredAnchor(0, record), anchors.decode(record)


STORED, ANCHOR = _anchor()
ANCHOR_DOCUMENT = json.dumps(anchors.export_document(STORED, ANCHOR, KEY.verifier.vkey), indent=1).encode()


def _history(artifact_id: str) -> History:
    nodes = MemoryNodes(LEAVES)
    return History(
        artifact_id=artifact_id,
        events=tuple(
            ProvedEvent(
                partition=0,
                offset=i,
                leaf_index=i,
                value=LEAVES[i],
                proof=tuple(merkle.inclusion_proof(nodes, i, len(LEAVES))),
            )
            for i in EVENTS_OF[artifact_id]
        ),
    )


HISTORIES = {artifact_id: _history(artifact_id) for artifact_id in sorted(EVENTS_OF)}
LINES = archives.encode_lines(HISTORIES.values())


def _listed(kind: str) -> ArchivedArtifact:
    return ArchivedArtifact(
        artifact_id=IDS[kind], size=len(BLOBS[kind]), kind=kind, subjects=(SUBJECT,), producer="fuzz",
        media_type="application/json", ingested_at=AT, partition=0, offset=EVENTS_OF[IDS[kind]][0],
        events=len(EVENTS_OF[IDS[kind]]),
    )  # fmt: skip


LISTED = tuple(_listed(kind) for kind in sorted(BLOBS, key=lambda k: IDS[k]))
Member = tuple[str, bytes]


def _archive_members() -> tuple[Manifest, list[Member]]:
    """An archive's members in the order `stella evidence archive` writes them."""
    members = [(archives.ANCHOR, ANCHOR_DOCUMENT), (archives.events_member(0), LINES)]
    members += [(archives.blob_member(i), BLOB_OF[i]) for i in sorted(BLOB_OF)]
    manifest = Manifest(
        archive_id="ela-fuzz", created_at=AT, created_by="fuzz", older_than="1d", cutoff=AT,
        origin=ORIGIN, anchor_id=STORED.id, verifier_key=KEY.verifier.vkey, artifacts=LISTED,
        blob_bytes=sum(len(b) for b in BLOBS.values()),
        files={name: archives.entry_of(data) for name, data in members[:2]},
    )  # fmt: skip
    raw = archives.encode_manifest(manifest)
    return manifest, [*members, (archives.MANIFEST, raw), (archives.SIGNATURE, sign(raw))]


def sign(manifest: bytes, signer: signing.Signer = KEY) -> bytes:
    """A manifest's signature member, as the writers make it."""
    return base64.b64encode(signer.sign(manifest)) + b"\n"


ARCHIVE_MANIFEST, ARCHIVE_MEMBERS = _archive_members()

# The Sigstore trusted root sigstore-python ships, and the evidence key's PEM: a pack's trust material.
SHIPPED = Path(sigstore.__file__).parent / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
SIGSTORE_ROOT = (SHIPPED / "trusted_root.json").read_bytes()
EVIDENCE_PEM = EVIDENCE_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
TRUST = {
    "trust/evidence.pem": EVIDENCE_PEM,
    archives.SIGSTORE_ROOT: SIGSTORE_ROOT,
}


def _pack_members() -> list[Member]:
    """An evidence pack's members, by the function `stella evidence export` writes them with."""
    manifest = PackManifest(
        subject=SUBJECT, origin=ORIGIN, anchor_id=STORED.id, verifier_key=KEY.verifier.vkey,
        artifacts=LISTED, blob_bytes=sum(len(b) for b in BLOBS.values()), files={},
    )  # fmt: skip
    return pack_members(STORED, ANCHOR, manifest, list(HISTORIES.values()), BLOB_OF, TRUST, KEY)


PACK_MEMBERS = _pack_members()
PACK_MANIFEST = archives.decode_pack_manifest(dict(PACK_MEMBERS)[archives.MANIFEST])


def backup_records() -> list[BackedUpRecord]:
    """The records of a backed-up events topic: values, a null one (a tombstone), keys, headers."""
    return [
        BackedUpRecord(0, i, 1_767_322_000_000 + i, b"key-%d" % i, value, (("traceparent", b"00-ab"),))
        for i, value in enumerate(LEAVES)
    ] + [BackedUpRecord(1, 0, 1_767_322_000_000, None, None)]


BACKUP_FRAMES = [backups.frame(backup_records()[:2]), backups.frame(backup_records()[2:])]
BLOB_INDEX = backups.encode_blob_index(
    [PackedBlob(i, "elb-20260102", offset, len(BLOB_OF[i])) for offset, i in enumerate(sorted(BLOB_OF))]
)
BACKUP_MANIFEST = backups.encode_manifest(
    backups.Manifest(
        backup_id="elb-20260102",
        created_at=AT,
        topic_prefix="",
        ends={"events": (4, 0), "anchors": (1,)},
        events=5,
        anchors=1,
        artifacts=2,
        blob_bytes=sum(len(b) for b in BLOBS.values()),
        files={backups.BLOB_INDEX: archives.entry_of(BLOB_INDEX)},
        packs={"elb-20260102": archives.FileEntry("sha256:" + "0" * 64, 100)},
        index_checksum="sha256:" + "1" * 64,
        latest_anchor=STORED.id,
        verifier_key=KEY.verifier.vkey,
    )
)
