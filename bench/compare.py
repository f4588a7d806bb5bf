"""Train every backend side by side and write tables, plots and a report.

Run it as::

    python -m bench.compare                          # every available backend, reference setup
    python -m bench.compare --seeds 42 43 44 45 46   # five runs per backend, with significance tests
    python -m bench.compare --lockstep               # all backends from the same weights, per-step losses
    python -m bench.compare --backends numpy:cpu,torch:cpu --epochs 3 --train-subset 10000

Every flag is a field of ``bench.config.Config`` (``--help`` lists them with
their defaults); ``--config FILE`` reads the same fields from TOML. Each
(backend, seed) is one call of the one run path (``bench.run``); results go
through one results folder (``bench.results``) to ``--out DIR`` (default
``results/<timestamp>_<label>/``), never over an existing run:
``epochs.csv``, ``runs.csv``, ``summary.csv``, ``pairs.csv``, ``steps.csv``
(lock-step), ``env.json``, PNG plots and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tqdm import tqdm

from bench.backends import Chosen, listing, options_of, resolve
from bench.cli import command_parser
from bench.config import Config, config_from_args
from bench.data.dataset import Dataset
from bench.datasource import load_for_config
from bench.errors import EXIT_FAILED, interrupted_code, run_cli
from bench.loop import Clock, LoopHooks, RunResult
from bench.memory import check_memory
from bench.report import build_report, flagged_backends, gemm_libraries, md_table, next_steps, \
    summary_view, timing_sentences
from bench.results import ResultsFolder
from bench.roofline import epoch_flop, gflops_columns
from bench.run import CONTROL_SUFFIX, RunRecord, one_ulp_apart, run_one
from bench.stats import compare_pairs, pair_sentences, summarise
from bench.threads import limit_threads, resolve_threads
from bench.timing import trusted_mask

COMMAND = "compare"
# the columns an empty table still gets, so that every CSV can be read back
EPOCH_COLUMNS = ["backend", "impl", "device", "seed", "epoch", "step", "steps", "train_loss",
                 "train_acc", "val_loss", "val_acc", "epoch_seconds", "eval_seconds",
                 "samples_per_second", "timing_quality"]
RUN_COLUMNS = ["backend", "impl", "device", "seed", "status", "error", "test_acc", "test_loss",
               "best_epoch", "best_val_acc", "epochs_done", "total_train_seconds",
               "median_epoch_seconds_all", "time_to_target_seconds", "peak_memory_bytes",
               "compile_seconds"]


def build_parser():
    parser = command_parser(COMMAND, "Train the NumPy and PyTorch MLPs side by side and write CSV "
                                     "tables, plots and a report. Defaults are the reference setup. "
                                     "A backend course:PATH trains your own course-style "
                                     "implementation: its code is imported and run.",
                            out_default="results/<timestamp>_<backends>/")
    parser.add_argument("--list-backends", action="store_true",
                        help="list every backend (built-in and plugins) and whether it can run here")
    return parser


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """``rows`` as a table; with no rows, the header alone."""
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


class Recorder(LoopHooks):
    """Holds every record of the comparison and rewrites the CSVs as they grow."""

    def __init__(self, folder: ResultsFolder):
        self.folder = folder
        self.records: list[RunRecord] = []
        self.current: list[dict[str, Any]] = []  # the epochs of the run in progress
        self.control_steps: list[dict[str, Any]] = []  # lock-step: the float32 control's steps

    def epochs(self) -> pd.DataFrame:
        return frame([e for r in self.records for e in r.epochs] + self.current, EPOCH_COLUMNS)

    def runs(self) -> pd.DataFrame:
        return frame([r.run for r in self.records], RUN_COLUMNS)

    def steps(self) -> pd.DataFrame:
        return frame([s for r in self.records for s in r.steps] + self.control_steps,
                     ["backend", "seed", "step", "loss"])

    def epoch_done(self, result: RunResult) -> None:
        self.current = list(result.epochs)
        self.folder.write_csv("epochs.csv", self.epochs())

    def finish_run(self, record: RunRecord) -> None:
        self.current = []
        self.records.append(record)
        self.folder.write_csv("epochs.csv", self.epochs())
        self.folder.write_csv("runs.csv", self.runs())


class Progress(LoopHooks):
    """A tqdm bar per run: loss, accuracy and seconds of the last epoch."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def epoch_done(self, result: RunResult) -> None:
        e = result.epochs[-1]
        self.bar.set_postfix(loss=f"{e['train_loss']:.4f}", val_acc=f"{e['val_acc']:.4f}",
                             s=f"{e['epoch_seconds']:.2f}")
        self.bar.update(1)


