"""The HTTP API's bearer token: one random secret in a file only its owner can read.

`stella init` creates it (`create`); the service reads it at start (`read`) and asks for it on the
routes that list artifacts or reveal more than one (`streams.api`). It is never printed or logged,
and `stella evidence diagnostics` redacts it.
"""

from __future__ import annotations

import hmac
import secrets
import stat
from pathlib import Path

from locker.errors import Refused
from locker.files import create_secret

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def create(path: Path) -> bool:
    """Write a new token to `path` (mode 0600, its folder 0700) unless one is there; True if made."""
    return create_secret(path, (secrets.token_urlsafe(32) + "\n").encode())


def read(path: Path) -> str | None:
    """The token in `path`; None if there is no file. `Refused` when others may read it, or when it
    is too short to be one."""
    try:
        info = path.stat()
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"API token file {path} is unreadable: {exc}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise Refused(f"API token file {path} is readable by others: chmod 600 {path}")
    if len(token) < 32:
        raise Refused(f"API token file {path} holds no token of at least 32 characters")
    return token


def matches(header: str | None, token: str) -> bool:
    """Does an `Authorization` header carry `token` as its bearer? In constant time."""
    if header is None or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")
