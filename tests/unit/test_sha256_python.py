"""The independent SHA-256 agrees with OpenSSL's on every length class and on arbitrary bytes."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from locker.sha256_python import sha256_hex


def test_fips_180_examples() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_every_padding_boundary() -> None:
    for n in (55, 56, 57, 63, 64, 65, 119, 120, 128):
        data = bytes(range(256))[:n] * 1
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest(), n


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_agrees_with_hashlib(data: bytes) -> None:
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
