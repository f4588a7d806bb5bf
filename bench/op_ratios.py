"""NumPy / PyTorch time ratio of every micro-benchmarked operation: a CSV pivot and a log-scale chart.

Run it as::

    python -m bench.op_ratios --run                                 # run benchmarks/, save, pivot, chart
    python -m bench.op_ratios --run --out DIR -- --bench-threads 1  # pytest arguments after '--'
    python -m bench.op_ratios .benchmarks/<machine>/0001_ops.json   # a run saved earlier

``--run`` is ``pytest benchmarks -p no:cacheprovider --benchmark-save=ops
--benchmark-json=OUT/ops.json`` plus whatever follows ``--`` (e.g.
``-- --bench-threads 1 -k linear``), run from the repository root;
``pytest-benchmark compare`` and ``pytest benchmarks --benchmark-compare``
read the copy saved under ``.benchmarks/`` as usual.

Writes into ``--out`` (a new or empty folder, ``bench.results``; default
``results/<timestamp>_op_ratios/``):

* ``op_ratios.csv``: one row per operation and size (``op``, ``batch``,
  ``hidden``; ``hidden`` is empty where the op does not depend on it), a
  ``median_s_<backend>`` and a ``spread_<backend>`` column per backend
  (median seconds of one call; IQR / median of its rounds), a
  ``ratio_<device>`` column per device with both implementations:
  ``median_s_numpy:<device> / median_s_torch:<device>`` (> 1: PyTorch is
  faster), and ``flag_<device>``: empty, or why that ratio is not a finding
  (a side whose IQR / median exceeds ``bench.timing.SPREAD_TOLERANCE``: its
  rounds were too noisy to compare).
* ``op_ratios.png``: those ratios as horizontal bars on a log scale, with a
  line at 1; flagged bars are hatched.
* ``report.md`` (the table and the flagged ratios in words) and ``env.json``.

Everything is read from each benchmark's ``extra_info`` (``op``, ``backend``,
``batch``, ``hidden``), never from test names; benchmarks without it are
ignored.
"""

from __future__ import annotations

import importlib.util
import math
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import OneLineArgumentParser, UserError, run_cli, shorten
from bench.io import read_json
from bench.report import md_table, setup_lines
from bench.results import ResultsFolder
from bench.threads import default_threads
from bench.timing import SPREAD_TOLERANCE

REPO = Path(__file__).resolve().parents[1]
CSV_NAME = "op_ratios.csv"
PNG_NAME = "op_ratios.png"
RUN_JSON_NAME = "ops.json"
NUMER, DENOM = "numpy", "torch"  # ratio = NUMER time / DENOM time on the same device
KEYS = ("op", "batch", "hidden")
REQUIRED_INFO = ("op", "backend", "batch")
SAVED_BYTES = 256 * 2**20  # a saved run of benchmarks/ with its raw data is a few MB
STOP_WAIT_S = 60  # after a signal: how long pytest may take to stop and save what it timed


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
    df["batch"] = df["batch"].astype("Int64")
    df["hidden"] = pd.to_numeric(df["hidden"]).astype("Int64")  # <NA> where the op has no hidden width
    dup = df.duplicated(["op", "batch", "hidden", "backend"], keep=False)
    if dup.any():
        r = df[dup].iloc[0]
        raise UserError(f"{path}: more than one benchmark for op {r['op']}, batch {r['batch']}, "
                        f"hidden {r['hidden']}, backend {r['backend']}")
    return df, doc.get("machine_info") or {}


