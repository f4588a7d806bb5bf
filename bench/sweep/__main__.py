"""Sweep a grid of settings and map where NumPy or PyTorch trains the MLP faster.

Run it as::

    # the crossover map on this machine (sequential, the default executor)
    python -m bench.sweep --grid batch_size=32,128,512,2048 hidden_dims=64,256,1024,4096 \\
        --backends numpy:cpu,torch:cpu --epochs 3 --train-subset 10000 --data-dir DIR

    # the same on a Dask cluster (pip install '.[dask]'): workers started with --resources point=1
    python -m bench.sweep --grid ... --scheduler tcp://host:8786
    python -m bench.sweep --grid ... --local-cluster 2   # a LocalCluster on 127.0.0.1, to try it

    # resume a killed sweep: the same command with the same --out runs only what is missing
    python -m bench.sweep --grid ... --out results/sweep_20250101-120000

``--grid FIELD=V1,V2,...`` takes any field of ``bench.config.Config`` (the
flag names with underscores), its values parsed with the field's type. A list
field takes one list per value, its items joined by ``x``:
``hidden_dims=64,512x256`` sweeps ``[64]`` and ``[512, 256]`` (``"hidden_dims=512
256,64"`` in quotes is the same). Booleans are true/false; an optional field
takes ``none``. Every point is crossed with ``--backends`` and ``--seeds``;
every other flag of ``bench.compare`` sets the base value of its field for
all points.

Each task (point × backend × seed) runs the harness of ``bench.compare``; its
row is appended to ``sweep.csv`` atomically as soon as it finishes, so a
killed sweep loses only the tasks in flight, and re-running the same command
with the same ``--out`` skips every task already finished (``ok`` or
``diverged``) and retries failed ones. A failing task (diverged, out of
memory, an exception, a lost worker) is recorded with its status and message
and the sweep goes on. ``--no-reference-timing`` skips the GEMM-only brackets
and the fixed-cost floor of every task (an epoch's worth of matrix products
per epoch), roughly halving a sweep, and with them the quality flags that a
crossover needs. Outputs in ``--out`` (default
``results/sweep_<timestamp>/``): ``sweep.csv``, ``epochs.csv``, ``sweep.json``,
``env_<host>.json``, ``ratio_<device>.png`` (the NumPy/PyTorch epoch-time
ratio over the first two grid fields with the ratio-1 contour),
``accuracy.png`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.backends import parse_name, resolve
from bench.config import COMMAND_FIELDS, FIELDS, Config, add_config_arguments, config_from_args
from bench.errors import EXIT_FAILED, ConfigError, OneLineArgumentParser, UserError, run_cli
from bench.memory import check_memory
from bench.sweep.grid import (Grid, canonical, check_no_overlap, check_size, describe_point, first_values,
                              parse_grid, point_configs)

# NOTE: the modules that pull in pandas, matplotlib, scipy and the harness are imported in main()
# after the arguments are checked, so a mistake on the command line is reported at once

PROG = "python -m bench.sweep"
SETTINGS = tuple(f for f in COMMAND_FIELDS["sweep"] if f not in ("backends", "seeds"))  # sweep.json's


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG, description="Run a grid of settings × backends × seeds with the harness of "
        "bench.compare and map the NumPy/PyTorch epoch-time ratio. Every other flag sets the base "
        "value of its Config field for all points.")
    parser.add_argument("--grid", nargs="+", action="extend", required=True, metavar="FIELD=V1,V2",
                        help="swept fields, e.g. batch_size=32,128 hidden_dims=64,512x256 (a list "
                             "field takes one list per value, items joined by 'x')")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on this Dask scheduler, e.g. tcp://host:8786 (the 'dask' extra; "
                            "workers need --resources point=1 or --nthreads 1)")
    where.add_argument("--local-cluster", type=int, metavar="N",
                       help="run on a Dask LocalCluster of N one-thread workers on 127.0.0.1 "
                            "(the 'dask' extra; workers share this machine's cores)")
    parser.add_argument("--out", metavar="DIR", help="sweep folder; an existing one is resumed "
                        "(same grid and settings) (default: results/sweep_<timestamp>/)")
    parser.add_argument("--quiet", action="store_true", help="no line per finished task")
    add_config_arguments(parser, "sweep")
    return parser


def base_config(args: argparse.Namespace, grid: Grid) -> Config:
    """The settings every point starts from (defaults < --config < flags), validated.

    The grid's first values stand in for the swept fields while the base is
    validated, so a base value the grid replaces (say the default batch size
    on a tiny train subset) is never checked on its own.
    """
    ns = vars(args).copy()
    for name, value in first_values(grid).items():
        ns[name] = [str(v) for v in value] if isinstance(value, list) else value
    try:
        return config_from_args(argparse.Namespace(**ns), "sweep")
    except ConfigError as exc:
        if exc.field in grid.fields:
            raise UserError(f"grid point {exc.field}={canonical(exc.value)}: {exc}") from None
        raise


def make_tasks(points: list[tuple[dict[str, Any], Config]], backends: list[str],
               seeds: list[int], grid: Grid) -> list:
    """Seed by seed, point by point, backend by backend (backends of one point run back to back)."""
    from bench.sweep.point import Task

    tasks = []
    for seed in seeds:
        for point, cfg in points:
            key = {f: canonical(point[f]) for f in grid.fields}
            for b in backends:
                tasks.append(Task(key, b, seed, dataclasses.replace(cfg, seeds=[seed], backends=[b])))
    return tasks


def choose_backends(base: Config, distributed: bool) -> list[str]:
    """Backend names: checked here for the local executor; for a cluster, the workers decide availability."""
    if base.backends is not None and distributed:
        names = [":".join(parse_name(n)) for n in base.backends]
        if len(set(names)) != len(names):
            raise UserError(f"a backend is listed twice in {','.join(base.backends)}")
        return names
    chosen, skipped = resolve(base.backends)
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return [c.name for c in chosen]


def default_out() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = Path("results") / f"sweep_{stamp}", 1
    while path.exists():
        k += 1
        path = Path("results") / f"sweep_{stamp}_{k}"
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    grid = parse_grid(args.grid)
    check_no_overlap(grid, [k for k in vars(args) if k in FIELDS])
    base = base_config(args, grid)
    if base.lockstep:
        raise UserError("--lockstep is not supported by sweeps (each task runs one backend); "
                        "use python -m bench.compare --lockstep")
    distributed = args.scheduler is not None or args.local_cluster is not None
    if distributed:
        from bench.sweep.executors import _import_distributed

        _import_distributed()  # a missing extra is one line, before anything is created
    backends = choose_backends(base, distributed)
    check_size(grid, len(backends) * len(base.seeds))
    points = point_configs(base, grid)  # every point validated before any work
    for point, cfg in points:  # data that cannot fit on this machine: refused, not a row per task
        try:
            check_memory(cfg, 0)
        except UserError as exc:
            raise UserError(f"grid point {describe_point(point)}: {exc}") from None
    tasks = make_tasks(points, backends, base.seeds, grid)
    from bench.sweep.executors import DaskExecutor, LocalExecutor
    from bench.sweep.point import dataset_for
    from bench.sweep.store import SweepStore

    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    config_dict = {k: v for k, v in base.to_dict().items() if k in SETTINGS}
    spec = {"grid": grid.canonical(), "config": config_dict, "backends": backends,
            "seeds": list(base.seeds)}
    out = Path(args.out) if args.out else default_out()
    executor = DaskExecutor(args.scheduler, args.local_cluster) if distributed else LocalExecutor()
    try:
        # every setting is checked before the folder is claimed: the scheduler reached, and (here)
        # the first point's data loaded; a refused sweep leaves nothing behind
        executor.start()
        if not distributed:
            dataset_for(tasks[0].config, tasks[0].seed, progress=not args.quiet, quiet=False)
        store = SweepStore.open(out, spec)
        try:
            return _run(args, store, tasks, executor, run_id,
                        list(sys.argv[1:] if argv is None else argv))
        finally:
            store.close()
    finally:
        executor.close()


def _run(args: argparse.Namespace, store, tasks: list, executor, run_id: str, argv: list[str]) -> int:
    from bench.io import write_json
    from bench.report import md_table
    from bench.sweep.point import TaskResult
    from bench.sweep.report import ratio_tables, write_outputs
    from bench.sweep.store import SPEC_FILE

    done = store.done()
    todo = [t for t in tasks if t.key not in done]
    if todo:
        store.spec.setdefault("runs", []).append({
            "run_id": run_id, "executor": executor.name, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": f"{PROG} {shlex.join(argv)}", "tasks": len(todo)})
        write_json(store.spec, store.out / SPEC_FILE)
    say = (lambda *_: None) if args.quiet else (lambda text: print(text, flush=True))
    say(f"sweep {store.out}: {len(tasks)} tasks, {len(tasks) - len(todo)} already done, "
        f"{len(todo)} to run ({executor.name})")

    finished = {"n": 0, "failed": 0}

    def on_result(result: TaskResult) -> None:
        result.row["run_id"] = run_id
        store.add(result)
        finished["n"] += 1
        r = result.row
        if r["status"] != "ok":
            finished["failed"] += 1
        point = " ".join(f"{k}={v}" for k, v in zip(store.fields, (r[f] for f in store.fields)))
        what = r.get("error", "")
        if r["status"] == "ok":
            what = f"test_acc {r['test_acc']:.4f}, " + (
                f"{r['median_epoch_seconds_trusted']:.3f} s/epoch over {r['n_epochs_trusted']} trusted "
                "epochs" if r["n_epochs_trusted"] else
                f"no trusted epoch ({r['median_epoch_seconds_all']:.3f} s/epoch over all, not a finding)")
        say(f"[{finished['n']}/{len(todo)}] {point} {r['backend']} seed {r['seed']}: {r['status']}, "
            f"{what} (host {r.get('hostname') or r.get('worker') or 'unknown'})")

    with store.folder.measuring():
        if todo:
            executor.run(todo, on_result)
    interrupted = store.folder.interrupted
    if len(store.frame()):
        outputs = write_outputs(store.out)
        if not args.quiet:
            for label, table in ratio_tables(outputs["ratios"], store.spec["grid"]).items():
                print(f"\nNumPy / PyTorch median epoch time, {label}:")
                print(md_table(table, floatfmt=".2f"))
                for sentence in outputs["crossings"].get(label, []):
                    print(f"- {sentence}")
    if finished["failed"]:
        print(f"{finished['failed']} task(s) did not finish ok (see status and error in "
              f"{store.out / 'sweep.csv'})", file=sys.stderr)
    if interrupted:
        print(f"interrupted: finished tasks are in {store.out}; run the same command to resume",
              file=sys.stderr)
    print(f"results: {store.out}")
    if interrupted:
        return store.folder.exit_code()
    rows = store.frame()
    if len(rows) and not rows["status"].eq("ok").any():
        print("no task finished ok", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cli() -> None:
    run_cli(main, prog=PROG)


if __name__ == "__main__":
    cli()
