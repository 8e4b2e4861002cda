"""Output: `--format table` for people, `--format json` for scripts.

rich is imported only when a table or a progress bar is drawn, so that `--format json` and plain
answers start fast (README, "Performance").
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


QUIET = False  # `stella --quiet`: no table and no progress bar (errors and JSON still print)


@functools.cache
def console(*, stderr: bool = False) -> Console:
    """The rich console on stdout (or stderr), made on first use."""
    from rich.console import Console

    return Console(stderr=stderr)


def progress(label: str, *, show: bool) -> Progress:
    """A progress bar on stderr (`label`, bar, done/total); drawn only if `show`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=console(stderr=True),
        disable=QUIET or not show,
    )


@contextlib.contextmanager
def stages(label: str, *, show: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    """A progress bar (`progress`) for work in named stages: yields `report(stage, done, total)`."""
    with progress(label, show=show) as bar:
        task = bar.add_task(label, total=None)

        def report(stage: str, done: int, total: int | None) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        yield report


class Lines:
    """Progress as plain lines on stderr, where a bar cannot be drawn (not a terminal): at most one
    line every `every` seconds, and the last one."""

    def __init__(self, label: str, every: float = 2.0) -> None:
        self.label, self.every = label, every
        self._shown = -math.inf
        self._last: tuple[int, int | None] | None = None
        self._printed: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None) -> None:
        self._last = (done, total)
        if self._last != self._printed and time.monotonic() - self._shown >= self.every:
            self._print()

    def close(self) -> None:
        if self._last != self._printed:
            self._print()

    def _print(self) -> None:
        assert self._last is not None
        done, total = self._printed = self._last
        self._shown = time.monotonic()
        if QUIET:
            return
        of = f" of {total}" if total is not None else ""
        sys.stderr.write(f"{self.label}: {done}{of}\n")
        sys.stderr.flush()


class Format(enum.StrEnum):
    table = "table"
    json = "json"


def to_dict(result: Any) -> Any:
    """An operation's typed result (a msgspec Struct) as plain data; anything else as it is."""
    import msgspec

    return msgspec.to_builtins(result) if isinstance(result, msgspec.Struct) else result


def emit(data: Any, fmt: Format, *, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print `data` (a mapping, a list of mappings, or a typed result) in the chosen format."""
    data = to_dict(data)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if QUIET:
        return
    from rich.table import Table

    if isinstance(data, Mapping):
        table = Table(show_header=False, title=title, box=None)
        table.add_column(style="bold")
        table.add_column()
        for key, value in data.items():
            table.add_row(str(key), _cell(value))
        console().print(table)
        return
    rows = list(data)
    cols = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_cell(row.get(col, "")) for col in cols))
    console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "\n".join(_cell(v) for v in value) if value else "-"
    return str(value)
