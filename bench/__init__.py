"""The harness: commands, runner, run layer, data, backends, reports.

Before ``bench.errors.run_cli`` can catch anything (while a command's modules
import, which takes a second or more), an uncaught ``MemoryError`` (a small
``ulimit -v``) is one line, exit 1; and when this package starts a command
(``python -m bench.X``, ``mlpbench-X``), a stopping signal is one line, exit
130 (Ctrl-C) or 143 (the others), never a traceback or a death by the signal.
"""

import os
import signal
import sys

early_signal: list[int] = []  # the signal that came while the command was starting, if one did


def _early(signum, frame):  # noqa: ARG001 - the signal handler's signature
    early_signal.append(signum)
    raise KeyboardInterrupt


def _starting_hook(kind, exc, tb, default=sys.excepthook):
    if issubclass(kind, KeyboardInterrupt) and early_signal:
        signum = early_signal[0]
        print(f"interrupted while starting ({signal.Signals(signum).name}): nothing was measured",
              file=sys.stderr)
        sys.stderr.flush()
        os._exit(130 if signum == signal.SIGINT else 143)
    if not issubclass(kind, MemoryError):
        return default(kind, exc, tb)
    print("error: out of memory while starting (the limits of this machine or of `ulimit -v`)",
          file=sys.stderr)


sys.excepthook = _starting_hook
_args = list(getattr(sys, "orig_argv", sys.argv))
_module = _args[_args.index("-m") + 1] if "-m" in _args[:-1] else ""
if _module.split(".")[0] == "bench" or os.path.basename(sys.argv[0] if sys.argv else "").startswith("mlpbench-"):
    from bench.errors import SIGNAL_WORDS  # the run shell's signals: run_cli takes them over

    for _signum in SIGNAL_WORDS:
        signal.signal(_signum, _early)
