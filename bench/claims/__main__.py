"""Test the course write-up's claims (docs/reference.md), each measured and given a verdict.

Run it as::

    python -m bench.claims --data-dir DIR             # all nine claims
    python -m bench.claims --data-dir DIR --quick     # less data, smaller nets: provisional
    python -m bench.claims --data-dir DIR --only 1,4,8
    python -m bench.claims --quick --dataset synthetic   # a smoke test: claims 1-5, 7 inconclusive

Claims 1-5 share one set of runs (``--seeds``, ten by default, of
``numpy:cpu`` and ``torch:cpu`` at the reference setup, each through the one
run layer) and claim 4 adds lock-step reruns of the first epoch; claims 6-8
use the measurements of ``bench.theory`` (gradient flow, Hessian) on the
first ``--theory-seeds`` seeds; claim 9 is finite differences on one residual
block. Its settings are ``bench.config.ClaimsSettings``; ``--quick`` starts
from ``PRESETS["claims_quick"]`` instead (flags and TOML still override it).
Every verdict is ``supported``, ``not supported`` or ``inconclusive``, with
its reason; a rule never decides on fewer runs than its test needs.

Outputs in ``--out`` (default ``results/<timestamp>_claims/``): ``claims.csv``
(id, measured, n, statistic, ci_or_p, verdict, reason), ``claims.md`` (a
paragraph and a figure per claim), ``claim<N>.png``, ``env.json``, and what
was measured: ``runs.csv``, ``epochs.csv``, ``lockstep.csv``, ``per_run.csv``,
``claim6_ratios.csv``, ``claim7_hessian.csv``, ``claim8_tiny.csv``,
``claim9_gradients.csv``. The measurements are written as they are made, so
Ctrl-C or SIGTERM keeps them and the claims judged so far (exit 130 or 143).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace

import pandas as pd

from bench import runner
from bench.claims import gradient_flow, landscape, minimum, residual_block, training
from bench.claims.context import Context
from bench.claims.verdict import COLUMNS, DATA_CLAIMS, on_synthetic, provisional
from bench.config import CIFAR10_N_FEATURES, PRESETS, split
from bench.errors import UserError
from bench.memory import bytes_needed, check_memory
from bench.plots import plt
from bench.report import md_table

GROUPS = (training, gradient_flow, landscape, minimum, residual_block)


def _quick(ctx: runner.Context) -> None:
    """--quick: the quick preset under whatever a flag or the TOML file set."""
    if ctx.settings.quick:
        for target, values in zip((ctx.config, ctx.settings), split(PRESETS["claims_quick"], "claims")):
            for name, value in values.items():
                if name not in ctx.given:
                    setattr(target, name, value)
        ctx.settings.validate()


def _check(ctx: runner.Context) -> None:
    """What the field checks cannot see, before any work: one UserError line."""
    config, opts = ctx.config, ctx.settings
    if opts.theory_seeds > len(config.seeds):
        raise UserError(f"invalid theory_seeds: {opts.theory_seeds} (allowed: at most the "
                        f"{len(config.seeds)} seeds given)")
    for name in ("batch_examples", "check_examples"):
        if getattr(opts, name) > config.n_train:
            raise UserError(f"invalid {name}: {getattr(opts, name)} (allowed: at most the "
                            f"{config.n_train} training rows)")
    if opts.check_examples < config.batch_size:
        raise UserError(f"invalid check_examples: {opts.check_examples} (allowed: at least the batch "
                        f"size {config.batch_size}: the tiny model trains on them)")
    if opts.check_features > CIFAR10_N_FEATURES:
        raise UserError(f"invalid check_features: {opts.check_features} (allowed: at most the "
                        f"{CIFAR10_N_FEATURES} input features)")
    # before any work: NumPy's and PyTorch's nets at the config (claims 1-5, 8), or the largest theory
    # net (claims 6, 7: initialised in float64), and the data
    theory = [[opts.width] * max(opts.depths)] * (6 in opts.only) + [opts.landscape_dims] * (7 in opts.only)
    need = max([bytes_needed(replace(config, hidden_dims=list(d), batch_size=opts.batch_examples,
                                     dtype="float64", lockstep=False)) for d in theory]
               + [bytes_needed(config) * bool(set(opts.only) & {1, 2, 3, 4, 5, 8})])
    check_memory(config, 0, extra=2 * need, flags="--width, --depths, --landscape-dims, --hidden-dims, "
                                                  "--batch-examples or --train-subset")


def measure(ctx: runner.Context) -> runner.Result:
    """Every group of the claims asked for, in order; a signal keeps the claims judged before it."""
    only, quick = ctx.settings.only, ctx.settings.quick
    claims = Context(ctx, (lambda m: None) if ctx.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    outcomes, seconds = [], {}
    with ctx.measuring():
        for group in (g for g in GROUPS if set(g.CLAIMS) & set(only)):
            wall, cpu = time.perf_counter(), time.process_time()
            for o in group.judge(group.measure(claims), claims):
                if o.number not in only:
                    if o.figure is not None:
                        plt.close(o.figure)
                    continue
                if ctx.config.dataset == "synthetic" and o.number in DATA_CLAIMS:
                    o.verdicts = [on_synthetic(v) for v in o.verdicts]
                o.verdicts = [provisional(v) for v in o.verdicts] if quick else o.verdicts
                for name, table in o.tables.items():
                    ctx.folder.write_csv(name, table)
                name = f"claim{o.number}.png"
                o.figure = name if o.figure is not None and ctx.folder.save_figure(name, o.figure) else None
                outcomes.append(o)
                for v in o.verdicts:
                    claims.log(f"claim {v.id}: {v.verdict}. {v.reason}")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            seconds[",".join(map(str, group.CLAIMS))] = {"wall": wall, "cpu": cpu}
            claims.log(f"claims {', '.join(map(str, group.CLAIMS))}: {wall:.0f} s wall, {cpu:.0f} s CPU")
            ctx.folder.write_csv("claims.csv", _table(outcomes))  # the verdicts so far, kept as they come
            if claims.interrupted:
                raise KeyboardInterrupt
    table, config = _table(outcomes), ctx.config
    done = {o.number for o in outcomes}
    pending = [i for i in sorted(only) if i not in done]
    intro = [*(["**A --quick run: less data, shorter training, smaller nets. Every verdict is provisional.**",
                ""] if quick else []),
             *([f"**Synthetic data, a smoke test: claims {DATA_CLAIMS} are about training on CIFAR-10, "
                "so their verdicts are inconclusive.**", ""] if config.dataset == "synthetic" else []),
             *([f"Not measured: claims {', '.join(map(str, pending))}.", ""] if pending else []),
             "A verdict is `supported`, `not supported` or `inconclusive`; it never rests on fewer runs than "
             "its test needs, and no verdict uses a timing."]
    sections = [(None, intro), ("Verdicts", [md_table(table.drop(columns=["reason"]))])]
    for o in outcomes:
        sections.append((f"Claim {o.number}: {o.statement}", [
            o.text, "", *[f"- **{v.id}: {v.verdict}.** {v.reason}." for v in o.verdicts],
            *(["", f"![claim {o.number}]({o.figure})"] if o.figure else [])]))
    return runner.Result(
        tables={"claims.csv": table}, sections=sections, env={"quick": quick, "seconds": seconds},
        setup=[f"- Seeds: {config.seeds}; claims 6-8 use the first {ctx.settings.theory_seeds}; training: "
               f"hidden {config.hidden_dims}, {config.activation}, SGD lr {config.lr}, batch "
               f"{config.batch_size}, {config.epochs} epochs, {config.dtype}"],
        printed=[md_table(table[["id", "verdict", "statistic", "ci_or_p", "n"]])])


def _table(outcomes: list) -> pd.DataFrame:
    return pd.DataFrame([asdict(v) for o in outcomes for v in o.verdicts], columns=list(COLUMNS))


COMMAND = runner.Command(
    "claims", "The course write-up's claims, tested (docs/reference.md)", measure, configure=_quick,
    check=_check, report="claims.md",
    about="Test the claims of the course write-up this suite reproduces (docs/reference.md): one verdict per "
          "claim, each with its measurement.")
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
