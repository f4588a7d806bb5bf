"""The sweep folder: ``sweep.json`` (what is swept), ``sweep.csv`` (one row per finished task), resumable.

Every finished task is written at once: the whole CSV is rewritten to a
temporary file beside it and renamed over it (``bench.io.write_csv``), so a
killed sweep leaves the CSV as it was after the last finished task, never
half a row. A task's key is its grid values (canonical text), its backend and
its seed; re-running the same sweep into the same folder skips every key
whose status is final (``ok``, ``diverged``) and runs the rest again (the
missing ones, and the failed ones: ``failed``, ``oom``, ``worker_lost``),
replacing their rows.

Every stored row is checked against :data:`NUMBERS` when a sweep resumes: a
row cut short or holding garbage (``test_acc=abc``, a negative time, a missing
figure of an ``ok`` row, a key outside the grid) is not done: it is dropped
and its task run again, with one note line. Every file is read through the
one bounded reader (``bench.io``).

The folder is the runner's ``bench.results.ResultsFolder``, claimed for
resuming: one sweep at a time may write it (a second one fails with one line),
and a folder that holds anything but a sweep is refused. Every file goes
through it.
"""

from __future__ import annotations

import io
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UserError, shorten
from bench.io import read_bounded, read_json, refuse_link
from bench.results import ResultsFolder
from bench.sweep.point import TaskResult

SPEC_FILE = "sweep.json"
ROWS_FILE = "sweep.csv"
EPOCHS_FILE = "epochs.csv"
FINAL = ("ok", "diverged")  # statuses a re-run keeps; the others are run again
STATUSES = (*FINAL, "failed", "oom", "worker_lost")
TABLE_BYTES = 256 * 2**20  # the largest sweep.csv or epochs.csv read (10 000 tasks are a few MB)
# the numbers a row may hold: column -> (lowest, highest, required in an ok row); empty or nan is
# allowed where not required
NUMBERS: dict[str, tuple[float, float, bool]] = {
    "test_acc": (0.0, 1.0, True), "best_val_acc": (0.0, 1.0, False), "test_loss": (0.0, math.inf, False),
    "median_epoch_seconds_all": (0.0, math.inf, True), "n_epochs_all": (0.0, math.inf, False),
    "median_epoch_seconds_trusted": (0.0, math.inf, False), "n_epochs_trusted": (0.0, math.inf, False),
    "epoch_seconds_min_trusted": (0.0, math.inf, False), "epoch_seconds_q25_trusted": (0.0, math.inf, False),
    "epoch_seconds_q75_trusted": (0.0, math.inf, False), "gemm_seconds_trusted": (0.0, math.inf, False),
    "epoch_to_gemm_trusted": (0.0, math.inf, False), "epoch_to_gemm_min_trusted": (0.0, math.inf, False),
    "ratio_floor": (0.0, math.inf, False), "total_train_seconds": (0.0, math.inf, False),
    "wall_seconds": (0.0, math.inf, False), "epochs_done": (0.0, math.inf, False),
    "seed": (0.0, math.inf, True),
}
READ_COLUMNS = ("backend", "seed", "status", "test_acc", "median_epoch_seconds_trusted",
                "timing_quality")  # what the analysis reads of every row (written with or without brackets)
FIRST_COLUMNS = ("backend", "seed", "status", "error", "test_acc", "median_epoch_seconds_trusted",
                 "n_epochs_trusted", "gemm_seconds_trusted", "epoch_to_gemm_trusted", "timing_quality",
                 "median_epoch_seconds_all", "hostname")


