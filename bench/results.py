"""The one results folder every command writes through: created atomically, locked, never overwritten.

:meth:`ResultsFolder.create` claims ``--out DIR`` (default
``results/<timestamp>_<label>/``) for one run of one command:

* the folder must not exist yet or be empty; it is created with its missing
  parents, and an exclusive ``flock`` on ``DIR/.lock`` is held until
  :meth:`ResultsFolder.close`. A second command aimed at the same folder, at
  the same time or later, is refused with one line (exit 2), never
  interleaved; the emptiness is checked again once the lock is held.
* ``resume=True`` (the sweep) reopens a folder that holds ``marker``.
* Every file goes through :mod:`bench.io` (a temporary file, then a rename),
  so a reader never sees half a file and a kill leaves no truncated one.
* :meth:`ResultsFolder.close` releases the lock and removes ``.lock``; a
  folder this command created and left empty (e.g. the data could not be
  loaded) is removed with the parents it created. A folder the user made is
  never removed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench import io
from bench.env import collect_env
from bench.errors import UserError

LOCK_FILE = ".lock"
RESULTS_ROOT = Path("results")


class ResultsFolder:
    """One command run's output folder; use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path, created: list[Path], lock_fd: int | None):
        self.path = path
        self._created = created  # folders this command made, innermost first
        self._lock_fd = lock_fd
        self.written: list[str] = []

    # ------------------------------------------------------------ claiming

    @classmethod
    def create(cls, out: str | os.PathLike | None, label: str, *, resume: bool = False,
               marker: str | None = None) -> "ResultsFolder":
        """Claim ``out`` (or a new ``results/<timestamp>_<label>/``); a UserError when it cannot."""
        path = Path(out) if out is not None else default_path(label)
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} exists and is not a folder")
        try:
            created = io.make_dirs(path)
        except OSError as exc:
            raise UserError(f"cannot create output folder {path}: {exc.strerror}") from None
        try:
            fd = _lock(path)
        except BaseException:
            io.remove_empty(created)
            raise
        folder = cls(path, created, fd)
        try:
            folder._check_contents(resume, marker)
            io.sweep_temporaries(path)
        except BaseException:
            folder.close()
            raise
        return folder

    def _check_contents(self, resume: bool, marker: str | None) -> None:
        try:
            names = {p.name for p in self.path.iterdir()} - {LOCK_FILE}
        except OSError as exc:
            raise UserError(f"cannot read output folder {self.path}: {exc.strerror}") from None
        names = {n for n in names if not n.endswith(io.TMP_SUFFIX)}
        if not names:
            if not os.access(self.path, os.W_OK | os.X_OK):
                raise UserError(f"output folder {self.path} is not writable (allowed: a folder you "
                                "can write to)")
            return
        if resume and marker in names:
            return
        what = (f"holds no {marker} (not a folder of this command; pick a new folder)" if resume
                else "already exists and is not empty (an existing run is never overwritten; "
                     "pick a new folder)")
        raise UserError(f"--out {self.path} {what}")

    # ------------------------------------------------------------ writing

    def _wrote(self, name: str) -> Path:
        if name not in self.written:
            self.written.append(name)
        return self.path / name

    def write_csv(self, name: str, df) -> Path:
        io.write_csv(df, self.path / name)
        return self._wrote(name)

    def write_json(self, name: str, obj: Any) -> Path:
        io.write_json(obj, self.path / name)
        return self._wrote(name)

    def write_text(self, name: str, text: str) -> Path:
        io.write_text(text, self.path / name)
        return self._wrote(name)

    def save_figure(self, name: str, fig, **savefig: Any) -> Path | None:
        """Save a matplotlib figure (closed afterwards); None with a warning line when it cannot
        be written (a full disk, say): a plot is never worth the tables and the report."""
        try:
            io.save_figure(fig, self.path / name, **savefig)
        except OSError as exc:
            print(f"warning: could not write {self.path / name}: {exc.strerror or exc}", flush=True)
            return None
        return self._wrote(name)

    def write_env(self, threads: int, extra: dict[str, Any]) -> dict[str, Any]:
        """env.json: machine, versions, threads, command, plus ``extra`` (config, data, ...)."""
        env = collect_env(threads, extra)
        self.write_json("env.json", env)
        return env

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Release the lock, remove ``.lock``; remove the folder if this command made it and it is empty."""
        if self._lock_fd is not None:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        io.remove_empty(self._created)

    def __enter__(self) -> "ResultsFolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_path(label: str) -> Path:
    """``results/<timestamp>_<label>``, with ``_2``, ``_3``, ... when taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = RESULTS_ROOT / f"{stamp}_{label}", 1
    while path.exists():
        k += 1
        path = RESULTS_ROOT / f"{stamp}_{label}_{k}"
    return path


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on ``path/.lock``; a UserError when another run holds it."""
    import fcntl

    lock = path / LOCK_FILE
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot take the lock {lock} ({exc.strerror}); allowed: a folder you can "
                            f"write to, whose {LOCK_FILE} is a file or absent") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"another run is writing to {path} (wait for it to finish, or pick "
                            "another --out)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we locked it: take the new one
