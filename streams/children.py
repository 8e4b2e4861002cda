"""Child processes of the worker and of the CLI: spawned fresh, and dying with their parent.

A loop moves work that holds the GIL (file-system calls, consuming a topic) into a child, so the
parent's interpreter only decides and folds. Children are spawned, not forked: a fork would copy
a process with an event loop and threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from multiprocessing.context import SpawnContext

SPAWN: SpawnContext = multiprocessing.get_context("spawn")


def exit_with(parent: int) -> None:
    """In a child: die with `parent`, even when it is killed with SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only: prctl(PR_SET_PDEATHSIG, SIGKILL)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above ran
        os._exit(1)
