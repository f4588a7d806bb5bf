"""What ``bench.op_ratios`` measures: the NumPy / PyTorch time ratio of every micro-benchmarked operation.

:func:`load_saved` reads a pytest-benchmark JSON of ``benchmarks/`` (every
field of every benchmark checked; everything comes from each benchmark's
``extra_info``: ``op``, ``backend``, ``batch``, ``hidden``, never from test
names), :func:`pivot` makes the ratio table, :func:`plot_ratios` its chart,
:func:`run_benchmarks` runs ``benchmarks/`` to make a JSON.
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UserError, shorten
from bench.io import read_json
from bench.timing import SPREAD_TOLERANCE

REPO = Path(__file__).resolve().parents[1]
CSV_NAME = "op_ratios.csv"
PNG_NAME = "op_ratios.png"
RUN_JSON_NAME = "ops.json"
NUMER, DENOM = "numpy", "torch"  # ratio = NUMER time / DENOM time on the same device
KEYS = ("op", "batch", "hidden")
REQUIRED_INFO = ("op", "backend", "batch")
SAVED_BYTES = 256 * 2**20  # a saved run of benchmarks/ with its raw data is a few MB
MAX_BARS = 100  # ops drawn in the figure at most (benchmarks/ gives 66 a device)
MAX_BACKENDS = 16  # backends (impl:device) of one saved run: benchmarks/ gives 2 a device
MAX_CELLS = 200_000  # (op, batch, hidden) x backends of the wide table: benchmarks/ gives a few hundred
STOP_WAIT_S = 60  # after a signal: how long pytest may take to stop and save what it timed
NAME = re.compile(r"[A-Za-z0-9_.+\-/()\[\], =]{1,200}")  # an op, impl or device name: a table cell, a label
MAX_SIZE = 2**31 - 1  # batch and hidden at most
MEDIAN_S = (1e-12, 1e6)  # a median's seconds: below a timer's tick or above 11 days is not a timing


def load_saved(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per benchmark (op, batch, hidden, backend, impl, device, median_s) and the run's machine_info.

    Raises :class:`UserError` for an unreadable file, a file that is not a
    pytest-benchmark JSON, or one without any benchmark carrying the extra_info.
    """
    try:
        doc = read_json(Path(path), SAVED_BYTES, "a pytest-benchmark JSON")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UserError(f"{path} is not a pytest-benchmark JSON (no 'benchmarks' list)")
    rows = []
    for b in doc["benchmarks"]:
        info = b.get("extra_info") if isinstance(b, dict) else None
        stats = b.get("stats") if isinstance(b, dict) else None
        if not (isinstance(info, dict) and isinstance(stats, dict)
                and all(k in info for k in REQUIRED_INFO) and stats.get("median") is not None):
            continue
        rows.append(_benchmark_row(b["name"] if "name" in b else "?", info, stats, path))
    if not rows:
        raise UserError(f"{path} has no benchmark with stats and extra_info {'/'.join(REQUIRED_INFO)} "
                        f"({len(doc['benchmarks'])} benchmarks; was it saved from a timed run of "
                        "benchmarks/, without --benchmark-disable?)")
    df = pd.DataFrame(rows)
    n_backends, n_keys = df["backend"].nunique(), len(df.drop_duplicates(["op", "batch", "hidden"]))
    if n_backends > MAX_BACKENDS or n_backends * n_keys > MAX_CELLS:  # before the wide table is built
        raise UserError(f"{path}: {n_keys} op sizes on {n_backends} backends (allowed: at most {MAX_BACKENDS} "
                        f"backends and {MAX_CELLS} op sizes x backends; benchmarks/ times 66 op sizes on two "
                        "backends a device)")
    df["batch"] = df["batch"].astype("Int64")
    df["hidden"] = pd.to_numeric(df["hidden"]).astype("Int64")  # <NA> where the op has no hidden width
    dup = df.duplicated(["op", "batch", "hidden", "backend"], keep=False)
    if dup.any():
        r = df[dup].iloc[0]
        raise UserError(f"{path}: more than one benchmark for op {r['op']}, batch {r['batch']}, "
                        f"hidden {r['hidden']}, backend {r['backend']}")
    return df, _machine_info(doc.get("machine_info"), path)


