"""User-facing errors and the wrapper that turns them into one line and exit 2.

Every mistake a user can make (a bad flag, a bad config value, a missing
extra, an unavailable backend, unreadable data) raises :class:`UserError`.
Command-line entry points run through :func:`run_cli`, which prints the
message as one line on stderr and exits with status 2, never a traceback.

Exit statuses of every command: 0 done (for a training command: at least one
run finished), 1 nothing finished or a check failed, 2 a usage error, 130
after Ctrl-C and 143 after SIGTERM (both write what finished first). An
``OSError`` that reaches the top (a disk that filled up, say) is one line and
status 1.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as the shell reports a reader that stopped early
_signal = {"last": signal.SIGINT}  # the signal behind the latest KeyboardInterrupt


def interrupted_code() -> int:
    """130 after Ctrl-C (SIGINT), 143 after SIGTERM."""
    return EXIT_SIGTERM if _signal["last"] == signal.SIGTERM else EXIT_SIGINT


class UserError(Exception):
    """A mistake in what the user asked for; its message is one line."""


class ConfigError(UserError):
    """An invalid configuration value: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {field}: {value!r} (allowed: {allowed})")


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """`` (did you mean NAME?)`` for the name closest to a mistyped ``word``; empty when none is close."""
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2; a flag is never abbreviated (``--epoch``
    is an error, not ``--epochs``), and a misspelled flag or choice gets the closest name."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        if message.startswith("unrecognized arguments: "):
            flags = [w for w in message.split(": ", 1)[1].split() if w.startswith("--")]
            options = [o for o in self._option_string_actions if o.startswith("--")]
            message += "".join(did_you_mean(f.split("=", 1)[0], options) for f in flags[:1])
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:
            message += did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        raise UserError(message)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
            prog: str | None = None) -> None:
    """Run ``main(argv)`` and exit; a :class:`UserError` becomes one line and exit 2."""
    prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "bench")
    # SIGTERM ends a run like Ctrl-C: what finished is written, with the status "interrupted"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = main(argv)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(interrupted_code())
    except BrokenPipeError:  # the reader went away (| head): nothing more to say to it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the exit's flush stays quiet
        sys.exit(EXIT_BROKEN_PIPE)
    except OSError as exc:  # the system refused: a full disk, a vanished folder, ...
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    sys.exit(code or 0)


def _raise_interrupt(signum, frame):  # noqa: ARG001 - the signal handler's signature
    _signal["last"] = signum
    raise KeyboardInterrupt
