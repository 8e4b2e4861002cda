"""Times as the locker shows them: ISO 8601 in UTC with a `Z` (`2026-11-29T05:00:42.5Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """`moment` in ISO 8601, with `Z` for a UTC offset (the locker records times in UTC)."""
    return moment.isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return iso_utc(datetime.now(UTC))
