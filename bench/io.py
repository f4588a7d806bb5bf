"""Atomic writes: a temporary file beside the target, then a rename, so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(df: pd.DataFrame, path: Path) -> None:
    _atomic_write(path, lambda fh: df.to_csv(fh, index=False))


def write_json(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, default=str))


def write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda fh: fh.write(text))
