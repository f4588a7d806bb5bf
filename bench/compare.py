"""Train every backend side by side and write tables, plots and a report.

Run it as::

    python -m bench.compare                          # every available backend, reference setup
    python -m bench.compare --seeds 42 43 44 45 46   # five runs per backend, with significance tests
    python -m bench.compare --lockstep               # all backends from the same weights, per-step losses
    python -m bench.compare --backends numpy:cpu,torch:cpu --epochs 3 --train-subset 10000

Every flag is a field of ``bench.config.Config`` (``--help`` lists them with
their defaults); ``--config FILE`` reads the same fields from TOML. Each
(backend, seed) is one run of the one run layer (``bench.run``); after each run, ``--out DIR`` (new;
default ``results/<timestamp>_<backends>/``) holds ``epochs.csv``, ``runs.csv``, ``summary.csv``,
``pairs.csv``, ``steps.csv`` (lock-step), ``env.json`` and ``report.md``; the PNGs come at the end.
"""

from __future__ import annotations

import dataclasses
import sys

import pandas as pd
from tqdm import tqdm

from bench import lockstep, runner
from bench.backends import listing, options_of
from bench.report import compare_sections, flagged_backends, gemm_libraries, md_table, next_steps, \
    summary_view, timing_sentences
from bench.roofline import epoch_flop
from bench.run import LoopHooks, Recorder, RunRecord, frame, run_one
from bench.stats import compare_pairs, pair_sentences


class Progress(LoopHooks):
    """A tqdm bar per run: loss, accuracy and seconds of the last epoch."""

    def __init__(self, ctx: runner.Context, desc: str):
        self.bar = tqdm(total=ctx.config.epochs, desc=desc, unit="epoch", disable=ctx.quiet,
                        file=sys.stderr, leave=True)

    def epoch_done(self, record: RunRecord) -> None:
        e = record.epochs[-1]
        self.bar.set_postfix(loss=f"{e['train_loss']:.4f}", val_acc=f"{e['val_acc']:.4f}",
                             s=f"{e['epoch_seconds']:.2f}")
        self.bar.update(1)


def measure(ctx: runner.Context) -> runner.Result:
    """Every seed, every backend, through the one run layer; then every table, plot and sentence."""
    config, rec, control, data = ctx.config, Recorder(ctx.folder), [], None
    with ctx.measuring():
        for i, seed in enumerate(config.seeds):
            data = ctx.data(seed)  # the validation split is drawn by the seed
            for name, reason in ctx.skipped if i == 0 else ():
                print(f"skipped {name}: {reason}", file=sys.stderr)
            initial = _initial_state(ctx, data, seed) if config.lockstep else None
            for c, b in zip(ctx.chosen, ctx.backends):
                bar = Progress(ctx, f"{c.name} seed {seed}")
                r = rec.add(run_one(c, config, data, seed, backend=b, initial_state=initial,
                                    record_steps=config.lockstep, hooks=[bar, rec]))
                bar.bar.close()
                ctx.checkpoint(_outputs(ctx, rec, control, data))  # on disk now, whatever ends the process
                if r.status in ("diverged", "failed", "oom"):  # one line; the error in runs.csv
                    print(f"{c.name} seed {seed}: {r.status}: {r.error}; the other runs go on",
                          file=sys.stderr)
                if r.interrupted:
                    raise KeyboardInterrupt
            if initial is not None:  # the rounding control: the first backend from weights 1 ulp apart
                c = ctx.chosen[0]
                bar = Progress(ctx, f"{c.name}{lockstep.CONTROL_SUFFIX} seed {seed} (control)")
                r = run_one(c, dataclasses.replace(config, reference_timing=False), data, seed,
                            initial_state=lockstep.one_ulp_apart(initial), record_steps=True, hooks=[bar])
                bar.bar.close()
                control += [{**s, "backend": c.name + lockstep.CONTROL_SUFFIX} for s in r.steps]
                if r.interrupted:
                    raise KeyboardInterrupt
    return _outputs(ctx, rec, control, data) if data is not None else runner.Result()


