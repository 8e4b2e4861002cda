"""The retention policy: how long each kind of artifact is kept. Pure.

`Retention:Default` applies to every kind without its own `Retention:<kind>`; "forever" keeps.
`Retention:Aggressive` is the emergency tier (`cleanup --apply-retention --aggressive`): no kind
is kept longer than it then. A legal hold overrides both (`projections.retention`). The CLI reads
the policy from its config and sends it with the cleanup command (`from_max_ages`), so the dry run
and the cleanup apply the same policy, and the log records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from locker.sizes import parse_age


@dataclass(frozen=True)
class Policy:
    default: timedelta | None  # None: kept forever
    by_kind: Mapping[str, timedelta | None]  # kinds with a policy of their own
    aggressive: timedelta | None

    def max_age(self, kind: str, *, aggressive: bool = False) -> timedelta | None:
        age = self.by_kind.get(kind, self.default)
        if aggressive and self.aggressive is not None:
            age = self.aggressive if age is None else min(age, self.aggressive)
        return age

    def describe(self, kinds: tuple[str, ...], *, aggressive: bool = False) -> dict[str, str]:
        """Each kind's maximum age as text ("forever", or "365 days, 0:00:00"'s days or seconds)."""
        return {kind: _text(self.max_age(kind, aggressive=aggressive)) for kind in kinds}


def from_max_ages(max_ages: Mapping[str, str]) -> Policy:
    """The policy a `retention.apply` command carries (each kind's maximum age as text). Raises
    `UsageError` for a text that is not an age."""
    return Policy(
        default=None,
        by_kind={kind: parse_age(text, what=f"max age of {kind}") for kind, text in max_ages.items()},
        aggressive=None,
    )


def _text(age: timedelta | None) -> str:
    if age is None:
        return "forever"
    seconds = int(age.total_seconds())
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds}s"
