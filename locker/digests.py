"""Artifact ids: the content digest written `sha256:<64 lowercase hex>`."""

from __future__ import annotations

import hashlib
import re

from locker.errors import InvalidInput

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def digest_of(data: bytes) -> str:
    """The artifact id of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def parse_digest(text: str, *, what: str = "digest") -> str:
    """Return `text` if it is a well-formed digest, else raise `InvalidInput`.

    Only lowercase hex is accepted, so an id can never carry path characters.
    """
    if not is_digest(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidInput("invalid-digest", f"{what} {shown!r} is not sha256:<64 lowercase hex>")
    return text
