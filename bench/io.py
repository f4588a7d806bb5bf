"""The one writer and the one reader of every file the suite touches.

**Writing** (:func:`atomic_write`): a temporary file beside the target, then a
rename, so a reader never sees half a file. The temporary file is named
``.mlpbench-tmp.<name>.<8 random characters>.tmp`` in the target's folder (a
kill leaves at most such a file, never a truncated target;
:func:`sweep_temporaries` removes those, when they are regular files of this
user, and nothing else: a user's ``.notes.tmp`` is never taken for one) and gets the permissions of an ordinary new file
(``0666`` less the umask). A target that is a symbolic link is refused: the
suite never writes through, or over, a link someone planted. Text is UTF-8;
what cannot be encoded (a path holding a byte that is not UTF-8) is written
as a backslash escape, never lost to an encoding error.

**Reading** (:func:`open_regular`, :func:`read_bounded`, :func:`read_json`):
every file is opened without blocking (``O_NONBLOCK``), checked on the opened
descriptor to be a regular file (a device such as ``/dev/zero``, a FIFO or a
folder, also behind a link, is refused), refused when larger than the cap its
kind allows, and read for at most that many bytes. Every refusal is one
:class:`~bench.errors.UserError` line naming the file; what the system refuses
(a missing file, no permission) stays an ``OSError`` for the caller to word.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from bench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

TMP_PREFIX, TMP_SUFFIX = ".mlpbench-tmp.", ".tmp"  # reserved: no other program's or user's name
# what tempfile.mkstemp(prefix=TMP_PREFIX + "<name>.", suffix=".tmp") makes: 8 characters of its alphabet
_TEMPORARY = re.compile(rf"^{re.escape(TMP_PREFIX)}.+\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}$")
FIGURE_INCHES = 30.0  # the largest side of a saved figure (3300 px at the default 110 dpi)
JSON_BYTES = 64 * 2**20  # the largest JSON document read (a result's env.json is a few KiB)
# Python objects per byte of JSON at worst: "{}," is 3 bytes and a 64-byte dict plus its 8-byte slot
# (24x); a 198 MB file of empty objects took 3.7 GB to parse (adversarial O18), nested one-element
# lists about 50x (N-F3)
JSON_EXPANSION = 64
JSON_NESTING = 32  # levels of one JSON document (pytest-benchmark's nest 5)
FIGURE_RESERVE = 2 * 2**20  # free bytes a figure must leave: the tables and the report come first
FIGURE_INODES = 16  # and free files (inodes): each table, the report and their temporaries need one


# ---------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_link(path: Path) -> None:
    """A UserError when ``path`` is a symbolic link (dangling or not): nothing is written through one."""
    if os.path.islink(path):
        raise UserError(f"{path} is a symbolic link; refusing to write through it (allowed: a regular "
                        "file or a new name)")


def atomic_write(path: Path, write: Callable[[IO], Any], *, binary: bool = False) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then move it over ``path``; on a file
    system with no inode left for the temporary, an existing ``path`` is rewritten in place."""
    path = Path(path)
    refuse_link(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:  # no inode left for a temporary file: an existing one is rewritten in place
        if exc.errno != errno.ENOSPC or not path.is_file():
            raise
        fd, tmp = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW), None
    try:
        with (os.fdopen(fd, "wb") if binary else
              os.fdopen(fd, "w", newline="", encoding="utf-8", errors="backslashreplace")) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if tmp is not None:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
            refuse_link(path)  # planted while the file was written
            os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(df: "pd.DataFrame", path: Path) -> None:
    atomic_write(path, lambda fh: df.to_csv(fh, index=False))


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, default=str))


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def save_figure(fig, path: Path, **savefig: Any) -> None:
    """Save a matplotlib figure as PNG atomically, and close it whatever happens.

    A figure is not written when less than ``FIGURE_RESERVE`` bytes are free there (``OSError``
    ENOSPC): that room is kept for the tables and the report, which matter more than a plot. No
    side is larger than ``FIGURE_INCHES``, whatever the figure asked for (its rendering's memory
    and time stay bounded)."""
    import matplotlib.pyplot as plt

    try:
        width, height = fig.get_size_inches()
        fig.set_size_inches(min(width, FIGURE_INCHES), min(height, FIGURE_INCHES))
        room = os.statvfs(Path(path).parent)
        free, inodes = room.f_bavail * room.f_frsize, room.f_favail if room.f_files else FIGURE_INODES
        if free < FIGURE_RESERVE or inodes < FIGURE_INODES:
            raise OSError(errno.ENOSPC, f"only {free} bytes and {inodes} files free, kept for the tables "
                          "and the report", str(path))
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", **{"dpi": 110, **savefig}),
                     binary=True)
    finally:
        plt.close(fig)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of :func:`atomic_write`'s temporary files."""
    return _TEMPORARY.match(name) is not None


