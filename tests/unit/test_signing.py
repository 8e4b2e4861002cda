"""Ed25519 keys and C2SP signed notes / checkpoints."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from locker import signing
from locker.errors import IntegrityError, InvalidInput, StorageUnavailable


def signer(name: str = "stella.test/anchors") -> signing.Signer:
    return signing.Signer(name, Ed25519PrivateKey.generate())


def test_sign_and_open_a_checkpoint() -> None:
    s = signer()
    text = signing.checkpoint_text("stella.test/events/0", 12, bytes(range(32)))
    note = signing.sign_note(text, s)
    assert note.startswith(text + "\n\u2014 stella.test/anchors ")
    assert signing.open_note(note, s.verifier) == text
    assert signing.parse_checkpoint(text) == ("stella.test/events/0", 12, bytes(range(32)))


def test_vkey_round_trip_and_key_id() -> None:
    v = signer().verifier
    again = signing.Verifier.from_vkey(v.vkey)
    assert again == v
    name, hex_id, encoded = v.vkey.split("+", 2)
    assert name == v.name and bytes.fromhex(hex_id) == v.key_id
    assert base64.b64decode(encoded) == b"\x01" + v.public


def test_tampered_notes_and_foreign_keys_fail() -> None:
    s = signer()
    note = signing.sign_note("origin\n5\nAAAA\n", s)
    with pytest.raises(IntegrityError):
        signing.open_note(note.replace("\n5\n", "\n6\n"), s.verifier)
    with pytest.raises(IntegrityError):
        signing.open_note(note, signer().verifier)  # same name, another key
    with pytest.raises(InvalidInput):
        signing.sign_note("no final newline", s)
    with pytest.raises(InvalidInput):
        signing.Verifier.from_vkey(s.verifier.vkey.replace("+", "+0", 1))


def test_key_file_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "anchor.key"
    signing.create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = signing.load_signer(path, "n")
    assert loaded.verifier.verify(b"m", loaded.sign(b"m"))
    with pytest.raises(FileExistsError):
        signing.create_key(path)  # never overwritten
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInput):
        signing.load_signer(path, "n")
    with pytest.raises(StorageUnavailable):
        signing.load_signer(tmp_path / "absent.key", "n")


@pytest.mark.parametrize("encoded", ["A", "!!!!", "AAAA\u00e9", "AAAA AAAA"])
def test_a_signature_line_that_is_not_base64_is_invalid_input(encoded: str) -> None:
    s = signer()
    with pytest.raises(InvalidInput) as info:
        signing.open_note(f"origin\n5\nAAAA\n\n\u2014 {s.name} {encoded}\n", s.verifier)
    assert info.value.reason == "invalid-note"


@pytest.mark.parametrize(
    "text",
    [
        "origin\n5\n",
        "origin\nfive\nAAAA\n",
        "origin\n\u0665\nAAAA\n",
        "origin\n-5\nAAAA\n",
        "o\n5\n!!\n",
        "o\n" + "9" * 5000 + "\nAAAA\n",
    ],
)
def test_a_malformed_checkpoint_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        signing.parse_checkpoint(text)
    assert info.value.reason == "invalid-checkpoint"
