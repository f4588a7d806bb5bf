"""The harness: commands, runner, run layer, data, backends, reports.

An uncaught ``MemoryError`` (a command's imports under a small ``ulimit -v``,
before ``bench.errors.run_cli`` can catch anything) is one line, exit 1.
"""

import sys


def _memory_hook(kind, exc, tb, default=sys.excepthook):
    if not issubclass(kind, MemoryError):
        return default(kind, exc, tb)
    print("error: out of memory while starting (the limits of this machine or of `ulimit -v`)",
          file=sys.stderr)


sys.excepthook = _memory_hook
