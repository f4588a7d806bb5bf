"""Epoch time against GEMM-only time, the backends taking turns epoch by epoch (a benchmark, not a test).

Run it as::

    python -m bench.epoch_ratio                    # numpy:cpu and torch:cpu, 5 epochs, synthetic data
    python -m bench.epoch_ratio --epochs 9 --threads 1 --backends numpy:cpu

Its preset (``bench.config.PRESETS["epoch_ratio"]``): 5 epochs of synthetic
data of the CIFAR-10 training size, ``numpy:cpu`` and ``torch:cpu``; every
other setting is the reference setup, and ``--help`` shows each effective
default. Each backend is one run of the one run layer (``bench.run.Run``),
with the GEMM-only brackets and the fixed-cost floor of ``bench.timing``;
the runs take turns epoch by epoch, so a load that drifts hits every backend
alike. It prints every epoch with its ratio, gather-only time and quality,
then per backend the median ratio over all epochs after the first and over
those at nominal speed and unflagged, the part of it the batch gather costs,
and the fixed-cost floor. ``--gather-from uint8`` times the other data path.
``--out`` gets ``epochs.csv``, ``runs.csv``, ``summary.csv``, ``env.json``
and ``report.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import runner
from bench.report import CLOCKS, REFERENCE, compile_sentence, md_table, model_line, summary_view, timing_sentences
from bench.run import Recorder, Run
from bench.timing import steady_epochs


def measure(ctx: runner.Context) -> runner.Result:
    """Every seed: every backend's run started, then one epoch each in turn until all are over."""
    config, rec = ctx.config, Recorder(ctx.folder)
    with ctx.measuring():
        for seed in config.seeds:
            data = ctx.data(seed)
            if seed == config.seeds[0]:
                ctx.say(f"{len(data.y_train)} x {data.n_features} -> {config.hidden_dims} -> "
                        f"{data.n_classes}, batch {config.batch_size}, "
                        f"{len(data.y_train) // config.batch_size} steps, {ctx.threads} threads")
            runs = [Run(c, config, data, seed, backend=b) for c, b in zip(ctx.chosen, ctx.backends)]
            try:
                _take_turns(ctx, runs)
            finally:  # a signal between two epochs still keeps every run's record
                for r in runs:
                    rec.add(r.finish())
            if any(r.interrupted for r in rec.records):
                raise KeyboardInterrupt
    tables = rec.tables()
    epochs, summary = tables["epochs.csv"], tables["summary.csv"]
    if epochs.empty:
        return runner.Result(tables=tables)
    lines = _summary_lines(epochs, summary) + [s for s in [compile_sentence(summary)] if s]
    flagged = timing_sentences(summary)
    problems = [] if tables["runs.csv"]["status"].eq("ok").any() else \
        ["no run finished ok (see status and error in runs.csv)"]
    return runner.Result(
        tables=tables, setup=[model_line(config.to_dict())], printed=[*lines, *[f"timing flagged: {s}" for s in flagged]],
        sections=[(None, [CLOCKS, "", REFERENCE, "", "The backends took turns, one epoch each."]),
                  ("Summary", [md_table(summary_view(summary)), "", *[f"- {line}" for line in lines],
                               *(["", "**Timing flagged:**", "", *[f"- {s}" for s in flagged]] if flagged else [])])],
        problems=problems)


def _take_turns(ctx: runner.Context, runs: list[Run]) -> None:
    """Start every run, then one epoch each in turn until all are over (or one is interrupted)."""
    going = []
    for r in runs:
        if r.start():
            going.append(r)
        elif r.record.interrupted:
            return
    while going:
        for r in list(going):
            shown = len(r.record.epochs)
            if not r.step():
                going.remove(r)
            for e in r.record.epochs[shown:]:
                ctx.say(_epoch_line(r.record.backend, e))
            if r.record.interrupted:
                return


def _epoch_line(name: str, e: dict) -> str:
    if "gemm_seconds" not in e:
        return f"{name} epoch {e['epoch']}: {e['epoch_seconds']:.3f} s"
    gather = e.get("gather_seconds", np.nan)
    return (f"{name} epoch {e['epoch']}: {e['epoch_seconds']:.3f} s, GEMM-only {e['gemm_seconds']:.3f} s "
            f"(mean of before and after), ratio {e['epoch_to_gemm']:.3f}"
            + (f", gather-only {gather:.3g} s" if np.isfinite(gather) else "")
            + f" [{e['timing_quality']}]")


def _summary_lines(epochs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """Per backend: the ratio over every epoch after the first, over the trusted ones, the gather's part
    of it, and the floor."""
    lines = []
    for row in summary.to_dict("records"):
        steady = steady_epochs(epochs[epochs["backend"] == row["backend"]])
        if "epoch_to_gemm" not in steady or steady.empty:  # a backend that failed before its 2nd epoch
            continue
        r = steady["epoch_to_gemm"].to_numpy(float)
        g = steady["gather_seconds"].to_numpy(float) if "gather_seconds" in steady else np.array([np.nan])
        share = (f", of which the batch gather {np.median(g / steady['gemm_seconds'].to_numpy(float)):.3f} "
                 f"(gather-only {np.median(g):.3g} s an epoch)" if np.isfinite(g).all() else "")
        trusted = (f"{row['epoch_to_gemm_trusted']:.3f} (min {row['epoch_to_gemm_min_trusted']:.3f}) "
                   f"over the {row['n_epochs_trusted']} trusted (at nominal machine speed and unflagged)"
                   if row["n_epochs_trusted"] else "no trusted epoch (none at nominal machine speed "
                   "and unflagged)")
        gather = row.get("gather_seconds_trusted", np.nan)
        if row["n_epochs_trusted"] and np.isfinite(gather):
            trusted += (f", of which the batch gather {gather / row['gemm_seconds_trusted']:.3f} "
                        f"(gather-only {gather:.3g} s an epoch)")
        lines.append(f"{row['backend']}: median epoch/GEMM ratio {np.median(r):.3f} over all "
                     f"{len(r)} epochs after the first, trusted or not (min {r.min():.3f}, max "
                     f"{r.max():.3f}){share}; {trusted}; fixed cost of a step "
                     f"{row['fixed_step_seconds'] * 1e6:.0f} us, so the ratio cannot go below "
                     f"{row['ratio_floor']:.3f}; timing {row['timing_quality']}")
    return lines


COMMAND = runner.Command("epoch_ratio", "Epoch time against GEMM-only time", measure,
                         about=__doc__.split("\n\n")[0])
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
