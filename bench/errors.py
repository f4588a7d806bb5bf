"""User-facing errors and the wrapper that turns them into one line and exit 2.

Every mistake a user can make (a bad flag, a bad config value, a missing
extra, an unavailable backend, unreadable data) raises :class:`UserError`.
Command-line entry points run through :func:`run_cli`, which prints the
message as one line on stderr and exits with status 2, never a traceback.

Exit statuses of every command: 0 done (for a training command: at least one
run finished), 1 nothing finished or a check failed, 2 a usage error, 130
after Ctrl-C (SIGINT) and 143 after SIGTERM or SIGHUP (a closed terminal);
after a signal every command writes what finished first. An ``OSError`` that
reaches the top (a disk that filled up, say) is one line and status 1.

:func:`run_cli` is also the shell every command runs in: it turns the three
signals into ``KeyboardInterrupt`` (remembering which came), makes sure the
standard streams exist (a command started with ``2>&-`` still runs, its
messages going nowhere) and never fail on a character they cannot encode, and
keeps every error message to one line of bounded length.
"""

from __future__ import annotations

import argparse
import atexit
import difflib
import errno
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as the shell reports a reader that stopped early
MAX_LINE = 600  # characters of an error line at most: the head and the tail of a longer one are kept
_signal = {"last": signal.SIGINT,  # the signal behind the latest KeyboardInterrupt
           "held": False, "pending": False,  # while results are written: a signal waits for the end
           "came": False,  # a signal came: the command ends, even where its KeyboardInterrupt was swallowed
           "at": 0.0}  # when the first came (time.monotonic)
SAME_STOP_S = 2.0  # a signal this soon after the first is the same stop: it does not interrupt its handling
SIGNAL_WORDS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM",
                signal.SIGHUP: "SIGHUP, the terminal closed",  # and the others whose default ends a process:
                signal.SIGUSR1: "SIGUSR1", signal.SIGUSR2: "SIGUSR2", signal.SIGALRM: "SIGALRM",
                signal.SIGVTALRM: "SIGVTALRM", signal.SIGPROF: "SIGPROF",
                signal.SIGXCPU: "SIGXCPU, the CPU-time limit (ulimit -t)"}  # results first, then 143


def interrupted_code() -> int:
    """130 after Ctrl-C (SIGINT), 143 after SIGTERM or SIGHUP."""
    return EXIT_SIGINT if _signal["last"] == signal.SIGINT else EXIT_SIGTERM


def interruption() -> str:
    """What interrupted the run, in words: ``Ctrl-C``, ``SIGTERM`` or ``SIGHUP, the terminal closed``."""
    return SIGNAL_WORDS.get(_signal["last"], f"signal {int(_signal['last'])}")


def signal_came() -> bool:
    """Whether a stopping signal came during this command (delivered, swallowed or waiting)."""
    return _signal["came"]


def stop_if_signalled() -> None:
    """Raise KeyboardInterrupt if a signal came whose KeyboardInterrupt never ended the work: code that
    catches every exception, or a callback CPython runs without letting an exception out (a ``gc``
    callback such as JAX's, a ``__del__``, a weakref callback) swallows it. Measuring loops call this
    between their pieces of work, so a swallowed Ctrl-C still stops them."""
    if _signal["came"] and not _signal["held"]:
        raise KeyboardInterrupt


def hold_signals() -> None:
    """From now on a signal waits until :func:`release_signals` (a second one does not wait)."""
    _signal["held"] = True


def release_signals() -> None:
    """Stop holding signals; raise the KeyboardInterrupt of one that came meanwhile."""
    pending = _signal["pending"]
    _signal["held"] = _signal["pending"] = False
    if pending:
        raise KeyboardInterrupt


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (a newline, an escape sequence, a NUL)
    written as an escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """``text`` on one line of at most ``limit`` characters, its head and tail around an ellipsis,
    :func:`printable`."""
    text = printable(" ".join(str(text).split()))
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[:limit - tail - 3]} … {text[-tail:]}"


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: Python's MemoryError, CUDA's OutOfMemoryError, or a
    library's RuntimeError (torch's CPU allocator: "can't allocate memory")."""
    text = str(exc).lower()
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "out of memory" in text or "can't allocate memory" in text)


class UserError(Exception):
    """A mistake in what the user asked for; its message is one line."""


class ConfigError(UserError):
    """An invalid configuration value: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {field}: {shorten(repr(value), 80)} (allowed: {allowed})")


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
    """Run ``main(argv)`` and exit; a :class:`UserError` becomes one line and exit 2. Once the command
    is over, a signal changes nothing: its exit status is the command's."""
    try:
        _run_cli(main, argv, prog)
    finally:
        hold_signals()  # while the exit unwinds and the exit handlers run; at the interpreter's end
        atexit.register(_ignore_signals)  # (after the last exit handler), ignored


