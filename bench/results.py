"""The one results folder every command writes through: created atomically, locked, never overwritten.

:meth:`ResultsFolder.create` claims ``--out DIR`` (default
``results/<timestamp>_<label>/``) for one run of one command, after the
command has checked every setting (a refused command leaves nothing behind):

* the folder must not exist yet or be empty: every entry counts, hidden ones
  too, except the lock and the temporary files a killed writer of this suite
  left (``bench.io``), which are removed. It is created with its missing
  parents, and an exclusive ``flock`` on ``DIR/.lock`` is held until
  :meth:`ResultsFolder.close`. The lock file is opened without following a
  link (a planted ``.lock`` link is refused, never created through). A second
  command aimed at the same folder, at the same time or later, is refused with
  one line (exit 2), never interleaved; the emptiness is checked again once the
  lock is held.
* ``resume=True`` (the sweep) reopens a folder that holds ``marker``.
* Every file goes through :mod:`bench.io` (a temporary file, then a rename;
  never through a link), so a reader never sees half a file and a kill leaves
  no truncated one.
* :meth:`ResultsFolder.measuring` is where a command measures: Ctrl-C,
  SIGTERM or SIGHUP ends the measurements there, and the command then writes
  what it has, says so in its report (:meth:`interrupted_note`) and exits 130
  or 143 (:func:`bench.errors.interrupted_code`). After the block, a signal
  waits until the folder is closed, so the results are written whole.
* :meth:`ResultsFolder.close` releases the lock and removes ``.lock``; a
  folder this command created and left empty (e.g. the data could not be
  loaded) is removed with the parents it created. A folder the user made is
  never removed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import io
from bench.env import collect_env
from bench.errors import UserError, hold_signals, interruption, release_signals, shorten, stop_if_signalled

LOCK_FILE = ".lock"
RESULTS_ROOT = Path("results")


class ResultsFolder:
    """One command run's output folder; use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path, created: list[Path], lock_fd: int | None):
        self.path = path
        self._created = created  # folders this command made, innermost first
        self._lock_fd = lock_fd
        self.shown = path        # the path as the user gave it, for messages
        self.written: list[str] = []
        self.unwritten: dict[str, str] = {}  # once measuring began: a file whose last write failed, and why
        self.measured = False    # measuring began: a file that cannot be written costs that file only
        self.interrupted = False
        self.resumed = False     # the folder held a run of this command, which goes on
        self.env_name = "env.json"  # this command's record (beside the first one in a resumed folder)
        self._made_lock = True   # .lock was created by this command (one that was there stays)

    # ------------------------------------------------------------ claiming

    @classmethod
    def create(cls, out: str | os.PathLike | None, label: str, *, resume: bool = False,
               marker: str | None = None, reads: Sequence[str] = ()) -> "ResultsFolder":
        """Claim ``out`` (or a new ``results/<timestamp>_<label>/``); a UserError when it cannot, or
        when it lies inside a folder the command ``reads`` (the next run would read the results)."""
        if out is not None and str(out) == "":
            raise UserError("--out is empty (allowed: a folder path; leave it out for results/<timestamp>_...)")
        shown = Path(out) if out is not None else default_path(label)
        # every write goes here, wherever code run meanwhile moves the process; "a/../b" is b, and no
        # folder a is made on the way (normpath: lexical, as the user reads the path)
        path = Path(os.path.normpath(shown.absolute()))
        for source in reads:
            inside = Path(os.path.realpath(source))
            if inside == Path(os.path.realpath(path)) or inside in Path(os.path.realpath(path)).parents:
                raise UserError(f"--out {shown} is inside {source}, which this command reads (allowed: a "
                                "folder outside what it reads)")
        try:  # a name the file system refuses (too long, say) fails in the first call that uses it
            if path.is_symlink():
                raise UserError(f"--out {shown} is a symbolic link; refusing to write through it (allowed: "
                                "a new or empty folder, named by its own path)")
            if path.exists() and not path.is_dir():
                raise UserError(f"--out {shown} exists and is not a folder (allowed: a new or empty folder)")
            created = io.make_dirs(path)
        except OSError as exc:
            raise UserError(f"cannot create output folder {shown}: {exc.strerror} (allowed: a path this "
                            "file system can hold, in a folder you can write to)") from None
        try:
            fd, made_lock = _lock(path, shown)
        except BaseException:
            io.remove_empty(created)
            raise
        folder = cls(path, created, fd)
        folder._made_lock, folder.shown = made_lock, shown
        try:
            folder._check_contents(resume, marker)
        except BaseException:
            folder.close()
            raise
        return folder

    def _check_contents(self, resume: bool, marker: str | None) -> None:
        try:
            names = {p.name for p in self.path.iterdir()} - {LOCK_FILE}
        except OSError as exc:
            raise UserError(f"cannot read output folder {self.shown}: {exc.strerror}") from None
        names -= {n for n in names if io.is_temporary(n)  # a killed writer's regular file: swept below
                  and stat.S_ISREG((self.path / n).lstat().st_mode)}
        self.resumed = bool(names) and resume and marker in names
        if self.resumed and "env.json" in names:  # the record of the run that made the folder stays
            stamp, k = time.strftime("%Y%m%d-%H%M%S"), 1
            while f"env.resumed-{stamp}{f'_{k}' if k > 1 else ''}.json" in names:
                k += 1
            self.env_name = f"env.resumed-{stamp}{f'_{k}' if k > 1 else ''}.json"
        if names and not self.resumed:
            what = (f"holds no {marker} (not a folder of this command; pick a new folder)" if resume
                    else "already exists and is not empty (an existing run is never overwritten; "
                         "pick a new folder)")
            raise UserError(f"--out {self.shown} {what}")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UserError(f"output folder {self.shown} is not writable (allowed: a folder you "
                            "can write to)")
        io.sweep_temporaries(self.path)

    # ------------------------------------------------------------ writing

    def _wrote(self, name: str) -> Path:
        if name not in self.written:
            self.written.append(name)
        return self.path / name

    def _write(self, name: str, write, value, strict: bool = False) -> Path | None:
        """Write one file. Before measuring, or ``strict``, a failure is the command's (one line: a disk
        full from the start fails before any work). Once measuring began, a file that cannot be written
        (a full disk, a link planted there) costs that file: a warning line (once per reason), None, and
        :attr:`unwritten` names it; the copy an earlier write left stays."""
        try:
            write(value, self.path / name)
        except (OSError, UserError) as exc:
            if isinstance(exc, OSError):  # the error line names the file it could not write
                exc.filename = str(self.path / name)
            if strict or not self.measured:
                raise
            why = _why(exc)
            if self.unwritten.get(name) != why:
                print(f"warning: could not write {name}: {why}", file=sys.stderr, flush=True)
            self.unwritten[name] = why
            return None
        self.unwritten.pop(name, None)
        return self._wrote(name)

    def unwritten_lines(self) -> list[str]:
        """One line per file whose last write failed, for the terminal."""
        return [f"not written: {name}: {why}" + (" (the copy there is an earlier write's)" if name in self.written
                                                 else "") for name, why in self.unwritten.items()]

    def write_csv(self, name: str, df) -> Path:
        return self._write(name, io.write_csv, df)

    def write_json(self, name: str, obj: Any) -> Path:
        return self._write(name, io.write_json, obj)

    def write_text(self, name: str, text: str) -> Path:
        return self._write(name, io.write_text, text)

    def save_figure(self, name: str, fig, **savefig: Any) -> Path | None:
        """Save a matplotlib figure (closed afterwards); None with a warning line when it cannot
        be written (a full disk, say): a plot is never worth the tables and the report."""
        try:
            io.save_figure(fig, self.path / name, **savefig)
        except (OSError, UserError) as exc:  # a full disk, a link planted there
            print(f"warning: could not write {name}: {_why(exc)}", file=sys.stderr, flush=True)
            return None
        return self._wrote(name)

    def write_env(self, threads: int, extra: dict[str, Any]) -> dict[str, Any]:
        """env.json: machine, versions, threads, command, plus ``extra`` (config, data, ...)."""
        env = collect_env(threads, extra)
        self._write(self.env_name, io.write_json, env, strict=True)  # the first record: no work without it
        return env

    # ------------------------------------------------------------ measuring

    @contextmanager
    def measuring(self) -> Iterator["ResultsFolder"]:
        """The block a command measures in: Ctrl-C, SIGTERM or SIGHUP ends it (``interrupted``), and
        the command goes on to write what it has. From the end of the block until :meth:`close`, a
        signal waits for the results to be written (a second one does not wait)."""
        self.measured = True
        try:
            yield self
            stop_if_signalled()  # one whose KeyboardInterrupt something swallowed
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            hold_signals()

    def interrupted_note(self) -> list[str]:
        """The report's lines saying the run was cut short, and by what (none when it was not)."""
        if not self.interrupted:
            return []
        return [f"**This run was interrupted ({interruption()}): the tables hold what finished before "
                "it.**", ""]

    # ------------------------------------------------------------ closing

    def discard_unmeasured(self) -> None:
        """For a command refused after the claim (a check only its measurement can make): when it has
        written nothing but its own record (``env.json``, or its ``env.resumed-*.json`` in a resumed
        folder), remove that, so the folder is left as it was found; a file of any measurement stays."""
        if set(self.written) <= {self.env_name}:
            for name in self.written:
                (self.path / name).unlink(missing_ok=True)
            self.written.clear()
            for folder, _subs, _files in sorted(os.walk(self.path), key=lambda w: -len(w[0])):  # deepest first
                if Path(folder) != self.path and not os.path.islink(folder):
                    with contextlib.suppress(OSError):  # one holding a file stays
                        os.rmdir(folder)  # an empty folder a tool made for its output (pytest's storage)

    def _drop_lock(self) -> None:
        """Remove ``.lock`` if this command made it, and release the flock."""
        if self._lock_fd is not None:
            if self._made_lock:
                (self.path / LOCK_FILE).unlink(missing_ok=True)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def close(self) -> None:
        """Release the lock, remove ``.lock`` if this command made it; remove the folder if this command
        made it and it is empty."""
        self._drop_lock()
        io.remove_empty(self._created)
        release_signals()  # a signal that waited for the results ends the command now

    def __enter__(self) -> "ResultsFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: OSError | UserError) -> str:
    """Why a file could not be written, on one line: the system's words and the file, or the refusal."""
    return shorten(f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else str(exc),
                   300)


