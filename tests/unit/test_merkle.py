"""The Merkle module against RFC 6962 vectors, a naive reference, and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from locker import merkle
from locker.merkle import Frontier, ProofError, RootMismatch
from tests.unit import merkle_reference as ref

# The eight leaves of the certificate-transparency reference tests and their roots (sizes 0-8).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
CT_INCLUSION_0_OF_8 = [
    bytes.fromhex(h)
    for h in (
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    )
]
CT_CONSISTENCY = {
    (1, 8): CT_INCLUSION_0_OF_8,
    (6, 8): [
        bytes.fromhex(h)
        for h in (
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        )
    ],
    (2, 5): [
        bytes.fromhex(h)
        for h in (
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        )
    ],
}


class CountingNodes:
    """A NodeReader over a dict that counts its reads."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.frontier, nodes = Frontier().extend(merkle.leaf_hash(v) for v in leaves)
        self.nodes = {(level, index): h for level, index, h in nodes}
        self.reads = 0

    def node(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[(level, index)]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_ct_vectors(size: int) -> None:
    leaves = CT_LEAVES[:size]
    assert ref.mth(leaves) == CT_ROOTS[size]
    tree = CountingNodes(leaves)
    assert tree.frontier.root() == CT_ROOTS[size]
    assert merkle.tree_root(tree, size) == CT_ROOTS[size]


def test_inclusion_vector() -> None:
    tree = CountingNodes(CT_LEAVES)
    proof = merkle.inclusion_proof(tree, 0, 8)
    assert proof == CT_INCLUSION_0_OF_8
    merkle.verify_inclusion(0, 8, merkle.leaf_hash(CT_LEAVES[0]), proof, CT_ROOTS[8])


@pytest.mark.parametrize(("old", "new"), list(CT_CONSISTENCY))
def test_consistency_vectors(old: int, new: int) -> None:
    tree = CountingNodes(CT_LEAVES[:new])
    proof = merkle.consistency_proof(tree, old, new)
    assert proof == CT_CONSISTENCY[(old, new)]
    merkle.verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof)


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_inclusion_proofs_match_the_reference_and_verify(leaves: list[bytes], data: st.DataObject) -> None:
    tree = CountingNodes(leaves)
    size = len(leaves)
    root = ref.mth(leaves)
    assert tree.frontier.root() == root
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(tree, index, size)
    assert proof == ref.path(index, leaves)
    merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), proof, root)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_consistency_proofs_match_the_reference_and_verify(leaves: list[bytes], data: st.DataObject) -> None:
    tree = CountingNodes(leaves)
    new = len(leaves)
    old = data.draw(st.integers(1, new))
    proof = merkle.consistency_proof(tree, old, new)
    assert proof == ref.proof(old, leaves)
    merkle.verify_consistency(old, new, ref.mth(leaves[:old]), ref.mth(leaves), proof)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=4), min_size=2, max_size=40), st.data())
def test_a_tampered_inclusion_proof_fails(leaves: list[bytes], data: st.DataObject) -> None:
    tree = CountingNodes(leaves)
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(tree, index, size)
    leaf, root = merkle.leaf_hash(leaves[index]), ref.mth(leaves)
    i = data.draw(st.integers(0, len(proof) - 1))
    bad = [*proof[:i], bytes(32), *proof[i + 1 :]]
    with pytest.raises(RootMismatch) as info:
        merkle.verify_inclusion(index, size, leaf, bad, root)
    assert info.value.expected_root == root and info.value.calculated_root != root
    with pytest.raises((RootMismatch, ProofError)):
        merkle.verify_inclusion(index, size, leaf, proof[:-1], root)
    with pytest.raises((RootMismatch, ProofError)):
        merkle.verify_inclusion(index, size, leaf, [*proof, bytes(32)], root)
    with pytest.raises(RootMismatch):
        merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index] + b"!"), proof, root)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=4), min_size=2, max_size=40), st.data())
def test_a_rewritten_history_fails_consistency(leaves: list[bytes], data: st.DataObject) -> None:
    new = len(leaves)
    old = data.draw(st.integers(1, new - 1))
    rewritten = list(leaves)
    victim = data.draw(st.integers(0, old - 1))
    rewritten[victim] += b"!"
    tree = CountingNodes(rewritten)
    proof = merkle.consistency_proof(tree, old, new)
    with pytest.raises(RootMismatch):
        merkle.verify_consistency(old, new, ref.mth(leaves[:old]), ref.mth(rewritten), proof)


