"""Sizes and ages as operators write them: "500G", "1.5TiB", "20GB", "4096" (binary units);
"365d", "12h", "4w", "1y", "30m", "90s", and "forever"."""

from __future__ import annotations

import re
from datetime import timedelta

from locker.errors import UsageError

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, *, what: str = "--size") -> int:
    """Bytes in `text`; raises `UsageError` naming `what`."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"{what} {text!r}: give a size such as 500G, 1.5T or 20GiB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def human(n: int) -> str:
    """`n` bytes in the largest binary unit that keeps it at 1 or more."""
    unit = max((u for u in ("K", "M", "G", "T") if n >= UNITS[u]), key=UNITS.__getitem__, default="")
    return f"{n} B" if not unit else f"{n / UNITS[unit]:.1f} {unit}iB"


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
FOREVER = ("forever", "never", "0")


def parse_age(text: str, *, what: str) -> timedelta | None:
    """The age in `text`; None for "forever" (keep); raises `UsageError` naming `what`."""
    if text.strip().lower() in FOREVER:
        return None
    match = _AGE.match(text)
    if match is None:
        raise UsageError(f"{what} {text!r}: give an age such as 365d, 12h, 4w or 1y, or forever")
    return timedelta(seconds=float(match.group(1)) * _AGE_UNITS[match.group(2).lower()])