def _machine_info(info: object, path: Path) -> dict[str, Any]:
    """The run's machine_info, checked where this command reads it (threads, the CPU and GPU names)."""
    info = {} if info is None else info
    parts = [{} if info.get(k) is None else info[k] for k in ("mlpbench", "cpu", "gpu")] \
        if isinstance(info, dict) else [None]
    ok = all(isinstance(p, dict) for p in parts)
    if ok:
        threads = parts[0].get("threads")
        ok = (threads is None or (type(threads) is int and 1 <= threads <= MAX_SIZE)) and all(
            n is None or isinstance(n, str) for n in (parts[1].get("brand_raw"), parts[2].get("name"),
                                                      info.get("processor")))
    if not ok:
        raise UserError(f"{path}: machine_info {shorten(repr(info), 80)} is not pytest-benchmark's (allowed: "
                        "an object whose mlpbench, cpu and gpu are objects, threads an integer >= 1, names "
                        "strings)")
    return info


def _benchmark_row(name: object, info: dict[str, Any], stats: dict[str, Any], path: Path
                   ) -> dict[str, Any]:
    """One benchmark's row, every field checked: a wrong one is a UserError naming it."""
    def bad(field: str, value: object, allowed: str) -> UserError:
        return UserError(f"{path}: benchmark {shorten(repr(name), 60)} has {field} "
                         f"{shorten(repr(value), 60)} (allowed: {allowed})")

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def named(v: object) -> bool:
        return isinstance(v, str) and NAME.fullmatch(v) is not None

    impl, sep, device = str(info["backend"]).partition(":")
    if not (isinstance(info["backend"], str) and sep and named(impl) and named(device) and ":" not in device):
        raise bad("backend", info["backend"], "impl:device, e.g. numpy:cpu")
    if not named(info["op"]):
        raise bad("op", info["op"], "1 to 200 letters, digits, spaces or _.+-/()[],=")
    for key in ("batch", "hidden"):
        v = info.get(key)
        if not (v is None and key == "hidden") and not (type(v) is int and 1 <= v <= MAX_SIZE):
            raise bad(key, v, f"an integer from 1 to {MAX_SIZE}" + (", or none" if key == "hidden" else ""))
    median, iqr = stats["median"], stats.get("iqr")
    if not (number(median) and MEDIAN_S[0] <= median <= MEDIAN_S[1]):
        raise bad("median", median, f"a number of seconds from {MEDIAN_S[0]:g} to {MEDIAN_S[1]:g}")
    if iqr is not None and not (number(iqr) and iqr >= 0):
        raise bad("iqr", iqr, "a finite number of seconds >= 0, or none")
    return {"op": info["op"], "batch": info["batch"], "hidden": info.get("hidden"),
            "backend": f"{impl}:{device}", "impl": impl, "device": device, "median_s": float(median),
            "spread": float(iqr) / float(median) if iqr is not None else np.nan}