def test_proofs_read_o_log_n_nodes() -> None:
    leaves = [i.to_bytes(4, "big") for i in range(3000)]
    tree = CountingNodes(leaves)
    bound = 2 * math.ceil(math.log2(len(leaves))) + 2
    for index in (0, 1, 1500, 2047, 2048, 2999):
        tree.reads = 0
        merkle.inclusion_proof(tree, index, len(leaves))
        assert tree.reads <= bound, (index, tree.reads)
    for old in (1, 1000, 2048, 2999):
        tree.reads = 0
        merkle.consistency_proof(tree, old, len(leaves))
        assert tree.reads <= bound, (old, tree.reads)


def test_frontier_completes_each_perfect_subtree_once() -> None:
    frontier, nodes = Frontier().extend(merkle.leaf_hash(bytes([i])) for i in range(13))
    ids = [(level, index) for level, index, _ in nodes]
    assert len(ids) == len(set(ids)) == 13 + 6 + 3 + 1  # leaves, pairs, fours, the one eight
    assert frontier.size == 13 and len(frontier.hashes) == bin(13).count("1")


def test_preconditions_are_errors() -> None:
    tree = CountingNodes(CT_LEAVES)
    with pytest.raises(ProofError):
        merkle.inclusion_proof(tree, 8, 8)
    with pytest.raises(ProofError):
        merkle.consistency_proof(tree, 0, 8)
    with pytest.raises(ProofError):
        merkle.root_from_inclusion_proof(3, 2, bytes(32), [])
    with pytest.raises(ProofError):
        merkle.roots_from_consistency_proof(4, 4, bytes(32), [bytes(32)])
    with pytest.raises(ProofError):
        merkle.roots_from_consistency_proof(3, 8, bytes(32), [])


@given(st.lists(st.binary(max_size=4), max_size=40), st.lists(st.binary(max_size=4), max_size=40))
def test_extend_equals_repeated_append(first: list[bytes], second: list[bytes]) -> None:
    start, _ = Frontier().extend(merkle.leaf_hash(v) for v in first)
    stepwise, step_nodes = start, []
    for value in second:
        stepwise, completed = stepwise.append(merkle.leaf_hash(value))
        step_nodes += completed
    batched, batch_nodes = start.extend(merkle.leaf_hash(v) for v in second)
    assert batched == stepwise and batch_nodes == step_nodes
    assert batched.root() == ref.mth(first + second)
    assert merkle.leaf_hashes(second) == [merkle.leaf_hash(v) for v in second]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=6), max_size=130))
def test_root_of_equals_mth(leaves: list[bytes]) -> None:
    assert merkle.root_of(merkle.leaf_hashes(leaves)) == ref.mth(leaves)


@pytest.mark.parametrize("size", range(9))
def test_root_of_matches_the_ct_vectors(size: int) -> None:
    assert merkle.root_of(merkle.leaf_hashes(CT_LEAVES[:size])) == CT_ROOTS[size]


def _wrong_sizes(value: bytes) -> list[bytes]:
    return [b"", value[:31], value + b"\x00", value + value]


@pytest.mark.parametrize("which", ["leaf", "root", "element"])
def test_inclusion_verification_refuses_hashes_that_are_not_32_bytes(which: str) -> None:
    proof, leaf, root = CT_INCLUSION_0_OF_8, merkle.leaf_hash(CT_LEAVES[0]), CT_ROOTS[8]
    named = {"leaf": "leaf hash", "root": "root", "element": "inclusion proof element 1"}
    for wrong in _wrong_sizes({"leaf": leaf, "root": root, "element": proof[1]}[which]):
        args = {
            "leaf": leaf if which != "leaf" else wrong,
            "proof": proof if which != "element" else [proof[0], wrong, proof[2]],
            "root": root if which != "root" else wrong,
        }
        with pytest.raises(ProofError) as info:
            merkle.verify_inclusion(0, 8, args["leaf"], args["proof"], args["root"])
        assert info.value.detail == f"{named[which]} is {len(wrong)} bytes, a SHA-256 hash is 32"


@pytest.mark.parametrize("which", ["old root", "new root", "consistency proof element 0"])
def test_consistency_verification_refuses_hashes_that_are_not_32_bytes(which: str) -> None:
    proof = CT_CONSISTENCY[(6, 8)]
    for wrong in _wrong_sizes(bytes(32)):
        old = wrong if which == "old root" else CT_ROOTS[6]
        new = wrong if which == "new root" else CT_ROOTS[8]
        elements = [wrong, *proof[1:]] if which.startswith("consistency") else proof
        with pytest.raises(ProofError) as info:
            merkle.verify_consistency(6, 8, old, new, elements)
        assert info.value.detail == f"{which} is {len(wrong)} bytes, a SHA-256 hash is 32"
