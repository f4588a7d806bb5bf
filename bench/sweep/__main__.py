"""Sweep a grid of settings and map where NumPy or PyTorch trains the MLP faster.

Run it as::

    # the crossover map on this machine (sequential, the default executor)
    python -m bench.sweep --grid batch_size=32,128,512,2048 hidden_dims=64,256,1024,4096 \\
        --backends numpy:cpu,torch:cpu --epochs 3 --train-subset 10000 --data-dir DIR

    # the same on a Dask cluster (pip install '.[dask]'): workers started with --resources point=1
    python -m bench.sweep --grid ... --scheduler tcp://host:8786
    python -m bench.sweep --grid ... --local-cluster 2   # a LocalCluster on 127.0.0.1, to try it

    # resume a killed sweep: the same command with the same --out runs only what is missing
    python -m bench.sweep --grid ... --out results/20250101-120000_sweep

``--grid FIELD=V1,V2,...`` takes any Config field the sweep reads, its values
parsed with the field's type (``bench.sweep.grid``: ``hidden_dims=64,512x256``
sweeps ``[64]`` and ``[512, 256]``). Every point is crossed with
``--backends`` and ``--seeds``; every other flag sets the base value of its
field for all points.

Each task (point × backend × seed) runs the harness of ``bench.compare``
(``bench.sweep.point``); its row is written to ``sweep.csv`` atomically as soon
as it finishes, so a killed sweep loses only the tasks in flight, and the same
command with the same ``--out`` skips every task already finished (``ok`` or
``diverged``) and retries the failed ones. A failing task (diverged, out of
memory, an exception, a lost worker) is a row with its status and message, and
the sweep goes on. ``--no-reference-timing`` skips the GEMM-only brackets and
the fixed-cost floor, roughly halving a sweep, and with them the quality flags
that a crossover needs. Outputs in ``--out`` (default
``results/<timestamp>_sweep/``): ``sweep.csv``, ``epochs.csv``, ``sweep.json``,
``env_<host>.json``, ``env.json``, ``ratio_<device>.png`` (the NumPy/PyTorch
epoch-time ratio over the first two grid fields, with its ratio-1 contour),
``accuracy.png`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid

from bench import runner
from bench.backends import parse_name, resolve
from bench.config import COMMAND_FIELDS
from bench.errors import UserError
from bench.sweep.grid import canonical, check_no_overlap, check_size, parse_grid, pin_first, point_configs

# NOTE: the modules that pull in the harness, Dask and the plots are imported where they are needed,
# after the arguments are checked, so a mistake on the command line is reported at once
SPEC_SETTINGS = tuple(f for f in COMMAND_FIELDS["sweep"] if f not in ("backends", "seeds"))  # sweep.json's


def _configure(ctx: runner.Context) -> None:
    """The grid parsed; the base validated with each swept field at its first value."""
    grid = parse_grid(ctx.settings.grid)
    check_no_overlap(grid, ctx.given)
    ctx.config, ctx.work = pin_first(ctx.config, grid), {"grid": grid}


def _check(ctx: runner.Context) -> None:
    """Every point validated and fitting, the executor reached and (here) the first point's data loaded,
    all before the folder is claimed: a refused sweep leaves nothing behind."""
    from bench.sweep.executors import DaskExecutor, LocalExecutor, _import_distributed
    from bench.sweep.point import Task, dataset_for

    s, base, grid = ctx.settings, ctx.config, ctx.work["grid"]
    distributed = s.scheduler is not None or s.local_cluster is not None
    if distributed:
        _import_distributed()  # a missing extra is one line
    if base.backends is not None and distributed:  # the workers decide what is available
        backends = [":".join(parse_name(n)) for n in base.backends]
        if len(set(backends)) != len(backends):
            raise UserError(f"a backend is listed twice in {','.join(base.backends)}")
    else:
        chosen, skipped = resolve(base.backends)
        backends = [c.name for c in chosen]
        for name, reason in skipped:
            print(f"skipped {name}: {reason}", file=sys.stderr)
    check_size(grid, len(backends) * len(base.seeds))
    points = point_configs(base, grid)  # every point validated, and its data fitting, before any work
    tasks = [Task({f: canonical(point[f]) for f in grid.fields}, b, seed,
                  dataclasses.replace(cfg, seeds=[seed], backends=[b]))
             for seed in base.seeds for point, cfg in points for b in backends]  # a point's backends together
    executor = DaskExecutor(s.scheduler, s.local_cluster) if distributed else LocalExecutor()
    ctx.stack.callback(executor.close)
    executor.start()
    if not distributed:
        dataset_for(tasks[0].config, tasks[0].seed, progress=not ctx.quiet, quiet=False)
    ctx.work.update(backends=backends, tasks=tasks, executor=executor)


def measure(ctx: runner.Context) -> runner.Result:
    from bench.sweep.report import outputs
    from bench.sweep.store import SPEC_FILE, SweepStore

    w, base = ctx.work, ctx.config
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    store = SweepStore.open(ctx.folder, {
        "grid": w["grid"].canonical(), "config": {k: v for k, v in base.to_dict().items() if k in SPEC_SETTINGS},
        "backends": w["backends"], "seeds": list(base.seeds)})
    done = store.done()
    todo = [t for t in w["tasks"] if t.key not in done]
    if todo:
        store.spec.setdefault("runs", []).append({
            "run_id": run_id, "executor": w["executor"].name, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(ctx.env.get("command", [])), "tasks": len(todo)})
        ctx.folder.write_json(SPEC_FILE, store.spec)
    ctx.say(f"sweep {store.out}: {len(w['tasks'])} tasks, {len(w['tasks']) - len(todo)} already done, "
            f"{len(todo)} to run ({w['executor'].name})")
    finished = []

    def on_result(result) -> None:
        result.row["run_id"] = run_id
        store.add(result)
        finished.append(r := result.row)
        what = r.get("error", "")
        if r["status"] == "ok":
            what = f"test_acc {r['test_acc']:.4f}, " + (
                f"{r['median_epoch_seconds_trusted']:.3f} s/epoch over {r['n_epochs_trusted']} trusted epochs"
                if r["n_epochs_trusted"] else
                f"no trusted epoch ({r['median_epoch_seconds_all']:.3f} s/epoch over all, not a finding)")
        ctx.say(f"[{len(finished)}/{len(todo)}] {' '.join(f'{k}={r[k]}' for k in store.fields)} {r['backend']} "
                f"seed {r['seed']}: {r['status']}, {what} (host {r.get('hostname') or r.get('worker') or 'unknown'})")

    with ctx.measuring():
        if todo:
            w["executor"].run(todo, on_result)
    result = outputs(store.out, ctx.quiet) if len(store.frame()) else runner.Result()
    if ctx.interrupted:
        result.notes.append("interrupted: finished tasks are kept; run the same command to resume")
    return result


COMMAND = runner.Command(
    "sweep", "NumPy vs PyTorch sweep", measure, configure=_configure, check=_check, backends="none",
    loads_data=False, resume="sweep.json",
    about="Run a grid of settings × backends × seeds with the harness of bench.compare and map the "
          "NumPy/PyTorch epoch-time ratio. Every other flag sets the base value of its Config field for all "
          "points.")
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
