"""Epoch time against GEMM-only time, the backends taking turns epoch by epoch (a benchmark, not a test).

Run it as::

    python -m bench.epoch_ratio                    # numpy:cpu and torch:cpu, 5 epochs, synthetic data
    python -m bench.epoch_ratio --epochs 9 --threads 1 --backends numpy:cpu

Its preset (``bench.config.PRESETS["epoch_ratio"]``): 5 epochs of synthetic
data of the CIFAR-10 training size, ``numpy:cpu`` and ``torch:cpu``; every
other setting is the reference setup, and ``--help`` shows each effective
default. Each backend is one run of the one run path (``bench.run.Run``),
with the GEMM-only brackets and the fixed-cost floor of ``bench.timing``;
the runs take turns epoch by epoch, so a load that drifts hits every backend
alike. It prints every epoch with its ratio, gather-only time and quality,
then per backend the median ratio over all epochs after the first and over
those at nominal speed and unflagged, the part of it the batch gather costs,
and the fixed-cost floor. ``--gather-from uint8`` times the other data path. ``--out`` gets ``epochs.csv``,
``runs.csv``, ``summary.csv``, ``env.json`` and ``report.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.backends import resolve
from bench.cli import command_parser
from bench.config import config_from_args
from bench.datasource import load_for_config
from bench.errors import EXIT_FAILED, run_cli
from bench.memory import check_memory
from bench.report import CLOCKS, REFERENCE, compile_sentence, md_table, model_line, setup_lines, \
    summary_view, timing_sentences
from bench.results import ResultsFolder
from bench.run import Run
from bench.stats import summarise
from bench.threads import limit_threads, resolve_threads
from bench.timing import steady_epochs, trusted_mask

COMMAND = "epoch_ratio"


def main(argv: Sequence[str] | None = None) -> int:
    args = command_parser(COMMAND, __doc__.split("\n\n")[0]).parse_args(argv)
    config = config_from_args(args, COMMAND)
    chosen, _ = resolve(config.backends)
    check_memory(config, sum(c.device == "cpu" for c in chosen))
    backends = [c.build(config) for c in chosen]  # option errors before anything is created
    threads = resolve_threads(config.threads)
    say = (lambda *_: None) if args.quiet else (lambda text: print(text, flush=True))
    records, env, lines, sentences = [], {}, [], []
    with ResultsFolder.create(args.out, COMMAND) as folder, limit_threads(threads):
        with folder.measuring():
            for seed in config.seeds:
                data = load_for_config(config, seed, progress=not args.quiet)
                if seed == config.seeds[0]:
                    env = folder.write_env(threads, {"config": config.to_dict(), "data": data.info(),
                                                     "backends": [c.name for c in chosen]})
                    say(f"{len(data.y_train)} x {data.n_features} -> {config.hidden_dims} -> "
                        f"{data.n_classes}, batch {config.batch_size}, "
                        f"{len(data.y_train) // config.batch_size} steps, {threads} threads")
                runs = [Run(c, config, data, seed, backend=b) for c, b in zip(chosen, backends)]
                try:
                    _take_turns(runs, say)
                finally:  # a signal between two epochs still keeps every started run's record
                    records += [r.finish() for r in runs if r.training is not None or r.status != "running"]
                if any(r.interrupted for r in records):
                    folder.interrupted = True
                    break
        epochs = pd.DataFrame([e for r in records for e in r.epochs])
        run_rows = pd.DataFrame([r.run for r in records])
        if not run_rows.empty:
            folder.write_csv("runs.csv", run_rows)
        if not epochs.empty:
            epochs["trusted"] = trusted_mask(epochs)  # the one decision every output reads
            summary = summarise(run_rows, epochs)
            folder.write_csv("epochs.csv", epochs)
            folder.write_csv("summary.csv", summary)
            lines = _summary_lines(epochs, summary) + [s for s in [compile_sentence(summary)] if s]
            sentences = timing_sentences(summary)
        if env:
            report = ["# Epoch time against GEMM-only time", "", *folder.interrupted_note(), "## Setup", "",
                      *setup_lines(env, [model_line(config.to_dict())]), "", CLOCKS, "", REFERENCE, "",
                      "The backends took turns, one epoch each.", ""]
            if not epochs.empty:
                report += ["## Summary", "", md_table(summary_view(summary)), "",
                           *[f"- {line}" for line in lines], ""]
            if sentences:
                report += ["**Timing flagged:**", "", *[f"- {s}" for s in sentences], ""]
            report += ["Files: " + ", ".join(f"`{f}`" for f in [*folder.written, "report.md"]) + ".", ""]
            folder.write_text("report.md", "\n".join(report))
    for line in lines:
        print(line)
    for sentence in sentences:
        print(f"timing flagged: {sentence}")
    print(f"results: {folder.path}")
    if folder.interrupted:
        print(f"interrupted: partial results in {folder.path}", file=sys.stderr)
        return folder.exit_code()
    if run_rows.empty or not run_rows["status"].eq("ok").any():
        print("no run finished ok (see status and error in runs.csv)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _take_turns(runs: list[Run], say) -> None:
    """Start every run, then one epoch each in turn until all are over (or one is interrupted)."""
    going = []
    for r in runs:
        if r.start():
            going.append(r)
        elif r.status == "interrupted":
            return
    shown = {id(r): 0 for r in runs}
    while going:
        for r in list(going):
            if not r.step():
                going.remove(r)
            done = r.training.result.epochs if r.training is not None else []
            for e in done[shown[id(r)]:]:
                say(_epoch_line(r.chosen.name, e))
            shown[id(r)] = len(done)
            if r.status == "interrupted":
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
        if "epoch_to_gemm" not in steady:
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


if __name__ == "__main__":
    run_cli(main, prog="python -m bench.epoch_ratio")