def _benchmark_row(name: object, info: dict[str, Any], stats: dict[str, Any], path: Path
                   ) -> dict[str, Any]:
    """One benchmark's row, every field checked: a wrong one is a UserError naming it."""
    def bad(field: str, value: object, allowed: str) -> UserError:
        return UserError(f"{path}: benchmark {shorten(repr(name), 60)} has {field} "
                         f"{shorten(repr(value), 60)} (allowed: {allowed})")

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    impl, sep, device = str(info["backend"]).partition(":")
    if not (isinstance(info["backend"], str) and sep and impl and device):
        raise bad("backend", info["backend"], "impl:device, e.g. numpy:cpu")
    if not (isinstance(info["op"], str) and info["op"]):
        raise bad("op", info["op"], "a name")
    for key in ("batch", "hidden"):
        v = info.get(key)
        if not (v is None and key == "hidden") and not (isinstance(v, int) and not isinstance(v, bool)
                                                         and v >= 1):
            raise bad(key, v, "an integer >= 1" + (", or none" if key == "hidden" else ""))
    median, iqr = stats["median"], stats.get("iqr")
    if not (number(median) and median > 0):
        raise bad("median", median, "a finite number of seconds > 0")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ratio_columns(table)
    shown = table.dropna(subset=cols, how="all").reset_index(drop=True)
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
    threads = (machine_info.get("mlpbench") or {}).get("threads")
    cpu = (machine_info.get("cpu") or {}).get("brand_raw") or machine_info.get("processor") or ""
    gpu = (machine_info.get("gpu") or {}).get("name") if isinstance(machine_info.get("gpu"), dict) else None
    where = ", ".join(s for s in (cpu, f"{threads} threads" if threads else "", gpu or "") if s)
    ax.set_title(f"Per-op time, {NUMER} / {DENOM}" + (f"\n{where}" if where else "")
                 + "\nhatched: too noisy to compare (IQR/median of a side > "
                 f"{SPREAD_TOLERANCE})", fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def run_benchmarks(out: Path, pytest_args: Sequence[str]) -> tuple[Path, bool]:
    """Run benchmarks/ timed, saved as 'ops' in pytest-benchmark's storage and as OUT/ops.json;
    (the JSON, whether a signal stopped it). On Ctrl-C, SIGTERM or SIGHUP pytest is asked to stop
    (SIGINT) and saves what it timed so far."""
    json_path = out.resolve() / RUN_JSON_NAME  # pytest runs from the repository root
    cmd = [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-p", "no:cacheprovider",
           "--benchmark-save=ops", f"--benchmark-json={json_path}", *pytest_args]
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


def build_parser() -> OneLineArgumentParser:
    p = OneLineArgumentParser(prog="python -m bench.op_ratios",
                              description="NumPy / PyTorch ratio table and chart from a saved "
                                          "pytest-benchmark JSON of benchmarks/.")
    p.add_argument("saved", nargs="?", type=Path,
                   help="a JSON written by --benchmark-save (.benchmarks/<machine>/NNNN_name.json) "
                        "or --benchmark-json")
    p.add_argument("--run", action="store_true",
                   help="first run benchmarks/ (saved as 'ops' and as OUT/ops.json); pytest "
                        "arguments may follow a '--'")
    p.add_argument("--out", type=Path,
                   help=f"folder for {CSV_NAME}, {PNG_NAME}, report.md and env.json; must not exist "
                        "yet, or be empty (default: results/<timestamp>_op_ratios/)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.run == (args.saved is not None):
        raise UserError("give either a saved JSON or --run, not both" if args.run
                        else "give a saved pytest-benchmark JSON, or --run to make one")
    if pytest_args and not args.run:
        raise UserError(f"pytest arguments after '--' need --run: {' '.join(pytest_args)}")
    if not args.run:
        df, machine_info = load_saved(args.saved)  # a bad file is one line before a folder exists
    missing = [m for m in ("pytest", "pytest_benchmark") if importlib.util.find_spec(m) is None]
    if args.run and missing:
        raise UserError(f"--run needs {' and '.join(missing)}, which this Python lacks (allowed: install "
                        "the test extra, pip install '.[test]', or give a saved JSON instead of --run)")
    with ResultsFolder.create(args.out, "op_ratios") as folder:
        saved = args.saved
        if args.run:
            with folder.measuring():
                saved, folder.interrupted = run_benchmarks(folder.path, pytest_args)
            if saved is None:  # stopped before pytest saved anything
                return folder.exit_code()
            df, machine_info = load_saved(saved)
        table = pivot(df)
        if not ratio_columns(table):
            raise UserError(f"{saved}: no device has both a {NUMER} and a {DENOM} benchmark "
                            f"(backends: {', '.join(sorted(df['backend'].unique()))})")
        threads = (machine_info.get("mlpbench") or {}).get("threads") or default_threads()
        env = folder.write_env(threads, {"saved": str(saved), "benchmark_machine_info": machine_info})
        folder.write_csv(CSV_NAME, table)
        folder.save_figure(PNG_NAME, plot_ratios(table, machine_info))
        flagged = flagged_sentences(table)
        folder.write_text("report.md", _report(env, table, flagged, saved, folder))
    with pd.option_context("display.width", 200, "display.max_rows", None,
                           "display.float_format", "{:.3g}".format):
        print(table.drop(columns=[c for c in table if c.startswith("spread_")]).to_string(index=False))
    for sentence in flagged:
        print(f"flagged: {sentence}")
    print(f"results: {folder.path} (from {saved})")
    if folder.interrupted:
        print(f"interrupted: the benchmarks timed before it are in {folder.path}", file=sys.stderr)
    return folder.exit_code()


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


def _report(env: dict[str, Any], table: pd.DataFrame, flagged: list[str], saved: Path,
            folder: ResultsFolder) -> str:
    shown = table.drop(columns=[c for c in table if c.startswith("spread_")])
    files = [*folder.written, "report.md"]
    lines = ["# Per-op time, NumPy / PyTorch", "", *folder.interrupted_note(), "## Setup", "",
             *setup_lines(env),
             f"- Benchmarks: `{saved}` (pytest-benchmark JSON of `benchmarks/`)", "",
             "`ratio_<device>` is NumPy's median seconds per call over PyTorch's (above 1: PyTorch is "
             "faster). A ratio is flagged when either side's rounds spread too widely (IQR/median "
             f"above {SPREAD_TOLERANCE}): the machine was too noisy for that op to be compared.", "",
             md_table(shown, floatfmt=".3g"), ""]
    if flagged:
        lines += ["**Not findings (too noisy):**", "", *[f"- {s}" for s in flagged], ""]
    lines += [f"![ratios]({PNG_NAME})", "", "Files: " + ", ".join(f"`{f}`" for f in files) + ".", ""]
    return "\n".join(lines)


def cli() -> None:
    run_cli(main, prog="python -m bench.op_ratios")


if __name__ == "__main__":
    cli()