def default_path(label: str) -> Path:
    """``results/<timestamp>_<label>``, with ``_2``, ``_3``, ... when taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = RESULTS_ROOT / f"{stamp}_{label}", 1
    while path.exists():
        k += 1
        path = RESULTS_ROOT / f"{stamp}_{label}_{k}"
    return path


def _lock(path: Path, shown: Path) -> tuple[int, bool]:
    """An exclusive, non-blocking flock on ``path/.lock``, and whether this call created the file; a
    UserError when another run holds it."""
    import fcntl

    lock = path / LOCK_FILE
    while True:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:  # never through a link: O_NOFOLLOW fails on one, dangling or not
            try:
                fd, made = os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:  # another run's lock, a killed run's, or the user's own file
                fd, made = os.open(lock, flags), False
        except FileNotFoundError:
            continue  # removed between the two opens by the run that held it: try again
        except OSError as exc:
            why = "a symbolic link" if os.path.islink(lock) else exc.strerror
            raise UserError(f"cannot take the lock {lock} ({why}); allowed: a folder you can "
                            f"write to, whose {LOCK_FILE} is a regular file or absent") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"cannot take the lock {lock} (not a regular file); allowed: a folder you "
                            f"can write to, whose {LOCK_FILE} is a regular file or absent")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"another run is writing to {shown} (wait for it to finish, or pick "
                            "another --out)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, made
        os.close(fd)  # the holder removed the file as we locked it: take the new one
