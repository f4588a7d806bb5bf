"""Train every backend side by side and write tables, plots and a report.

Run it as::

    python -m bench.compare                          # every available backend, reference setup
    python -m bench.compare --seeds 42 43 44 45 46   # five runs per backend, with significance tests
    python -m bench.compare --lockstep               # all backends from the same weights, per-step losses
    python -m bench.compare --backends numpy:cpu,torch:cpu --epochs 3 --train-subset 10000

Every flag is a field of ``bench.config.Config`` (``--help`` lists them with
their defaults); ``--config FILE`` reads the same fields from TOML. Results go
to ``--out DIR`` (default ``results/<timestamp>_<label>/``), never over an
existing run: ``epochs.csv``, ``runs.csv``, ``summary.csv``, ``pairs.csv``,
``steps.csv`` (lock-step), ``env.json``, PNG plots and ``report.md``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from bench import plots
from bench.backends import Chosen, resolve
from bench.config import Config, add_config_arguments, config_from_args
from bench.datasource import load_for_config
from bench.env import collect_env
from bench.errors import EXIT_INTERRUPTED, OneLineArgumentParser, UserError, run_cli
from bench.io import write_csv, write_json, write_text
from bench.loop import RunResult, train_run
from bench.report import build_report, md_table, summary_view
from bench.roofline import epoch_flop, measure_gemms, roofline_columns
from bench.stats import compare_pairs, summarise
from bench.threads import default_threads, limit_threads

def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m bench.compare",
        description="Train the NumPy and PyTorch MLPs side by side and write CSV tables, plots and "
                    "a report. Defaults are the reference setup (bench/config.py).")
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="output folder (must not exist yet, or be empty; "
                        "default: results/<timestamp>_<label>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def output_dir(out: str | None, config: Config, names: list[str]) -> Path:
    """The run's folder (not created yet); an existing non-empty folder is an error."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"--out {out} already exists and is not empty (an existing run is never "
                            "overwritten; pick a new folder)")
        return path
    label = "_".join(n.replace(":", "-") for n in names)
    if config.lockstep:
        label += "_lockstep"
    if len(config.seeds) > 1:
        label += f"_{len(config.seeds)}seeds"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("results") / f"{stamp}_{label}"
    k = 1
    while path.exists():
        k += 1
        path = Path("results") / f"{stamp}_{label}_{k}"
    return path


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path}: {exc.strerror}") from None


class Recorder:
    """Holds every record of the run and rewrites the CSVs atomically as they grow."""

    def __init__(self, out: Path):
        self.out = out
        self.results: list[RunResult] = []
        self.current: RunResult | None = None

    def _all(self) -> list[RunResult]:
        return self.results + ([self.current] if self.current is not None else [])

    def epochs(self) -> pd.DataFrame:
        return pd.DataFrame([e for r in self._all() for e in r.epochs])

    def runs(self) -> pd.DataFrame:
        return pd.DataFrame([r.run for r in self.results if r.run])

    def steps(self) -> pd.DataFrame:
        return pd.DataFrame([s for r in self._all() for s in r.steps])

    def on_epoch(self, result: RunResult) -> None:
        self.current = result
        write_csv(self.epochs(), self.out / "epochs.csv")

    def finish_run(self, result: RunResult) -> None:
        self.current = None
        self.results.append(result)
        write_csv(self.epochs(), self.out / "epochs.csv")
        write_csv(self.runs(), self.out / "runs.csv")


def lockstep_divergence(steps: pd.DataFrame, reference: str) -> dict[str, Any]:
    """Largest absolute and relative difference of every backend's step loss from the reference's."""
    worst = {"max_abs": 0.0, "max_rel": 0.0, "where": "no other backend", "reference": reference,
             "steps": 0}
    for seed, s in steps.groupby("seed"):
        table = s.pivot_table(index="step", columns="backend", values="loss")
        worst["steps"] = max(worst["steps"], len(table))
        if reference not in table:
            continue
        ref = table[reference]
        for b in table.columns:
            if b == reference:
                continue
            diff = (table[b] - ref).abs()
            rel = diff / ref.abs().clip(lower=1e-12)
            if diff.max() >= worst["max_abs"]:
                worst["max_abs"] = float(diff.max())
            if rel.max() >= worst["max_rel"]:
                worst["max_rel"] = float(rel.max())
                worst["where"] = f"{b}, seed {seed}, step {int(rel.idxmax())}"
    return worst


@dataclass
class Outcome:
    """What one comparison produced (also written under ``out``)."""

    out: Path
    epochs: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame | None
    skipped: list[tuple[str, str]]
    env: dict[str, Any]
    interrupted: bool