LOCKSTEP_PART = 1e-4  # relative loss difference from which two lock-step runs have parted


def lockstep_divergence(steps: pd.DataFrame, reference: str) -> dict[str, Any]:
    """Every backend's step losses against the reference's (the rounding control's too): per backend
    the largest relative difference and where, and the first step whose relative difference exceeds
    LOCKSTEP_PART."""
    control = reference + CONTROL_SUFFIX
    lock = {"reference": reference, "control": control if control in set(steps["backend"]) else None,
            "steps": 0, "backends": {}}
    for seed, s in steps.groupby("seed"):
        table = s.pivot_table(index="step", columns="backend", values="loss", dropna=False)
        lock["steps"] = max(lock["steps"], len(table))
        if reference not in table:
            continue
        ref = table[reference]
        for b in table.columns.drop(reference):
            rel = ((table[b] - ref).abs() / ref.abs().clip(lower=1e-12)).fillna(float("inf"))
            apart = rel[rel > LOCKSTEP_PART]
            mine = lock["backends"].setdefault(b, {"max_rel": 0.0, "where": "", "parted": ""})
            if len(apart) and not mine["parted"]:
                step = int(apart.index[0])
                mine["parted"] = (f"step {step} (seed {seed}): loss {table[b][step]:.6g} ({b}) vs "
                                  f"{ref[step]:.6g} ({reference}), relative {rel[step]:.3g}")
            if rel.max() >= mine["max_rel"]:
                mine["max_rel"], mine["where"] = float(rel.max()), f"seed {seed}, step {int(rel.idxmax())}"
    return lock


def lockstep_sentences(lock: dict[str, Any]) -> list[str]:
    """Per backend: its drift from the reference, and beside it the float32 control's drift."""
    ref, control = lock["reference"], lock.get("control")
    yard = lock["backends"].get(control) if control else None
    out = []
    for b, d in lock["backends"].items():
        if b == control:
            continue
        text = (f"`{b}` against `{ref}`: largest relative loss difference {d['max_rel']:.3g} "
                f"({d['where']}); " + (f"parts (relative difference above {LOCKSTEP_PART:g}) first at "
                                       f"{d['parted']}" if d["parted"] else
                                       f"never parts (never above {LOCKSTEP_PART:g})"))
        if yard is not None:
            text += (f". Yardstick, the rounding control `{control}` ({ref} from its own weights × "
                     f"(1 + machine epsilon)): largest {yard['max_rel']:.3g}, "
                     + (f"parts first at {yard['parted']}" if yard["parted"] else "never parts"))
        out.append(text + ".")
    return out


@dataclass
class Outcome:
    """What one comparison produced (also written under ``out``)."""

    out: Any
    epochs: pd.DataFrame
    runs: pd.DataFrame
    told: dict[str, Any] | None  # the summary, the verdicts, the next steps, the lock-step sentences
    skipped: list[tuple[str, str]]
    env: dict[str, Any]
    interrupted: bool


