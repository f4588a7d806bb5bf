"""Test the course write-up's claims (docs/reference.md), each measured and given a verdict.

Run it as::

    python -m bench.claims --data-dir DIR             # all nine claims
    python -m bench.claims --data-dir DIR --quick     # less data, smaller nets: provisional
    python -m bench.claims --data-dir DIR --only 1,4,8
    python -m bench.claims --quick --dataset synthetic   # no data needed: a smoke test

Claims 1-5 share one set of runs (``--seeds``, ten by default, of
``numpy:cpu`` and ``torch:cpu`` at the reference setup, each through the one
run path) and claim 4 adds lock-step reruns of the first epoch; claims 6-8
use ``bench.gradflow``'s and ``bench.hessian``'s measurements on the first
``--theory-seeds`` seeds; claim 9 is finite differences on one residual block.
Every verdict is ``supported``, ``not supported`` or ``inconclusive``, with
its reason; a rule never decides on fewer runs than its test needs.

Outputs in ``--out`` (default ``results/<timestamp>_claims/``): ``claims.csv``
(id, measured, n, statistic, ci_or_p, verdict, reason), ``claims.md`` (a
paragraph and a figure per claim), ``claim<N>.png``, ``env.json``, and what
was measured: ``runs.csv``, ``epochs.csv``, ``lockstep.csv``, ``per_run.csv``,
``claim6_ratios.csv``, ``claim7_hessian.csv``, ``claim8_tiny.csv``,
``claim9_gradients.csv``. They are rewritten after every claim (and the runs
after every run), so Ctrl-C or SIGTERM keeps what was measured (exit 130 or
143).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from bench.claims import gradient_flow, landscape, minimum, residual_block, training
from bench.claims.context import Context
from bench.claims.report import write
from bench.claims.verdict import provisional
from bench.cli import command_parser
from bench.config import CIFAR10_N_FEATURES, PRESETS, Config, config_from_args
from bench.errors import UserError, interrupted_code, run_cli
from bench.plots import plt
from bench.report import md_table
from bench.results import ResultsFolder
from bench.threads import limit_threads, resolve_threads

COMMAND = "claims"
PROG = "python -m bench.claims"
GROUPS = (training, gradient_flow, landscape, minimum, residual_block)


def check(config: Config) -> None:
    """What the field checks cannot see, before any work: one UserError line."""
    if config.theory_seeds > len(config.seeds):
        raise UserError(f"invalid theory_seeds: {config.theory_seeds} (allowed: at most the "
                        f"{len(config.seeds)} seeds given)")
    for name in ("batch_examples", "check_examples"):
        if getattr(config, name) > config.n_train:
            raise UserError(f"invalid {name}: {getattr(config, name)} (allowed: at most the "
                            f"{config.n_train} training rows)")
    if config.check_examples < config.batch_size:
        raise UserError(f"invalid check_examples: {config.check_examples} (allowed: at least the batch "
                        f"size {config.batch_size}: the tiny model trains on them)")
    if config.check_features > CIFAR10_N_FEATURES:
        raise UserError(f"invalid check_features: {config.check_features} (allowed: at most the "
                        f"{CIFAR10_N_FEATURES} input features)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser(COMMAND, "Test the claims of the course write-up this suite reproduces "
                            "(docs/reference.md): one verdict per claim, each with its measurement.")
    quick = ", ".join(f"{k} {v}" for k, v in PRESETS["claims_quick"].items()
                      if PRESETS[COMMAND].get(k) != v)
    parser.add_argument("--quick", action="store_true", help=f"start from the quick preset ({quick}): "
                        "less data, shorter training, smaller nets; every verdict is provisional")
    args = parser.parse_args(argv)
    config = config_from_args(args, COMMAND, "claims_quick" if args.quick else None)
    check(config)
    threads = resolve_threads(config.threads)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    outcomes = []
    with ResultsFolder.create(args.out, COMMAND) as folder, limit_threads(threads):
        ctx = Context(config, folder, log)
        env = folder.write_env(threads, {"config": config.to_dict(), "quick": args.quick,
                                         "data": ctx.data(config.seeds[0]).info()})

        def save():
            done = {o.number for o in outcomes}
            return write(folder, outcomes, env, quick=args.quick, interrupted=ctx.interrupted,
                         pending=[i for i in sorted(config.only) if i not in done])
        try:
            for group in (g for g in GROUPS if set(g.CLAIMS) & set(config.only)):
                wall, cpu = time.perf_counter(), time.process_time()
                for o in group.judge(group.measure(ctx), ctx):
                    if o.number not in config.only:
                        if o.figure is not None:
                            plt.close(o.figure)
                        continue
                    o.verdicts = [provisional(v) for v in o.verdicts] if args.quick else o.verdicts
                    for name, table in o.tables.items():
                        folder.write_csv(name, table)
                    name = f"claim{o.number}.png"
                    o.figure = name if o.figure is not None and folder.save_figure(name, o.figure) else None
                    outcomes.append(o)
                    for v in o.verdicts:
                        log(f"claim {v.id}: {v.verdict}. {v.reason}")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                env.setdefault("seconds", {})[",".join(map(str, group.CLAIMS))] = {"wall": wall, "cpu": cpu}
                log(f"claims {', '.join(map(str, group.CLAIMS))}: {wall:.0f} s wall, {cpu:.0f} s CPU")
                folder.write_json("env.json", env)
                save()
                if ctx.interrupted:
                    break
        except KeyboardInterrupt:
            ctx.interrupted = True
        table = save()
    print(md_table(table[["id", "verdict", "statistic", "ci_or_p", "n"]]))
    print(f"results: {folder.path}")
    if ctx.interrupted:
        print(f"interrupted: what was measured is in {folder.path}", file=sys.stderr)
        return interrupted_code()
    return 0


def cli() -> None:
    run_cli(main, prog=PROG)


if __name__ == "__main__":
    cli()