class SweepStore:
    """The rows of one sweep folder, kept in memory and rewritten atomically on every change."""

    def __init__(self, folder: ResultsFolder, spec: dict[str, Any]):
        self.folder, self.out = folder, folder.path
        self.spec = spec
        self.fields: list[str] = list(spec["grid"])
        self.key_columns = [*self.fields, "backend", "seed"]
        self._rows: dict[tuple[str, ...], dict[str, Any]] = {}
        self._epochs: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._env_written: set[str] = set()
        self.resumed = False

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, folder: ResultsFolder, spec: dict[str, Any]) -> "SweepStore":
        """Resume the sweep ``folder`` holds when it is the same sweep, else start it; a different one
        is a UserError."""
        store = cls(folder, _plain(spec))
        if (folder.path / SPEC_FILE).exists():
            store._resume(folder.path / SPEC_FILE)
        else:
            folder.write_json(SPEC_FILE, store.spec)
        return store

    def _resume(self, spec_path: Path) -> None:
        try:
            old = read_json(spec_path, TABLE_BYTES, "a sweep's spec")
        except (OSError, UserError) as exc:
            raise UserError(f"{spec_path}: cannot read the stored sweep ({_short(exc)}); move it away "
                            "or pick a new --out") from None
        grid = old.get("grid") if isinstance(old, dict) else None
        if not (isinstance(grid, dict) and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                               for v in grid.values())):
            raise UserError(f"{spec_path}: not a sweep's spec (a JSON object whose 'grid' maps each field "
                            "to a list of texts); move it away or pick a new --out")
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
        self._load()  # every stored table checked before the spec is rewritten: a refusal changes nothing
        self.folder.write_json(SPEC_FILE, self.spec)
        self.resumed = True

    def _load(self) -> None:
        rows_path, epochs_path = self.out / ROWS_FILE, self.out / EPOCHS_FILE
        for path in (rows_path, epochs_path, self.out / SPEC_FILE):
            refuse_link(path)  # each is rewritten by this sweep: refused now, not after a task ran
        df = _read_table(rows_path)
        if df is not None:
            missing = [c for c in (*self.key_columns, *READ_COLUMNS) if c not in df.columns]
            if missing:
                raise UserError(f"{rows_path} has no column {missing[0]!r} (not this sweep's table)")
            twice = df[self.key_columns].astype(str).duplicated(keep=False)  # the whole table: one row a key
            if twice.any():
                key = self._key(df[twice].iloc[0])
                lines = [i for i, r in enumerate(df.to_dict("records"), 2) if self._key(r) == key]
                raise UserError(f"{rows_path}: more than one row for the task {', '.join(f'{c}={v}' for c, v in zip(self.key_columns, key))} (lines "
                                f"{', '.join(map(str, lines))}); a sweep keeps one row a task: remove the "
                                "extra rows, or pick a new folder")
            bad: list[str] = []
            for i, row in enumerate(df.to_dict("records"), 2):  # line 1 is the header
                why = self._invalid(row)
                if why:
                    bad.append(f"line {i}: {why}")
                else:
                    self._rows[self._key(row)] = row
            if bad:
                print(f"note: {rows_path}: {len(bad)} row(s) cut short or damaged (first: "
                      f"{shorten(bad[0], 160)}); their tasks are run again", file=sys.stderr)
        ep = _read_table(epochs_path)
        if ep is not None:
            if all(c in ep.columns for c in self.key_columns):
                for row in ep.to_dict("records"):
                    if self._key(row) in self._rows:  # a dropped row's epochs go with it
                        self._epochs.setdefault(self._key(row), []).append(row)

    # ------------------------------------------------------------ rows

    def _key(self, row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.key_columns)

    def _invalid(self, row: dict[str, Any]) -> str:
        """Why a stored row is not a finished task of this sweep ('' when it is)."""
        status = str(row.get("status", ""))
        if status not in STATUSES:
            return f"status {shorten(repr(status), 40)} (allowed: {', '.join(STATUSES)})"
        for f in self.fields:
            if str(row[f]) not in self.spec["grid"][f]:
                return f"{f} = {shorten(repr(row[f]), 40)} is not a value of the grid"
        for column, (low, high, required) in NUMBERS.items():
            text = str(row.get(column, "")).strip()
            if text.lower() in ("", "nan"):
                if required and status == "ok":
                    return f"{column} is empty in an ok row"
                continue
            try:
                value = float(text)
            except ValueError:
                return f"{column} = {shorten(repr(text), 40)} is not a number"
            if not low <= value <= high or math.isinf(value):
                return f"{column} = {text} is outside [{low:g}, {high:g}]"
        return ""

    def done(self) -> set[tuple[str, ...]]:
        """Keys whose stored row is final (and valid: damaged rows were dropped): a re-run skips them."""
        return {k for k, r in self._rows.items() if r.get("status") in FINAL}

    def add(self, result: TaskResult) -> None:
        """Record one finished task (replacing an earlier failed row of the same key) and write it out."""
        key = self._key(result.row)
        self._rows.pop(key, None)
        self._rows[key] = result.row
        self._epochs[key] = [{**e, "run_id": result.row.get("run_id", "")} for e in result.epochs]
        host = str(result.row.get("hostname", ""))
        if result.env and host not in self._env_written:
            try:
                self.folder.write_json(env_file(host), result.env)
            except (OSError, UserError) as exc:  # the machine record is worth less than the row
                print(f"warning: {shorten(str(exc), 200)}", file=sys.stderr)
            self._env_written.add(host)
        epochs = [e for rows in self._epochs.values() for e in rows]
        if epochs:
            self.folder.write_csv(EPOCHS_FILE, pd.DataFrame(epochs))
        self.folder.write_csv(ROWS_FILE, self.frame())  # last: sweep.csv is the record of what is done

    def frame(self) -> pd.DataFrame:
        """Every stored row, key columns first (strings for rows read back from disk)."""
        df = pd.DataFrame(list(self._rows.values()))
        if df.empty:
            return df
        first = [c for c in (*self.fields, *FIRST_COLUMNS) if c in df.columns]
        return df[first + [c for c in df.columns if c not in first]]


def env_file(hostname: str) -> str:
    """``env_<hostname>.json`` with anything but letters, digits, '.', '-' and '_' replaced."""
    return f"env_{re.sub(r'[^A-Za-z0-9._-]', '_', hostname) or 'unknown'}.json"


def read_rows(out: Path) -> pd.DataFrame:
    """sweep.csv with the key columns as text and the measured columns as numbers."""
    spec = read_json(Path(out) / SPEC_FILE, TABLE_BYTES, "a sweep's spec")
    df = _read_table(Path(out) / ROWS_FILE)
    if df is None:
        df = pd.DataFrame(columns=["backend", "seed", "status"])
    text = {*spec["grid"], "backend", "status", "error", "hostname", "cpu_model", "gpu", "worker",
            "executor", "run_id", "started_at", "finished_at", "data_fingerprint", "timing_quality", "replaced"}
    for c in df.columns:
        if c not in text:
            df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce")
    return df


def _read_table(path: Path) -> pd.DataFrame | None:
    """A stored CSV as text (None when it is absent or empty); an unreadable one is a UserError."""
    try:
        data = read_bounded(path, TABLE_BYTES, "a sweep table")
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False) if data else None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable sweep table ({_short(exc)}); move it away or pick "
                        "a new --out") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples become lists), so stored and new specs compare equal."""
    import json

    return json.loads(json.dumps(obj, default=str))


def _grid_text(grid: dict[str, list[str]]) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in grid.items()) or "(none)"