def run_compare(config: Config, out: str | None = None, *, progress: bool = True,
                clock: Clock = time.perf_counter) -> Outcome:
    """Run every backend of ``config`` for every seed and write all outputs into ``out``.

    Bad backends or options raise :class:`UserError` before anything is
    created. Ctrl-C, SIGTERM or SIGHUP stops training; what finished is
    written and the outcome says ``interrupted``.
    """
    chosen, skipped = resolve(config.backends)
    check_memory(config, sum(c.device == "cpu" for c in chosen))
    # constructors check options (a UserError: one line); one that fails otherwise is that run's failure
    backends = [(c, c.build(config)) for c in chosen]
    label = "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in c.name) for c in chosen)
    label += "_lockstep" if config.lockstep else ""
    label += f"_{len(config.seeds)}seeds" if len(config.seeds) > 1 else ""
    threads = resolve_threads(config.threads)
    env, data, told = {}, None, None
    with ResultsFolder.create(out, label) as folder, limit_threads(threads):
        rec = Recorder(folder)
        with folder.measuring():
            data = load_for_config(config, config.seeds[0], progress=progress)
            for name, reason in skipped:
                print(f"skipped {name}: {reason}", file=sys.stderr)
            env = folder.write_env(threads, {"config": config.to_dict(),
                                             "backends": [c.name for c in chosen], "skipped": skipped,
                                             "data": data.info()})
            env["backend_options"] = {c.name: options_of(b) for c, b in backends if b is not None}
            folder.write_json("env.json", env)
            folder.interrupted = _train_all(config, backends, data, rec, progress, clock)
        if data is not None:
            told = _write_outputs(folder, config, env, rec, skipped, data)
    return Outcome(folder.path, rec.epochs(), rec.runs(), told, skipped, env, folder.interrupted)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_backends:
        print(md_table(pd.DataFrame(listing())))
        return 0
    config = config_from_args(args, COMMAND)
    outcome = run_compare(config, args.out, progress=not args.quiet)
    told = outcome.told or {}
    if told:
        print(md_table(summary_view(told["summary"])))
        for sentence in timing_sentences(told["summary"]):
            print(f"timing flagged: {sentence}")
        for sentence in told["lockstep"]:
            print(f"lock-step: {sentence}")
        for sentence in told["verdicts"]:
            print(f"verdict: {sentence}")
        for sentence in told["next"]:
            print(f"next: {sentence}")
    if outcome.interrupted:
        print(f"interrupted: partial results in {outcome.out}", file=sys.stderr)
    print(f"results: {outcome.out}")
    if outcome.interrupted:
        return interrupted_code()
    if outcome.runs.empty or not outcome.runs["status"].eq("ok").any():
        print("no run finished ok (see status and error in runs.csv)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _train_all(config: Config, backends: list[tuple[Chosen, Any]], data: Dataset, rec: Recorder,
               progress: bool, clock: Clock) -> bool:
    """Every seed, every backend, through the one run path; returns whether it was interrupted."""
    for i, seed in enumerate(config.seeds):
        if i > 0:  # the validation split is drawn by the seed
            data = load_for_config(config, seed, progress=progress)
        initial = _initial_state(backends, data, seed) if config.lockstep else None
        for c, b in backends:
            bar = tqdm(total=config.epochs, desc=f"{c.name} seed {seed}", unit="epoch",
                       disable=not progress, file=sys.stderr, leave=True)
            record = run_one(c, config, data, seed, backend=b, initial_state=initial,
                             record_steps=config.lockstep, hooks=[Progress(bar), rec], clock=clock)
            bar.close()
            rec.finish_run(record)
            if record.status == "diverged":
                print(f"{c.name} seed {seed}: diverged (non-finite loss in epoch "
                      f"{len(record.epochs)}); the other runs go on", file=sys.stderr)
            elif record.status in ("failed", "oom"):  # one line, the error in runs.csv and report.md
                print(f"{c.name} seed {seed}: {record.status}: {record.error}; the other runs go on",
                      file=sys.stderr)
            if record.interrupted:
                return True
        if initial is not None and _control(config, backends[0][0], data, seed, initial, rec, progress):
            return True
    return False


