"""Budgets of the fuzz tests (`-m fuzz`), as Hypothesis settings profiles.

- `fuzz-ci`, the default: what `make test` runs. Each test runs its own modest number of
  examples (`fuzz_settings(n)`), all of them together in about a minute; derandomized (the same
  examples every run, so a CI failure reproduces) and without an example database (nothing
  learnt on one machine changes what another runs).
- `fuzz`, for `make fuzz` (`STELLA_FUZZ_PROFILE=fuzz`): random, `FUZZ_EXAMPLES` examples a test
  (default 20,000), a deadline per example, and a database under `.hypothesis/` (git-ignored),
  so a failure found once is tried first the next time.

Neither is loaded as Hypothesis's default: the other suites' Hypothesis tests keep theirs.

Every example also runs under `bounded` (a CPU-time alarm: a decoder that loops forever fails the
example instead of hanging the suite) and the readers' examples under `peak_memory`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from types import FrameType

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE = os.environ.get("STELLA_FUZZ_PROFILE", "fuzz-ci")
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20000"))
# A function-scoped fixture is not reset between examples: these tests use none that holds state.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]

settings.register_profile(
    "fuzz-ci",
    derandomize=True,
    database=None,
    deadline=None,  # a loaded CI machine: `bounded` catches what truly hangs
    suppress_health_check=_QUIET,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(".hypothesis/fuzz"),
    deadline=timedelta(seconds=5),
    suppress_health_check=_QUIET,
    print_blob=True,
)


def fuzz_settings(ci_examples: int) -> settings:
    """The active profile's settings, with `ci_examples` examples under `fuzz-ci`."""
    profile = settings.get_profile(PROFILE)
    if PROFILE == "fuzz-ci":
        return settings(profile, max_examples=ci_examples)
    return profile


class Hang(Exception):
    """An example used more CPU time than `bounded` allows."""


CPU_SECONDS = 20.0


@contextlib.contextmanager
def bounded(seconds: float = CPU_SECONDS) -> Iterator[None]:
    """Fail if the block uses more than `seconds` of CPU time. SIGPROF, not SIGALRM: that one is
    pytest-timeout's. The flag catches a `Hang` that the code under test swallowed."""
    fired = False

    def alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        fired = True
        raise Hang(f"more than {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    if fired:
        raise Hang(f"more than {seconds} s of CPU time (the Hang was caught and ignored)")


class Peak:
    bytes = 0


@contextlib.contextmanager
def peak_memory() -> Iterator[Peak]:
    """The most memory the block held at once (Python's allocations, bytes objects included)."""
    peak = Peak()
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