def run_compare(config: Config, out: str | Path | None = None, *, progress: bool = True) -> Outcome:
    """Run every backend of ``config`` for every seed and write all outputs into ``out``.

    Bad backends or options raise :class:`UserError` before anything is
    created. Ctrl-C stops training; what finished is written and the outcome
    says ``interrupted``.
    """
    chosen, skipped = resolve(config.backends)
    backends = [(c, c.make(config)) for c in chosen]  # constructors check options (one line on error)
    out = output_dir(None if out is None else str(out), config, [c.name for c in chosen])
    threads = config.threads or default_threads()
    _make_dir(out)

    rec = Recorder(out)
    interrupted = False
    gemm: dict[str, float] = {}
    env: dict[str, Any] = {}
    data = None
    with limit_threads(threads):
        try:
            try:
                data = load_for_config(config, config.seeds[0], progress=progress)
            except UserError:
                if not any(out.iterdir()):  # leave no empty results folder behind
                    out.rmdir()
                raise
            for name, reason in skipped:
                print(f"skipped {name}: {reason}", file=sys.stderr)
            env = collect_env(threads, {"config": config.to_dict(), "backends": [c.name for c in chosen],
                                        "skipped": skipped, "data": _data_info(data)})
            write_json(env, out / "env.json")
            for c, b in backends:
                b.load_data(data)
                gemm[c.name] = measure_gemms(b, config, data.n_features, data.n_classes,
                                             len(data.y_train))
            env["backend_options"] = {c.name: b.describe() for c, b in backends}
            write_json(env, out / "env.json")
            interrupted = _train_all(config, backends, data, rec, progress)
        except KeyboardInterrupt:
            interrupted = True
    summary = None
    if data is not None:
        summary = _write_outputs(out, config, env, rec, gemm, skipped, interrupted, data)
    return Outcome(out, rec.epochs(), rec.runs(), summary, skipped, env, interrupted)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    outcome = run_compare(config, args.out, progress=not args.quiet)
    if outcome.summary is not None and len(outcome.summary):
        print(md_table(summary_view(outcome.summary)))
    if outcome.interrupted:
        print(f"interrupted: partial results in {outcome.out}", file=sys.stderr)
    print(f"results: {outcome.out}")
    return EXIT_INTERRUPTED if outcome.interrupted else 0


def _train_all(config: Config, backends: list[tuple[Chosen, Any]], data, rec: Recorder,
               progress: bool) -> bool:
    """Every seed, every backend; returns whether the run was interrupted."""
    for i, seed in enumerate(config.seeds):
        if i > 0:  # the validation split is drawn by the seed
            data = load_for_config(config, seed, progress=progress)
            for _, b in backends:
                b.load_data(data)
        initial = None
        if config.lockstep:
            backends[0][1].init_model(seed)
            initial = backends[0][1].export_state()
        for c, b in backends:
            bar = tqdm(total=config.epochs, desc=f"{c.name} seed {seed}", unit="epoch",
                       disable=not progress, file=sys.stderr, leave=True)

            def on_epoch(result: RunResult, bar=bar) -> None:
                e = result.epochs[-1]
                bar.set_postfix(loss=f"{e['train_loss']:.4f}", val_acc=f"{e['val_acc']:.4f}",
                                s=f"{e['epoch_seconds']:.2f}")
                bar.update(1)
                rec.on_epoch(result)

            result = train_run(b, data, config, seed, initial_state=initial,
                               record_steps=config.lockstep, on_epoch=on_epoch)
            bar.close()
            rec.finish_run(result)
            if result.status == "diverged":
                print(f"{c.name} seed {seed}: diverged (non-finite loss in epoch "
                      f"{len(result.epochs)}); the other runs go on", file=sys.stderr)
            if result.interrupted:
                return True
    return False


def _data_info(data) -> dict[str, Any]:
    return {"source": data.source, "official": data.official, "fingerprint": data.fingerprint,
            "n_train": int(len(data.y_train)), "n_val": int(len(data.y_val)),
            "n_test": int(len(data.y_test))}


def _write_outputs(out: Path, config: Config, env: dict[str, Any], rec: Recorder,
                   gemm: dict[str, float], skipped, interrupted: bool, data) -> pd.DataFrame | None:
    epochs, runs = rec.epochs(), rec.runs()
    write_csv(epochs, out / "epochs.csv")
    write_csv(runs, out / "runs.csv")
    if runs.empty or epochs.empty:
        return None
    summary = summarise(runs, epochs)
    flop = epoch_flop(data.n_features, config.hidden_dims, data.n_classes, config.batch_size,
                      len(data.y_train))
    summary["gemm_seconds"] = summary["backend"].map(gemm).astype(float)
    for name, col in roofline_columns(summary["median_epoch_seconds"], summary["gemm_seconds"],
                                      flop).items():
        summary[name] = col
    write_csv(summary, out / "summary.csv")
    pairs = compare_pairs(runs, epochs)
    write_csv(pairs, out / "pairs.csv")

    figs = {"Training loss per epoch": plots.plot_train_loss(epochs, out / "train_loss.png").name,
            "Validation accuracy per epoch": plots.plot_val_acc(epochs, out / "val_acc.png").name,
            "Epoch time vs GEMM-only time": plots.plot_epoch_time(
                summary, pd.DataFrame({"backend": list(gemm), "gemm_seconds": list(gemm.values())}),
                out / "epoch_time.png").name}
    lock = None
    if config.lockstep:
        steps = rec.steps()
        write_csv(steps, out / "steps.csv")
        if not steps.empty:
            lock = lockstep_divergence(steps, steps["backend"].iloc[0])
            figs["Lock-step losses"] = plots.plot_lockstep(steps, out / "lockstep.png").name
            env["lockstep"] = lock
            write_json(env, out / "env.json")
    report = build_report(env=env, config=config.to_dict(), summary=summary, pairs=pairs, runs=runs,
                          skipped=skipped, plots=figs, lockstep=lock, interrupted=interrupted)
    write_text(report, out / "report.md")
    if lock is not None:
        print(f"lock-step: largest loss divergence abs {lock['max_abs']:.3g}, rel {lock['max_rel']:.3g} "
              f"({lock['where']})", file=sys.stderr)
    return summary


def cli() -> None:
    run_cli(main, prog="python -m bench.compare")


if __name__ == "__main__":
    cli()