def _initial_state(backends: list[tuple[Chosen, Any]], data: Dataset, seed: int) -> dict | None:
    """The lock-step start: the first backend that can give its initial weights for ``seed`` (one
    that fails here fails again, recorded, in its own run)."""
    for _c, b in backends:
        try:
            if b is not None:
                b.load_data(data)
                b.init_model(seed)
                return b.export_state()
        except (Exception, SystemExit):  # noqa: BLE001 - that backend's run records the failure
            continue
    return None


def _control(config: Config, chosen: Chosen, data: Dataset, seed: int, initial: dict[str, Any],
             rec: Recorder, progress: bool) -> bool:
    """The float32 control of a lock-step run: the first backend again, from its weights times
    (1 + machine epsilon), so that its drift shows what rounding alone does; True if interrupted."""
    bar = tqdm(total=config.epochs, desc=f"{chosen.name}{CONTROL_SUFFIX} seed {seed} (control)", unit="epoch",
               disable=not progress, file=sys.stderr, leave=True)
    record = run_one(chosen, dataclasses.replace(config, reference_timing=False), data, seed,
                     initial_state=one_ulp_apart(initial), record_steps=True, hooks=[Progress(bar)])
    bar.close()
    rec.control_steps += [{**s, "backend": chosen.name + CONTROL_SUFFIX} for s in record.steps]
    return record.interrupted


def _write_outputs(folder: ResultsFolder, config: Config, env: dict[str, Any], rec: Recorder,
                   skipped, data: Dataset) -> dict[str, Any] | None:
    """Every table, plot and the report from the records; the pieces the terminal prints."""
    from bench import plots  # matplotlib: not for --list-backends or a refused command

    epochs, runs = rec.epochs(), rec.runs()
    if len(epochs):
        epochs["trusted"] = trusted_mask(epochs)  # the one decision every output below reads
    folder.write_csv("epochs.csv", epochs)
    folder.write_csv("runs.csv", runs)
    if runs.empty:
        return None
    summary = summarise(runs, epochs)
    flop = epoch_flop(data.n_features, config.hidden_dims, data.n_classes, config.batch_size,
                      len(data.y_train))
    gemm = summary["gemm_seconds_trusted"] if "gemm_seconds_trusted" in summary else float("nan")
    for name, col in gflops_columns(summary["median_epoch_seconds_trusted"], gemm, flop).items():
        summary[name] = col
    folder.write_csv("summary.csv", summary)
    pairs = compare_pairs(runs, epochs, summary)
    folder.write_csv("pairs.csv", pairs)

    figs = {}
    drawn = (("Training loss per epoch", "train_loss.png", plots.train_loss),
             ("Validation accuracy per epoch", "val_acc.png", plots.val_acc),
             ("Epoch time vs GEMM-only time", "epoch_time.png", lambda _: plots.epoch_time(summary)))
    for title, name, draw in drawn if not epochs.empty else ():
        if folder.save_figure(name, draw(epochs)) is not None:
            figs[title] = name
    lock = None
    if config.lockstep:
        steps = rec.steps()
        folder.write_csv("steps.csv", steps)
        if not steps.empty:
            lock = lockstep_divergence(steps, steps["backend"].iloc[0])
            if folder.save_figure("lockstep.png", plots.lockstep(steps)) is not None:
                figs["Lock-step losses"] = "lockstep.png"
            env["lockstep"] = lock
            folder.write_json("env.json", env)
    told = {"summary": summary, "verdicts": pair_sentences(pairs, flagged_backends(summary),
                                                           gemm_libraries(env)),
            "next": next_steps(config.to_dict(), summary, pairs),
            "lockstep": lockstep_sentences(lock) if lock else []}
    folder.write_text("report.md", build_report(
        env=env, config=config.to_dict(), summary=summary, pairs=told["verdicts"],
        next_steps=told["next"], runs=runs, skipped=skipped, plots=figs,
        lockstep=told["lockstep"] if lock else None, interrupted=folder.interrupted_note(),
        files=[*folder.written, "report.md"]))
    return told


def cli() -> None:
    run_cli(main, prog="python -m bench.compare")


if __name__ == "__main__":
    cli()