def pivot(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (op, batch, hidden); median_s_<backend> columns; ratio_<device> = numpy / torch.

    Ops keep the order in which they were first run; sizes ascend within an op.
    Backends are ordered by device, then implementation (numpy before torch).
    """
    op_order = {op: i for i, op in enumerate(dict.fromkeys(df["op"]))}
    backends = sorted(df["backend"].unique(), key=lambda b: (b.partition(":")[2], b))
    def wide(values: str, prefix: str) -> pd.DataFrame:
        w = (df.pivot_table(index=list(KEYS), columns="backend", values=values, aggfunc="first",
                            dropna=False)
             .reindex(columns=backends))
        return w.rename(columns={b: f"{prefix}{b}" for b in backends})

    medians = wide("median_s", "median_s_").dropna(how="all")  # combinations never run together
    spreads = wide("spread", "spread_").reindex(medians.index)
    out = pd.concat([medians, spreads], axis=1).reset_index()
    out.columns.name = None
    for device in dict.fromkeys(b.partition(":")[2] for b in backends):
        num, den = f"{NUMER}:{device}", f"{DENOM}:{device}"
        if f"median_s_{num}" in out and f"median_s_{den}" in out:
            out[f"ratio_{device}"] = out[f"median_s_{num}"] / out[f"median_s_{den}"]
            out[f"flag_{device}"] = [_flag(r, (num, den)) for r in out.to_dict("records")]
    out["_op"] = out["op"].map(op_order)
    out = out.sort_values(["_op", "batch", "hidden"], na_position="first").drop(columns="_op")
    return out.reset_index(drop=True)


def _flag(row: dict[str, Any], backends: tuple[str, ...]) -> str:
    """Why one ratio is not a finding: a side whose rounds spread too widely ('' when none)."""
    noisy = [f"{b} IQR/median {row[f'spread_{b}']:.2f} > {SPREAD_TOLERANCE}" for b in backends
             if row.get(f"spread_{b}", np.nan) > SPREAD_TOLERANCE]
    return "; ".join(noisy)


def ratio_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("ratio_")]


def row_label(r: pd.Series) -> str:
    hidden = "" if pd.isna(r["hidden"]) else f" h{r['hidden']}"
    return f"{r['op']} b{r['batch']}{hidden}"


def plot_ratios(table: pd.DataFrame, machine_info: dict[str, Any]):
    """Horizontal bars of every ratio_<device> column, log scale, a line at 1; flagged bars hatched."""
    from bench.plots import plt

    cols = ratio_columns(table)
    measured = table.dropna(subset=cols, how="all").reset_index(drop=True)
    shown = measured.head(MAX_BARS)  # the table keeps every op; a figure of thousands is unreadable
    n = len(shown)
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.22 * n * max(1, len(cols))))
    height = 0.8 / len(cols)
    y = np.arange(n)
    for k, col in enumerate(cols):
        r = shown[col].to_numpy(float)
        flags = shown.get(col.replace("ratio_", "flag_"), pd.Series([""] * n)).fillna("")
        # bars grow from 1 (equal times) towards the ratio: right where DENOM is faster
        bars = ax.barh(y + (k - (len(cols) - 1) / 2) * height, r - 1, left=1, height=height,
                       label=f"{col.removeprefix('ratio_')}: {NUMER} / {DENOM}")
        for bar, flag in zip(bars, flags):
            if flag:
                bar.set_hatch("//")
                bar.set_alpha(0.4)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(y, [row_label(r) for _, r in shown.iterrows()], fontsize=7)
    ax.invert_yaxis()  # first op on top, as in the CSV
    ax.set_xlabel(f"median time ratio {NUMER} / {DENOM} (log)   "
                  f"< 1: {NUMER} faster | > 1: {DENOM} faster")
    threads = (machine_info.get("mlpbench") or {}).get("threads")  # checked by load_saved
    cpu = (machine_info.get("cpu") or {}).get("brand_raw") or machine_info.get("processor") or ""
    gpu = (machine_info.get("gpu") or {}).get("name")
    where = shorten(", ".join(s for s in (cpu, f"{threads} threads" if threads else "", gpu or "") if s), 120)
    more = f" (the first {n} of {len(measured)} ops; every one in the table)" if len(measured) > n else ""
    ax.set_title(f"Per-op time, {NUMER} / {DENOM}{more}" + (f"\n{where}" if where else "")
                 + "\nhatched: too noisy to compare (IQR/median of a side > "
                 f"{SPREAD_TOLERANCE})", fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def run_benchmarks(out: Path, pytest_args: Sequence[str]) -> tuple[Path, bool]:
    """Run benchmarks/ timed, saved as 'ops' in a pytest-benchmark storage inside OUT
    (OUT/benchmarks/, never the repository's .benchmarks/) and as OUT/ops.json; (the JSON, whether a
    signal stopped it). On Ctrl-C, SIGTERM or SIGHUP pytest is asked to stop (SIGINT) and saves what
    it timed so far."""
    json_path = out.resolve() / RUN_JSON_NAME  # pytest runs from the repository root
    cmd = [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-p", "no:cacheprovider",
           "--benchmark-save=ops", f"--benchmark-storage=file://{out.resolve() / 'benchmarks'}",
           f"--benchmark-json={json_path}", *pytest_args]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not json_path.exists():
            raise
        return json_path, True
    if code != 0:
        raise UserError(f"pytest exited with status {code}; see its output above "
                        f"(nothing written to {out / CSV_NAME})")
    return json_path, False


def flagged_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per flagged ratio: the op, the size, the device and why."""
    out = []
    for r in table.to_dict("records"):
        for col in ratio_columns(table):
            device = col.removeprefix("ratio_")
            flag = r.get(f"flag_{device}")
            if isinstance(flag, str) and flag:
                out.append(f"{row_label(pd.Series(r))} on {device}: ratio {r[col]:.3g} is not a finding "
                           f"({flag})")
    return out