def _run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None,
             prog: str | None) -> None:
    import bench

    prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "bench")
    if bench.early_signal:  # one came while the modules imported, and something swallowed it
        _signal.update(last=bench.early_signal[0], came=True)
    _standard_streams()
    # SIGTERM and SIGHUP end a run like Ctrl-C: what finished is written, with the status "interrupted"
    for signum in SIGNAL_WORDS:
        signal.signal(signum, _raise_interrupt)
    try:
        code = main(argv)
    except UserError as exc:
        print(f"{prog}: error: {shorten(str(exc), MAX_LINE - len(prog) - 9)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted ({interruption()})", file=sys.stderr)
        sys.exit(interrupted_code())
    except (MemoryError, RuntimeError) as exc:  # out of memory outside a run (a run records "oom")
        if not out_of_memory(exc):
            raise
        print(f"{prog}: error: out of memory (the limits of this machine or of `ulimit -v`); use "
              "smaller settings or free memory", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except BrokenPipeError:  # the reader went away (| head): nothing more to say to it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the exit's flush stays quiet
        sys.exit(EXIT_BROKEN_PIPE)
    except OSError as exc:  # the system refused: a full disk, a vanished folder, ...
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):  # a path the user gave that cannot name a file
            print(f"{prog}: error: {shorten(f'{exc.filename}: {exc.strerror}')} (allowed: a path this "
                  "file system can hold, without a loop of links)", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: {shorten(f'{where}{exc.strerror or exc}')}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    if signal_came() and code not in (EXIT_SIGINT, EXIT_SIGTERM):  # its KeyboardInterrupt was swallowed
        print(f"{prog}: interrupted ({interruption()})", file=sys.stderr)
        sys.exit(interrupted_code())
    sys.exit(code or 0)


def _ignore_signals() -> None:
    """At the interpreter's exit, the work done and written: a signal now changes nothing (CPython
    would restore the default dispositions and die of it, its status hiding the command's)."""
    for signum in SIGNAL_WORDS:
        signal.signal(signum, signal.SIG_IGN)


_TERMINALS: list[int] = []  # the standard descriptors that were a terminal when the command started


def _standard_streams() -> None:
    """Descriptors 0-2 open (on /dev/null when the caller closed them, so no file the command opens
    takes their place), ``sys.stdout``/``sys.stderr`` present, and unencodable characters escaped."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)  # takes the lowest free: fd
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the run
        elif not isinstance(stream, _ReaderMayLeave):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
            setattr(sys, name, _ReaderMayLeave(stream))
    _TERMINALS[:] = [fd for fd in (1, 2) if os.isatty(fd)]


GONE = (errno.EPIPE, errno.ENOSPC, errno.EIO)  # a stream's reader left, its disk is full, its terminal gone


class _ReaderMayLeave:
    """A standard stream whose reader may go away (``| head``, ``> /dev/full``): from the first broken
    pipe (or full disk, or I/O error) on, what it is given goes to /dev/null and the command goes on,
    so its runs and files are not lost to a progress line (every other attribute is the stream's own)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            self._to_null(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._to_null(exc)

    def _to_null(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno not in GONE:
            raise exc
        if self._stream.closed:
            self._stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the command's life
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._stream.fileno())  # what is still buffered goes there too
        finally:
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _raise_interrupt(signum, frame):
    again = _signal["came"] and time.monotonic() - _signal["at"] < SAME_STOP_S
    if not _signal["came"]:
        _signal["at"] = time.monotonic()
    _signal["last"], _signal["came"] = signum, True
    if again:  # a key pressed twice, `kill` sent to every process of a group: the same stop, which the
        return  # first one's KeyboardInterrupt (or the next check) is carrying out; later, a second one ends it
    if signum == signal.SIGHUP and _TERMINALS:  # the terminal is gone: what it would show goes nowhere
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in _TERMINALS:
            os.dup2(null, fd)
        os.close(null)
    if _signal["held"]:  # results are being written: finish them first, whatever else arrives (a
        _signal["pending"] = True  # second signal that interrupted an import left it half-loaded)
        return
    if _inside_import(frame):  # an interrupted import leaves its package half-loaded, and importing it
        return  # again fails: the import finishes, and the next stop_if_signalled() ends the work
    raise KeyboardInterrupt


def _inside_import(frame) -> bool:
    """Whether ``frame`` runs inside an ``import`` (the import machinery is on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False