def _initial_state(ctx: runner.Context, data, seed: int) -> dict | None:
    """The lock-step start: the first backend that gives its initial weights for ``seed``, this package's
    before code nobody here wrote (``isolated``); one that fails here fails again in its own run."""
    for _c, b in sorted(zip(ctx.chosen, ctx.backends), key=lambda cb: cb[0].apart):
        try:
            if b is not None:
                b.load_data(data)
                b.init_model(seed)
                return b.export_state()
        except (Exception, SystemExit):  # noqa: BLE001 - that backend's run records the failure
            continue
    return None


def _outputs(ctx: runner.Context, rec: Recorder, control: list[dict], data) -> runner.Result:
    from bench import plots  # matplotlib: not for --list-backends or a refused command

    config = ctx.config
    tables = rec.tables(epoch_flop(data.n_features, config.hidden_dims, data.n_classes, config.batch_size,
                                   len(data.y_train)))
    epochs, runs, summary = tables["epochs.csv"], tables["runs.csv"], tables["summary.csv"]
    if runs.empty:
        return runner.Result(tables={"epochs.csv": epochs, "runs.csv": runs},
                             problems=["no run finished ok (see status and error in runs.csv)"])
    tables["pairs.csv"] = pairs = compare_pairs(runs, epochs, summary)
    options = {c.name: options_of(b) for c, b in zip(ctx.chosen, ctx.backends) if b is not None}
    result = runner.Result(tables=tables, env={"backend_options": options})
    if not epochs.empty:
        result.figures = {"train_loss.png": ("Training loss per epoch", lambda: plots.train_loss(epochs)),
                          "val_acc.png": ("Validation accuracy per epoch", lambda: plots.val_acc(epochs)),
                          "epoch_time.png": ("Epoch time vs GEMM-only time",
                                             lambda: plots.epoch_time(summary))}
    lock = None
    if config.lockstep:
        tables["steps.csv"] = steps = frame([s for r in rec.records for s in r.steps] + control,
                                            ["backend", "seed", "step", "loss"])
        if not steps.empty:
            lock = result.env["lockstep"] = lockstep.divergence(steps, steps["backend"].iloc[0])
            result.figures["lockstep.png"] = ("Lock-step losses", lambda: plots.lockstep(steps))
    verdicts = pair_sentences(pairs, flagged_backends(summary), gemm_libraries(options))
    nxt, said = next_steps(config.to_dict(), summary, pairs), lockstep.sentences(lock) if lock else []
    started = set(runs["backend"])
    result.setup, result.sections = compare_sections(
        config.to_dict(), options, summary, verdicts, nxt, runs,
        [c.name for c in ctx.chosen if c.name not in started], ctx.skipped, said if lock else None)
    result.printed = [md_table(summary_view(summary)), *[f"timing flagged: {s}" for s in timing_sentences(summary)],
                      *[f"lock-step: {s}" for s in said], *[f"verdict: {s}" for s in verdicts],
                      *[f"next: {s}" for s in nxt]]
    if not runs["status"].eq("ok").any():
        result.problems.append("no run finished ok (see status and error in runs.csv)")
    return result


def _label(ctx: runner.Context) -> str:
    """results/<timestamp>_<backends>[_lockstep][_<n>seeds]."""
    label = "_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in c.name) for c in ctx.chosen)
    n = len(ctx.config.seeds)
    return label + ("_lockstep" if ctx.config.lockstep else "") + (f"_{n}seeds" if n > 1 else "")


COMMAND = runner.Command(
    "compare", "NumPy vs PyTorch MLP: comparison report", measure, label=_label,
    about="Train the NumPy and PyTorch MLPs side by side and write CSV tables, plots and a report. "
          "Defaults are the reference setup. A backend course:PATH trains your own course-style "
          "implementation: its code is imported and run.",
    actions={"list_backends": ("list every backend (built-in and plugins) and whether it can run here",
                               lambda: print(md_table(pd.DataFrame(listing()))))})
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
