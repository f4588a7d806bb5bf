"""What the harness's children share: keeping every process they start in reach, and naming how one ended.

Code nobody here wrote runs in processes of its own (``bench.checks.sandbox`` for ``bench.check``,
``bench.backends.isolated`` for course code and plugins). A process it starts and leaves behind
(``setsid`` and its parent gone) becomes the child of the process that waits for it, not of init's, and
is killed there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path


def become_subreaper() -> None:
    """Every process a descendant starts and orphans becomes this process's child instead of init's
    (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``), so none escapes :func:`kill_orphans`."""
    if sys.platform.startswith("linux") and ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def kill_orphans(keep: set[int]) -> None:
    """SIGKILL this process's children not in ``keep``: what its descendants started and left behind
    (reparented here), until none is left; each killed one's own children come next."""
    while True:
        orphans = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            pid = int(stat_file.parent.name)
            if int(fields[1]) == os.getpid() and fields[0] != "Z" and pid not in keep:
                orphans.append(pid)
        if not orphans:
            return
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def how_it_ended(code: int, *, shifted: bool = False) -> str:
    """``killed by SIGKILL`` (``signal 40`` for one without a name) for a status ``-N``, or ``128 + N``
    when ``shifted`` (a waiter that exits so); else ``exit status N``."""
    signum = -code if code < 0 else code - 128 if shifted and code > 128 else 0
    if not signum:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(signum).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {signum}"