def sweep_temporaries(folder: Path) -> int:
    """Remove the temporary files a killed :func:`atomic_write` left in ``folder``: regular files of
    this user with the reserved name, never through a link; how many went."""
    n = 0
    if os.path.islink(folder):
        return 0
    try:
        with os.scandir(folder) as entries:
            leftovers = [e for e in entries if is_temporary(e.name)]
    except OSError:
        return 0
    for e in leftovers:
        try:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                os.unlink(e.path)
                n += 1
        except OSError:
            pass
    return n


def owned_folder(path: Path, depth: int, *, create: bool) -> bool:
    """Whether ``path`` is a folder, after checking its last ``depth`` components (the suite's own:
    a cache entry and its parent) with ``lstat``, creating them when ``create``: a symbolic link or
    a file there is a UserError naming it, so nothing is read, swept or written through a planted
    link. The components above are the user's, taken as named (OSError when they cannot be made)."""
    path = Path(path)
    owned = [path, *path.parents][:depth][::-1]
    if create:
        owned[0].parent.mkdir(parents=True, exist_ok=True)
    for p in owned:
        if create:
            try:
                p.mkdir()
            except FileExistsError:
                pass
        try:
            mode = os.lstat(p).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not stat.S_ISDIR(mode):
            raise UserError(f"{p} is a symbolic link or not a folder; refusing to read or write "
                            "through it (allowed: a folder, or nothing there)")
    return True


def make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the folders created, innermost first (OSError on failure,
    after removing what it made)."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue  # another process made it between the check and here
    except OSError:
        remove_empty(missing)
        raise
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder (innermost first) while it is empty; stop at the first that is not."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


# ---------------------------------------------------------------- reading


def open_regular(path: Path, limit: int, what: str = "a file of its kind") -> BinaryIO:
    """``path`` opened for reading, once it is known to be a regular file of at most ``limit`` bytes.

    Never blocks: the file is opened with ``O_NONBLOCK`` and checked with
    ``fstat`` on the descriptor, so a FIFO, a device or a folder (a link to
    one too) is refused before a byte is read. ``what`` names the kind in the
    message (``"a CIFAR-10 file of its kind"``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: not a regular file (a device, FIFO or folder); refusing to read it")
        if st.st_size > limit:
            raise UserError(f"{path}: {st.st_size} bytes, more than the {limit} {what} can be; "
                            "refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, limit: int, what: str = "a file of its kind") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (:func:`open_regular`), read once."""
    with open_regular(path, limit, what) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew after the check
        raise UserError(f"{path}: more than the {limit} bytes {what} can be; refusing to read it")
    return data


def shallow(obj: Any, where: object, limit: int, what: str, *, shared: bool = False) -> Any:
    """``obj`` when its lists, tuples and dicts nest at most ``limit`` deep, walked without recursion in
    memory of the depth alone; a deeper one is one UserError here, before anything recursive (a repr, a
    comparison, a copy) meets it. ``shared``: a container may be met twice (a pickle's memo: its own
    size bounds the set of those walked), and is walked once."""
    stack, seen = [iter((obj,))], set()
    while stack:
        for item in stack[-1]:
            if not isinstance(item, (list, tuple, dict)) or (shared and id(item) in seen):
                continue
            if len(stack) > limit:
                raise UserError(f"{where}: nested more than {limit} deep (allowed: {what})")
            if shared:
                seen.add(id(item))
            stack.append(iter(itertools.chain.from_iterable(item.items())) if isinstance(item, dict)
                         else iter(item))
            break
        else:
            stack.pop()
    return obj


def read_json(path: Path, limit: int = JSON_BYTES, what: str = "a JSON file of its kind") -> Any:
    """A JSON document from a bounded regular file; anything that is not JSON is one UserError."""
    data = read_bounded(path, limit, what)
    from bench.memory import GIB, available  # noqa: PLC0415 - bench.memory reads through this module

    room = available()
    if room is not None and len(data) * JSON_EXPANSION > room[0]:
        raise UserError(f"{path}: {len(data)} bytes of JSON can take {JSON_EXPANSION} times as much "
                        f"once parsed, and {room[0] / GIB:.1f} GiB is available ({room[1]}); "
                        f"refusing to parse it (allowed: {what} that fits)")
    try:
        return shallow(json.loads(data.decode("utf-8")), path, JSON_NESTING, what)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (allowed: {what})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be {what}") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]})") from None
