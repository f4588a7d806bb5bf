"""NumPy / PyTorch time ratio of every micro-benchmarked operation: a CSV pivot and a log-scale chart.

Run it as::

    python -m bench.op_ratios --run                                 # run benchmarks/, save, pivot, chart
    python -m bench.op_ratios --run --out DIR -- --bench-threads 1  # pytest arguments after '--'
    python -m bench.op_ratios .benchmarks/<machine>/0001_ops.json   # a run saved earlier

``--run`` is ``pytest benchmarks -p no:cacheprovider --benchmark-save=ops
--benchmark-storage=OUT/benchmarks --benchmark-json=OUT/ops.json`` plus
whatever follows ``--`` (e.g. ``-- --bench-threads 1 -k linear``), run from
the repository root; everything it writes is inside OUT, and
``pytest-benchmark compare --storage OUT/benchmarks`` reads the saved copy. The measurements
(``bench.op_timings``) read everything from each benchmark's ``extra_info``
(``op``, ``backend``, ``batch``, ``hidden``), never from test names.

Writes into ``--out`` (a new or empty folder; default
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
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from bench import runner
from bench.errors import UserError
from bench.report import md_table
from bench.timing import SPREAD_TOLERANCE
from bench import op_timings as ops


def _check(ctx: runner.Context) -> None:
    """A saved JSON is read before a folder exists (a bad one is one line); --run needs pytest."""
    if not ctx.settings.run:
        ctx.work = ops.load_saved(Path(ctx.settings.saved))
    missing = [m for m in ("pytest", "pytest_benchmark") if importlib.util.find_spec(m) is None]
    if ctx.settings.run and missing:
        raise UserError(f"--run needs {' and '.join(missing)}, which this Python lacks (allowed: install "
                        "the test extra, pip install '.[test]', or give a saved JSON instead of --run)")


def measure(ctx: runner.Context) -> runner.Result:
    saved = ctx.settings.saved
    if ctx.settings.run:
        with ctx.measuring():
            saved, ctx.folder.interrupted = ops.run_benchmarks(ctx.folder.path, ctx.settings.pytest_args)
        if saved is None:  # stopped before pytest saved anything
            return runner.Result()
        try:
            ctx.work = ops.load_saved(saved)
        except UserError:
            if not ctx.interrupted:
                raise
            ctx.work = None
    df, machine_info = ctx.work or (None, {})
    table = ops.pivot(df) if df is not None else None
    if table is None or not ops.ratio_columns(table):
        if ctx.interrupted:  # stopped before a pair was timed: what pytest saved stays, and the signal's status
            return runner.Result(notes=[f"interrupted: the benchmarks timed before it are in {ctx.folder.shown}"])
        raise UserError(f"{saved}: no device has both a {ops.NUMER} and a {ops.DENOM} benchmark "
                        f"(backends: {', '.join(sorted(df['backend'].unique()))})")
    flagged = ops.flagged_sentences(table)
    shown = table.drop(columns=[c for c in table if c.startswith("spread_")])
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.float_format", "{:.3g}".format):
        printed = [shown.to_string(index=False), *[f"flagged: {s}" for s in flagged], f"from: {saved}"]
    threads = (machine_info.get("mlpbench") or {}).get("threads") or ctx.threads
    return runner.Result(
        tables={ops.CSV_NAME: table}, printed=printed,
        figures={ops.PNG_NAME: ("Ratios", lambda: ops.plot_ratios(table, machine_info))},
        env={"threads": threads, "saved": str(saved), "benchmark_machine_info": machine_info},
        setup=[f"- Benchmarks: `{saved}` (pytest-benchmark JSON of `benchmarks/`)"],
        sections=[(None, [
            "`ratio_<device>` is NumPy's median seconds per call over PyTorch's (above 1: PyTorch is "
            "faster). A ratio is flagged when either side's rounds spread too widely (IQR/median above "
            f"{SPREAD_TOLERANCE}): the machine was too noisy for that op to be compared.", "",
            md_table(shown, floatfmt=".3g"),
            *(["", "**Not findings (too noisy):**", "", *[f"- {s}" for s in flagged]] if flagged else [])])],
        notes=[f"interrupted: the benchmarks timed before it are in {ctx.folder.shown}"] if ctx.interrupted else [])


COMMAND = runner.Command("op_ratios", "Per-op time, NumPy / PyTorch", measure, check=_check, loads_data=False,
                         about="NumPy / PyTorch ratio table and chart from a saved pytest-benchmark JSON of "
                               "benchmarks/, or from a fresh run of them (--run).")
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
