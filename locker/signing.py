"""Ed25519 signing keys and C2SP signed notes (https://c2sp.org/signed-note), tlog checkpoints.

A note is UTF-8 text ending in a newline; its signed form appends a blank line and one line per
signature: an em dash, the key name, and base64(key id || signature). The key id is the first
four bytes of SHA-256(key name || "\\n" || 0x01 || public key); verifiers name a key by the
string `<name>+<hex key id>+<base64(0x01 || public key)>`. A checkpoint
(https://c2sp.org/tlog-checkpoint) is the note `<origin>\\n<tree size>\\n<base64 root>\\n`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from locker.errors import IntegrityError, InvalidInput, StorageUnavailable
from locker.files import create_secret

ED25519 = b"\x01"
EM_DASH = "\u2014"


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    @property
    def vkey(self) -> str:
        """The C2SP verifier key string."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ED25519 + self.public).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        try:
            name, hex_id, encoded = vkey.split("+", 2)  # names have no "+", base64 may
            name.encode()  # the key id hashes it: a lone surrogate (from argv) is no UTF-8
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise InvalidInput("invalid-key", f"not a verifier key: {vkey!r}") from None
        if raw[:1] != ED25519 or len(raw) != 33:
            raise InvalidInput("invalid-key", "only Ed25519 verifier keys are supported")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise InvalidInput("invalid-key", f"key id {hex_id} does not match the key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return Verifier(self.name, public)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def sign_note(text: str, signer: Signer) -> str:
    """The signed note of `text` (which must end in a newline)."""
    if not text.endswith("\n") or "\n\n" in text:
        raise InvalidInput("invalid-note", "note text must end in one newline and have no blank line")
    signature = signer.sign(text.encode())
    encoded = base64.b64encode(signer.verifier.key_id + signature).decode()
    return f"{text}\n{EM_DASH} {signer.name} {encoded}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The text of a signed note, if `verifier` signed it; else raise `IntegrityError`."""
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise InvalidInput("invalid-note", "no signature block")
    text += "\n"
    for line in signatures.splitlines():
        prefix = f"{EM_DASH} {verifier.name} "
        if not line.startswith(prefix):
            continue
        try:
            raw = base64.b64decode(line[len(prefix) :], validate=True)
        except ValueError:
            raise InvalidInput("invalid-note", f"the signature of {verifier.name} is not base64") from None
        if raw[:4] == verifier.key_id and verifier.verify(text.encode(), raw[4:]):
            return text
        raise IntegrityError(f"signature of {verifier.name}", "a valid Ed25519 signature", "an invalid one")
    raise IntegrityError("signed note", f"a signature by {verifier.name}", "none")


def checkpoint_text(origin: str, tree_size: int, root: bytes) -> str:
    return f"{origin}\n{tree_size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """(origin, tree size, root) of a checkpoint's text. Raises `InvalidInput`."""
    lines = text.split("\n")
    size = lines[1] if len(lines) >= 4 else ""
    malformed = InvalidInput(
        "invalid-checkpoint", "a checkpoint has an origin, a decimal size and a base64 root"
    )
    if not (size.isascii() and size.isdigit()):
        raise malformed
    try:
        return lines[0], int(size), base64.b64decode(lines[2], validate=True)
    except ValueError:  # a root that is not base64, or a size of more than 4300 digits
        raise malformed from None


def create_key(path: Path) -> None:
    """Write a new Ed25519 private key (PEM, PKCS#8) readable by its owner only."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if not create_secret(path, pem):
        raise FileExistsError(path)


def load_signer(path: Path, name: str) -> Signer:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise StorageUnavailable(f"signing key {path} does not exist; run `stella init`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput("invalid-key", f"{path} is not an Ed25519 private key")
    if path.stat().st_mode & 0o077:
        raise InvalidInput("unsafe-key", f"{path} is readable by others; chmod 600 it")
    return Signer(name, key)
