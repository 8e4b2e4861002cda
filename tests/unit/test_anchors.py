"""Anchor chains: every kind of break is found and named; a new chain records an old break."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from locker import anchors, merkle, signing
from locker.anchors import AnchorBody, PartitionHead, StoredAnchor
from locker.errors import InvalidInput
from locker.merkle import Frontier

KEY = signing.Signer("stella.test/anchors", Ed25519PrivateKey.generate())
ROGUE = signing.Signer("stella.test/anchors", Ed25519PrivateKey.generate())
LEAVES = {0: [b"a%d" % i for i in range(40)], 1: [b"b%d" % i for i in range(25)]}


class Trees:
    def __init__(self, leaves: dict[int, list[bytes]]) -> None:
        self.leaves = leaves
        self.nodes = {}
        for partition, values in leaves.items():
            _, nodes = Frontier().extend(merkle.leaf_hashes(values))
            self.nodes[partition] = {(lv, ix): h for lv, ix, h in nodes}

    def head(self, partition: int, size: int) -> PartitionHead:
        root = Frontier().extend(merkle.leaf_hashes(self.leaves[partition][:size]))[0].root()
        return PartitionHead(partition=partition, tree_size=size, root=root, last_offset=size - 1)

    def consistency(self, partition: int, old: int, new: int) -> list[bytes]:
        class Reader:
            def node(inner, level: int, index: int) -> bytes:
                return self.nodes[partition][(level, index)]

        return merkle.consistency_proof(Reader(), old, new)

    def root(self, partition: int, size: int) -> bytes | None:
        if size > len(self.leaves[partition]):
            return None
        return self.head(partition, size).root


TREES = Trees(LEAVES)


def body(chain: str, seq: int, previous: bytes, sizes: tuple[int, int], **extra: object) -> AnchorBody:
    return AnchorBody(
        chain_id=chain,
        sequence=seq,
        previous=previous,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        origin="stella.test/events",
        partitions=(TREES.head(0, sizes[0]), TREES.head(1, sizes[1])),
        **extra,  # type: ignore[arg-type]
    )


def append(chain: list[StoredAnchor], b: AnchorBody, signer: signing.Signer = KEY) -> list[StoredAnchor]:
    raw = anchors.encode(anchors.sign(b, signer))
    return [*chain, StoredAnchor(len(chain), raw)]


def link(chain: list[StoredAnchor]) -> bytes:
    return hashlib.sha256(chain[-1].raw).digest()


def good_chain() -> list[StoredAnchor]:
    chain = append([], body("c1", 0, b"", (10, 5)))
    chain = append(chain, body("c1", 1, link(chain), (20, 5)))
    return append(chain, body("c1", 2, link(chain), (40, 25)))


def check(chain: list[StoredAnchor]) -> list[anchors.Finding]:
    return anchors.verify_chain(chain, KEY.verifier, TREES.consistency, TREES.root)


def test_a_good_chain_verifies() -> None:
    assert check(good_chain()) == []


def test_a_bad_signature_is_named() -> None:
    chain = good_chain()
    chain = append(chain, body("c1", 3, link(chain), (40, 25)), ROGUE)
    found = check(chain)
    assert {(f.sequence, f.check) for f in found} == {(3, "signature"), (3, "checkpoint")}
    assert all(f.anchor == chain[-1].id for f in found)


def test_a_wrong_previous_hash_is_named() -> None:
    chain = good_chain()
    chain = append(chain, body("c1", 3, b"\x00" * 32, (40, 25)))
    [finding] = check(chain)
    assert (finding.sequence, finding.check) == (3, "link") and chain[-2].id in finding.detail


def test_a_shrinking_tree_is_named() -> None:
    chain = good_chain()
    chain = append(chain, body("c1", 3, link(chain), (30, 25)))
    [finding] = check(chain)
    assert (finding.check, finding.sequence) == ("monotonic", 3) and "40 to 30" in finding.detail


def test_a_root_the_log_does_not_give_is_named() -> None:
    chain = good_chain()
    forged = body("c1", 3, link(chain), (40, 25))
    forged = AnchorBody(
        **{
            **{f: getattr(forged, f) for f in forged.__struct_fields__},
            "partitions": (
                PartitionHead(partition=0, tree_size=40, root=b"\x11" * 32, last_offset=39),
                TREES.head(1, 25),
            ),
        }
    )
    chain = append(chain, forged)
    checks = {f.check for f in check(chain)}
    assert checks == {"consistency", "root"}


def test_a_fork_is_a_broken_link() -> None:
    chain = good_chain()
    fork = append(chain[:2], body("c1", 2, link(chain[:2]), (40, 25)))[-1]
    found = check([*chain, StoredAnchor(3, fork.raw)])
    assert [(f.check, f.sequence) for f in found] == [("link", 2), ("sequence", 2)]


def test_a_new_chain_continues_from_the_last_good_anchor() -> None:
    chain = good_chain()
    last_good = chain[-1].id
    chain = append(chain, body("c1", 3, link(chain), (40, 25)), ROGUE)
    chain = append(
        chain,
        body(
            "c2",
            0,
            b"",
            (40, 25),
            reason="chain-break-recovery",
            previous_chain="c1",
            previous_chain_anchor=last_good,
        ),
    )
    found = check(chain)
    assert {f.anchor for f in found} == {chain[3].id}  # only the forged one; the new chain is fine
    wrong = append(
        chain[:-1], body("c2", 0, b"", (40, 25), previous_chain="c1", previous_chain_anchor="sha256:00")
    )
    assert any(f.check == "link" and f.anchor == wrong[-1].id for f in check(wrong))


def test_a_recovery_record_substitutes_the_damaged_anchor() -> None:
    chain = good_chain()
    good = chain[1]
    damaged = StoredAnchor(1, good.raw.replace(b'"signature":"', b'"signature":"AAAA', 1))
    broken = [chain[0], damaged, chain[2]]
    assert {f.check for f in check(broken)} >= {"signature", "link"}
    recovery = anchors.AnchorRecovered(
        record=good.raw, replaces_offset=1, reason="test", recovered_at=datetime(2026, 1, 2, tzinfo=UTC)
    )
    stored = [*broken, StoredAnchor(3, anchors.encode_recovery(recovery))]
    effective, repaired = anchors.effective_chain(stored)
    assert [s.raw for s in effective] == [s.raw for s in chain]
    assert repaired == [{"offset": 1, "damaged": damaged.id, "recovered": good.id}]
    assert check(effective) == []


def test_a_checkpoint_note_that_is_not_base64_is_a_finding() -> None:
    chain = good_chain()
    signature = anchors.decode(chain[-1].raw).checkpoints[0].rsplit(" ", 1)[1].strip()
    chain[-1] = StoredAnchor(2, chain[-1].raw.replace(signature.encode(), b"!not-base64!", 1))
    [finding] = check(chain)
    assert (finding.check, finding.sequence) == ("checkpoint", 2) and "not base64" in finding.detail


b64 = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
heads = st.fixed_dictionaries(
    {
        "partition": st.integers(0, 1),
        "tree_size": st.integers(-2, 50) | st.integers(min_value=0, max_value=10**30),
        "root": b64,
        "last_offset": st.integers(),
    }
)
bodies = st.fixed_dictionaries(
    {
        "chain_id": st.sampled_from(["c1", "c2"]),
        "sequence": st.integers(-1, 4),
        "previous": b64,
        "created_at": st.just("2026-01-01T00:00:00Z"),
        "origin": st.sampled_from(["stella.test/events", ""]),
        "partitions": st.lists(heads, max_size=3),
    },
    optional={"previous_chain": st.sampled_from(["c1", "x"]), "previous_chain_anchor": st.text(max_size=8)},
)
notes = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda text, sig: f"{text}\n\n\u2014 {KEY.name} {sig}\n",
        st.text(max_size=20),
        st.text(max_size=12) | b64,
    ),
)
hostile_records = st.one_of(
    st.binary(max_size=40),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["anchor.created", "anchor.recovered"]),
            "body": bodies,
            "key_name": st.sampled_from([KEY.name, "other"]),
            "signature": b64,
            "checkpoints": st.lists(notes, max_size=3),
        }
    ).map(lambda record: json.dumps(record).encode()),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(hostile_records, max_size=3), st.data())
def test_verifying_hostile_records_only_ever_gives_findings(
    records: list[bytes], data: st.DataObject
) -> None:
    good = [item.raw for item in good_chain()]
    mixed = data.draw(st.permutations([*records, *good]))
    found = check([StoredAnchor(offset, raw) for offset, raw in enumerate(mixed)])
    checks = {"signature", "checkpoint", "link", "sequence", "monotonic", "consistency", "root", "decode"}
    assert {f.check for f in found} <= checks


def test_a_body_is_encoded_once_and_stored_as_signed() -> None:
    b = body("c1", 0, b"", (10, 5))
    anchor = anchors.sign(b, KEY)
    signed = msgspec.json.Encoder(order="sorted").encode(b)
    assert bytes(anchor.signed) == signed and KEY.verifier.verify(signed, anchor.signature)
    raw = anchors.encode(anchor)
    assert raw.startswith(b'{"body":' + signed + b',"checkpoints":')
    assert anchor.body == b and anchors.decode(raw).body == b
    assert anchors.encode(anchors.decode(raw)) == raw


def test_the_signature_covers_the_body_bytes_as_stored_not_what_they_decode_to() -> None:
    chain = good_chain()
    reformatted = chain[-1].raw.replace(b'{"body":{"chain_id":', b'{"body":{ "chain_id":', 1)
    assert anchors.decode(reformatted).body == anchors.decode(chain[-1].raw).body
    [finding] = anchors.check_anchor(anchors.decode(reformatted), "x", KEY.verifier)
    assert finding.check == "signature"


@pytest.mark.parametrize(
    "body_json", [b"5", b"{}", b'{"chain_id":"c1"}', b'{"chain_id":5,"sequence":0}', b"[1]"]
)
def test_a_body_that_is_not_an_anchor_body_is_schema_invalid(body_json: bytes) -> None:
    raw = anchors.encode(anchors.sign(body("c1", 0, b"", (10, 5)), KEY))
    broken = b'{"body":' + body_json + raw[raw.index(b',"checkpoints":') :]
    for decode in (anchors.decode, anchors.decode_record):
        with pytest.raises(InvalidInput) as info:
            decode(broken)
        assert info.value.reason == "schema-invalid"
    assert anchors.decoded([StoredAnchor(0, broken)]) == []
    assert [f.check for f in check([StoredAnchor(0, broken)])] == ["decode"]


def test_a_previous_hash_of_the_wrong_size_is_named() -> None:
    chain = good_chain()
    chain = append(chain, body("c1", 3, link(chain)[:5], (40, 25)))
    found = check(chain)
    assert ("link", "previous is 5 bytes, a SHA-256 hash is 32") in {(f.check, f.detail) for f in found}
    assert {(f.check, f.sequence) for f in found} == {("link", 3)}


def test_a_root_of_the_wrong_size_is_named() -> None:
    chain = good_chain()
    good = body("c1", 3, link(chain), (40, 25))
    short = PartitionHead(partition=0, tree_size=40, root=TREES.head(0, 40).root[:31], last_offset=39)
    chain = append(chain, msgspec.structs.replace(good, partitions=(short, TREES.head(1, 25))))
    found = {(f.check, f.detail) for f in check(chain)}
    assert ("root", "partition 0: root is 31 bytes, a SHA-256 hash is 32") in found
    assert ("consistency", "partition 0: invalid-proof: new root is 31 bytes, a SHA-256 hash is 32") in found


def test_next_body_links_or_starts_a_chain() -> None:
    heads = (TREES.head(0, 40), TREES.head(1, 25))
    when = datetime(2026, 11, 30, tzinfo=UTC)
    first = anchors.next_body(
        None, heads, origin="o", created_at=when, new_chain_id="c1", new_chain_reason="why"
    )
    assert (first.chain_id, first.sequence, first.reason, first.previous) == ("c1", 0, "why", b"")
    chain = append([], first)
    second = anchors.next_body(chain[-1], heads, origin="o", created_at=when, new_chain_id="unused")
    assert (second.chain_id, second.sequence, second.previous) == ("c1", 1, link(chain))
    chain = append(chain, second)
    fresh = anchors.next_body(
        chain[-1], heads, origin="o", created_at=when, new_chain_id="c2", new_chain_reason="restored"
    )
    assert (fresh.chain_id, fresh.sequence, fresh.previous_chain, fresh.previous_chain_anchor) == (
        "c2",
        0,
        "c1",
        chain[-1].id,
    )
    assert check(append(chain, fresh)) == []
