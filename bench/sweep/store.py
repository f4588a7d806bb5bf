"""The sweep folder: ``sweep.json`` (what is swept), ``sweep.csv`` (one row per finished task), resumable.

Every finished task is written at once: the whole CSV is rewritten to a
temporary file beside it and renamed over it (``bench.io.write_csv``), so a
killed sweep leaves the CSV as it was after the last finished task, never
half a row. A task's key is its grid values (canonical text), its backend and
its seed; re-running the same sweep into the same folder skips every key
whose status is final (``ok``, ``diverged``) and runs the rest again (the
missing ones, and the failed ones: ``failed``, ``oom``, ``worker_lost``),
replacing their rows.

The folder is a ``bench.results.ResultsFolder`` opened for resuming: one
sweep at a time may write it (a second one fails with one line), and a folder
that holds anything but a sweep is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.io import write_csv, write_json
from bench.results import ResultsFolder
from bench.sweep.point import TaskResult

SPEC_FILE = "sweep.json"
ROWS_FILE = "sweep.csv"
EPOCHS_FILE = "epochs.csv"
FINAL = ("ok", "diverged")  # statuses a re-run keeps; the others are run again
MEASURED = ("test_acc", "median_epoch_seconds_all")  # what a finished ok row always holds
FIRST_COLUMNS = ("backend", "seed", "status", "error", "test_acc", "median_epoch_seconds_trusted",
                 "n_epochs_trusted", "gemm_seconds_trusted", "epoch_to_gemm_trusted", "timing_quality",
                 "median_epoch_seconds_all", "hostname")


class SweepStore:
    """The rows of one sweep folder, kept in memory and rewritten atomically on every change."""

    def __init__(self, out: Path, spec: dict[str, Any]):
        self.out = Path(out)
        self.spec = spec
        self.fields: list[str] = list(spec["grid"])
        self.key_columns = [*self.fields, "backend", "seed"]
        self.folder: ResultsFolder | None = None
        self._rows: dict[tuple[str, ...], dict[str, Any]] = {}
        self._epochs: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._env_written: set[str] = set()
        self.resumed = False

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, out: str | Path, spec: dict[str, Any]) -> "SweepStore":
        """Create the folder, or resume it when it holds the same sweep; a different one is a UserError."""
        store = cls(Path(out), _plain(spec))
        store.folder = ResultsFolder.create(store.out, "sweep", resume=True, marker=SPEC_FILE)
        try:
            existing = store.out / SPEC_FILE
            if existing.exists():
                store._resume(existing)
            else:
                write_json(store.spec, existing)
        except BaseException:
            store.close()
            raise
        return store

    def _resume(self, spec_path: Path) -> None:
        try:
            old = json.loads(spec_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{spec_path}: cannot read the stored sweep ({_short(exc)}); move it away "
                            "or pick a new --out") from None
        if not isinstance(old, dict) or not isinstance(old.get("grid"), dict):
            raise UserError(f"{spec_path}: not a sweep's spec (a JSON object with a 'grid'); move it "
                            "away or pick a new --out")
        if old.get("grid") != self.spec["grid"]:
            raise UserError(f"--out {self.out} holds a different sweep: its grid is "
                            f"{_grid_text(old.get('grid', {}))}, not {_grid_text(self.spec['grid'])} "
                            "(repeat the same grid to resume, or pick a new --out)")
        old_cfg, new_cfg = old.get("config", {}), self.spec["config"]
        for name in sorted(new_cfg):  # an older sweep.json may hold other commands' fields too
            if old_cfg.get(name) != new_cfg.get(name):
                raise UserError(f"--out {self.out} holds a sweep with {name} = {old_cfg.get(name)!r}, "
                                f"not {new_cfg.get(name)!r} (resume with the same settings, or pick a "
                                "new --out)")
        # more backends or seeds extend the sweep; the ones already stored stay in the spec
        for name in ("backends", "seeds"):
            self.spec[name] = list(dict.fromkeys([*old.get(name, []), *self.spec[name]]))
        self.spec["runs"] = old.get("runs", [])
        write_json(self.spec, spec_path)
        self._load()
        self.resumed = True

    def _load(self) -> None:
        rows_path = self.out / ROWS_FILE
        if rows_path.exists() and rows_path.stat().st_size > 0:
            df = _read_table(rows_path)
            missing = [c for c in self.key_columns if c not in df.columns]
            if missing:
                raise UserError(f"{rows_path} has no column {missing[0]!r} (not this sweep's table)")
            for row in df.to_dict("records"):
                self._rows[self._key(row)] = row
        epochs_path = self.out / EPOCHS_FILE
        if epochs_path.exists() and epochs_path.stat().st_size > 0:
            ep = _read_table(epochs_path)
            if all(c in ep.columns for c in self.key_columns):
                for row in ep.to_dict("records"):
                    self._epochs.setdefault(self._key(row), []).append(row)

    # ------------------------------------------------------------ rows

    def _key(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.key_columns)

    def done(self) -> set[tuple[str, ...]]:
        """Keys whose stored row is final and whole: a re-run skips them.

        An ``ok`` row must hold its measured figures; one cut short (a table
        damaged outside this program) is run again.
        """
        return {k for k, r in self._rows.items() if r.get("status") in FINAL
                and (r["status"] != "ok" or all(str(r.get(c, "")) not in ("", "nan")
                                                 for c in MEASURED))}

    def add(self, result: TaskResult) -> None:
        """Record one finished task (replacing an earlier failed row of the same key) and write it out."""
        key = self._key(result.row)
        self._rows.pop(key, None)
        self._rows[key] = result.row
        self._epochs[key] = [{**e, "run_id": result.row.get("run_id", "")} for e in result.epochs]
        host = str(result.row.get("hostname", ""))
        if result.env and host not in self._env_written:
            write_json(result.env, self.out / env_file(host))
            self._env_written.add(host)
        epochs = [e for rows in self._epochs.values() for e in rows]
        if epochs:
            write_csv(pd.DataFrame(epochs), self.out / EPOCHS_FILE)
        write_csv(self.frame(), self.out / ROWS_FILE)  # last: sweep.csv is the record of what is done

    def frame(self) -> pd.DataFrame:
        """Every stored row, key columns first (strings for rows read back from disk)."""
        df = pd.DataFrame(list(self._rows.values()))
        if df.empty:
            return df
        first = [c for c in (*self.fields, *FIRST_COLUMNS) if c in df.columns]
        return df[first + [c for c in df.columns if c not in first]]

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()
            self.folder = None


def env_file(hostname: str) -> str:
    """``env_<hostname>.json`` with anything but letters, digits, '.', '-' and '_' replaced."""
    return f"env_{re.sub(r'[^A-Za-z0-9._-]', '_', hostname) or 'unknown'}.json"


def read_rows(out: Path) -> pd.DataFrame:
    """sweep.csv with the key columns as text and the measured columns as numbers."""
    spec = json.loads((Path(out) / SPEC_FILE).read_text())
    df = pd.read_csv(Path(out) / ROWS_FILE, dtype=str, keep_default_na=False)
    text = {*spec["grid"], "backend", "status", "error", "hostname", "cpu_model", "gpu", "worker",
            "executor", "run_id", "started_at", "finished_at", "data_fingerprint", "timing_quality"}
    for c in df.columns:
        if c not in text:
            df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce")
    return df


def _read_table(path: Path) -> pd.DataFrame:
    """A stored CSV as text; an unreadable one is a UserError naming the file."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable sweep table ({_short(exc)}); move it away or pick "
                        "a new --out") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples become lists), so stored and new specs compare equal."""
    return json.loads(json.dumps(obj, default=str))


def _grid_text(grid: dict[str, list[str]]) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in grid.items()) or "(none)"
