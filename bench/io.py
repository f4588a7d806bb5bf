"""Atomic writes: a temporary file beside the target, then a rename, so a reader never sees half a file.

The one writer of every result and cache file in the suite. The temporary
file is named ``.<name>.<random>.tmp`` in the target's folder (a kill leaves
at most such a file, never a truncated target) and gets the permissions of an
ordinary new file (``0666`` less the umask) before it replaces the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO], Any], *, binary: bool = False) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then move it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="", encoding="utf-8")) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(df: "pd.DataFrame", path: Path) -> None:
    atomic_write(path, lambda fh: df.to_csv(fh, index=False))


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, default=str))


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def save_figure(fig, path: Path, **savefig: Any) -> None:
    """Save a matplotlib figure as PNG atomically, and close it whatever happens."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", **{"dpi": 110, **savefig}),
                     binary=True)
    finally:
        plt.close(fig)


def sweep_temporaries(folder: Path) -> int:
    """Remove the ``.<name>.*.tmp`` files a killed writer left in ``folder``; how many went."""
    n = 0
    try:
        leftovers = list(Path(folder).glob(f".*{TMP_SUFFIX}"))
    except OSError:
        return 0
    for p in leftovers:
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


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
