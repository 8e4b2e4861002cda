"""Trust material for evidence signatures, read from files: the PEM public keys DSSE signatures
are checked against (`Formats:TrustStore`), and a Sigstore trusted root (`Formats:SigstoreTrustedRoot`).
The service reads them at start, `verify --offline` from the options or the pack."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sigstore.errors import Error as SigstoreError
from sigstore.models import TrustedRoot

from locker import formats
from locker.errors import UsageError

KEY_SUFFIXES = (".pem", ".pub")


def key_files(folder: Path | None) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the key files (`*.pem`, `*.pub`) in `folder`, by name."""
    if folder is None or not folder.is_dir():
        return []
    return [
        (p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.suffix in KEY_SUFFIXES and p.is_file()
    ]


def trust_store(folder: Path | None) -> tuple[formats.TrustedKey, ...]:
    """The PEM public keys in `folder` (`key_files`); `UsageError` naming a bad one."""
    if folder is None:
        return ()
    if not folder.is_dir():
        raise UsageError(f"trust store {folder} is not a folder")
    try:
        return tuple(formats.load_trust_store(key_files(folder)))
    except ValueError as exc:
        raise UsageError(f"trust store {folder}: {exc}") from None


def sigstore_root(path: Path | None) -> TrustedRoot | None:
    """The Sigstore trusted root in the file at `path`; `UsageError` if it is not one."""
    if path is None:
        return None
    try:
        return TrustedRoot.from_file(str(path))
    except (OSError, ValueError, SigstoreError) as exc:
        raise UsageError(f"{path} is not a Sigstore trusted root: {exc}") from None


def sigstore_root_from(data: bytes) -> TrustedRoot:
    """A Sigstore trusted root from its bytes (sigstore-python reads roots from files only)."""
    with tempfile.TemporaryDirectory(prefix="stella-root-") as tmp:
        path = Path(tmp) / "trusted_root.json"
        path.write_bytes(data)
        root = sigstore_root(path)
    assert root is not None
    return root
