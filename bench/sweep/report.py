"""The sweep's outputs from its folder: the figures, the report's sections (machines, maps, failures)
and the terminal's ratio tables, as a ``bench.runner.Result``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.io import JSON_BYTES, read_json
from bench.report import md_table
from bench.run import WARMUP_STEPS
from bench.runner import Result
from bench.sweep import plots
from bench.sweep.analysis import flag_matrix, accuracy_frame, crossover_sentences, matrix, \
    paired_devices, ratio_frame, slices
from bench.sweep.store import SPEC_FILE, TABLE_BYTES, read_rows


def outputs(out: Path, quiet: bool) -> Result:
    """Every figure, the report's sections and the terminal's ratio tables, from sweep.csv."""
    spec = read_json(out / SPEC_FILE, TABLE_BYTES, "a sweep's spec")
    grid = spec["grid"]
    rows = read_rows(out)
    ratios, acc = ratio_frame(rows, grid), accuracy_frame(rows, grid)
    subtitle = _subtitle(rows, spec)
    figures: dict[str, tuple] = {}
    crossings: dict[str, list[str]] = {}
    for device in paired_devices(rows):
        for fixed, suffix in slices(grid):
            label = f"{device}{_fixed_text(fixed)}"
            crossings[label] = crossover_sentences(ratios, grid, device, fixed)
            figures[f"ratio_{_safe(device)}{suffix}.png"] = (
                f"NumPy / PyTorch epoch-time ratio, {label}",
                lambda d=device, f=fixed: plots.plot_ratio(ratios, grid, d, f, subtitle=subtitle))
    for fixed, suffix in slices(grid) if len(acc) else ():
        figures[f"accuracy{suffix}.png"] = (f"Test accuracy{_fixed_text(fixed)}",
                                            lambda f=fixed: plots.plot_accuracy(acc, grid, f))
    printed = []
    for label, table in ([] if quiet else ratio_tables(ratios, grid).items()):
        printed += [f"\nNumPy / PyTorch median epoch time, {label}:", md_table(table, floatfmt=".2f"),
                    *[f"- {sentence}" for sentence in crossings.get(label, [])]]
    failed = int((rows["status"] != "ok").sum())
    return Result(figures=figures, printed=printed, rows=rows,
                  sections=sections(spec, rows, _host_envs(out), ratios, acc, crossings),
                  notes=[f"{failed} task(s) did not finish ok (see status and error in {out / 'sweep.csv'})"]
                  if failed else [],
                  problems=["no task finished ok"] if len(rows) and not rows["status"].eq("ok").any() else [])


def ratio_tables(ratios: pd.DataFrame, grid: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """Per device (and slice): the ratio as a table, rows = second grid field, columns = first;
    a flagged cell reads ``1.23?`` (its timing is not a finding)."""
    fields = list(grid)
    out = {}
    for device in dict.fromkeys(ratios["device"]):
        sel = ratios[ratios["device"] == device]
        for fixed, _ in slices(grid):
            z = matrix(sel, grid, "ratio", fixed)
            flags = flag_matrix(sel, grid, fixed)
            ys = grid[fields[1]] if len(fields) > 1 else ["NumPy / PyTorch"]
            head = f"{fields[1]} \\ {fields[0]}" if len(fields) > 1 else fields[0]
            cells = [[(f"{v:.2f}" if np.isfinite(v) else "") + ("?" if flags[i][j] else "")
                      for j, v in enumerate(row)] for i, row in enumerate(z)]
            table = pd.DataFrame(cells, columns=grid[fields[0]])
            table.insert(0, head, ys)
            out[f"{device}{_fixed_text(fixed)}"] = table
    return out


def sections(spec: dict[str, Any], rows: pd.DataFrame, envs: dict[str, dict[str, Any]],
             ratios: pd.DataFrame, acc: pd.DataFrame, crossings: dict[str, list[str]]
             ) -> list[tuple[str | None, list[str]]]:
    """The sweep report's sections: what ran where, the crossover, the accuracy, the failures."""
    grid = spec["grid"]
    counts = rows["status"].value_counts()
    total = len(spec["backends"]) * len(spec["seeds"]) * math.prod(len(v) for v in grid.values())
    lines = ["- Grid: " + "; ".join(f"`{f}` = {', '.join(v)}" for f, v in grid.items()),
             f"- Backends: {', '.join(spec['backends'])}; seeds: {spec['seeds']}",
             f"- Tasks: {len(rows)} of {total} recorded — " + ", ".join(f"{s} {n}" for s, n in counts.items()),
             "- Base settings (every point; the grid overrides its own fields): "
             + ", ".join(f"{k}={v}" for k, v in spec["config"].items() if k not in grid),
             *[f"- Run {i} (`{run['run_id']}`, {run['executor']}, {run['started']}): `{run['command']}`"
               for i, run in enumerate(spec.get("runs", []), 1)],
             "", "Where the tasks ran:", "", *["- " + _machine_line(host, env) for host, env in envs.items()], "",
             "What the clocks cover: each task is one backend, one seed, one grid point, run by the "
             "one run layer of `bench.compare` (`bench.run.run_one`). `median_epoch_seconds_trusted` "
             "is the median over the run's trusted epochs (after the first, at nominal machine speed "
             "and unflagged; empty when none is) of the training steps between two device "
             "synchronisations; excluded are data loading, evaluation and "
             f"{WARMUP_STEPS} warm-up steps taken before the first epoch and then undone; "
             "`median_epoch_seconds_all` is the median over every epoch, trusted or not. The map's "
             "ratio is the median over seeds of NumPy's trusted median divided by that of PyTorch on "
             "the same device (above 1: PyTorch is faster)."]
    if spec["config"].get("reference_timing") is False:
        lines += ["", "The reference timing was off (`--no-reference-timing`): `gemm_seconds_trusted` and "
                  "`epoch_to_gemm_trusted` are empty and no epoch was checked against its matrix products, "
                  "so every point is flagged and no crossover is stated."]
    lines += ["", "A point's timing is flagged (`timing_quality` in `sweep.csv`) when its epochs fail the "
              "checks of `bench.timing` (a ratio below 1 or below its fixed-cost floor, GEMM-only "
              "brackets that disagree, too few epochs, too wide a spread). A crossover is stated only "
              "between two unflagged points; next to a flagged one it reads \"inconclusive\"."]
    executors = sorted(set(rows.get("executor", pd.Series(dtype=str))) - {""})
    if any(e.startswith("dask") for e in executors):
        lines += ["", "Some tasks ran on a Dask cluster (" + ", ".join(executors) + "): each worker ran "
                  "one task at a time, but workers sharing a machine share its cores, so their "
                  "timings are comparable only with tasks run the same way."]
    out: list[tuple[str | None, list[str]]] = [(None, lines)]
    cross = []
    for label, table in ratio_tables(ratios, grid).items():
        cross += [f"### {label}: NumPy / PyTorch median epoch time", "", md_table(table, floatfmt=".2f"), "",
                  *[f"- {s}" for s in crossings.get(label, [])], ""]
    out.append(("Crossover", cross or ["No device has finished NumPy and PyTorch tasks to compare."]))
    if len(acc):
        view = acc.assign(**{"test acc %": [
            "" if math.isnan(m) else f"{100 * m:.2f}" + ("" if math.isnan(s) else f" ± {100 * s:.2f}")
            for m, s in zip(acc["test_acc_mean"], acc["test_acc_std"])]})
        out.append(("Accuracy", [md_table(view[[*grid, "backend", "test acc %", "n", "failed"]])]))
    failed = rows[rows["status"] != "ok"]
    if len(failed):
        out.append(("Failed tasks", [md_table(failed[[*grid, "backend", "seed", "status", "error", "hostname"]])]))
    out.append((None, ["`sweep.csv`: one row per grid point × backend × seed (its row of `runs.csv` and of "
                       "`summary.csv` in `bench.compare`, the machine that ran it); `epochs.csv`: every epoch "
                       "of every task; `sweep.json`: the grid and settings a resume must repeat; "
                       "`env_<host>.json`: machine, versions, BLAS, threads per host."]))
    return out


def _subtitle(rows: pd.DataFrame, spec: dict[str, Any]) -> str:
    """Where and how the map was measured, short enough for a plot title."""
    ok = rows[rows["status"] == "ok"]
    hosts = sorted({f"{h} ({c}, {int(t)} thread{'s' if t != 1 else ''})"
                    for h, c, t in zip(ok.get("hostname", []), ok.get("cpu_model", []),
                                       ok.get("threads", [])) if h})
    sizes = sorted({int(n) for n in ok.get("n_train", []) if n == n})
    epochs = None if "epochs" in spec["grid"] else spec["config"].get("epochs")
    if epochs is None:
        return ", ".join(hosts) + (f"; {'/'.join(map(str, sizes))} train images" if sizes else "")
    return ", ".join(hosts) + (f"; {'/'.join(map(str, sizes))} train images, {epochs} epoch"
                               f"{'s' if epochs != 1 else ''}" if sizes else "")


def _machine_line(host: str, env: dict[str, Any]) -> str:
    cpu, gpu, v = env.get("cpu", {}), env.get("gpu"), env.get("versions", {})
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} thread(s))"
                     for b in env.get("blas", []) if b.get("user_api") == "blas")
    return (f"`{host}`: {cpu.get('model')}, {cpu.get('logical_cores')} logical cores, "
            f"{env.get('threads')} thread(s) per task; "
            + (f"GPU {gpu['name']} (CUDA {gpu.get('cuda_runtime')}, driver {gpu.get('driver')})"
               if gpu else "no GPU")
            + f"; Python {env.get('python')}, NumPy {v.get('numpy')}, PyTorch {v.get('torch')}; "
            f"BLAS {blas or 'unknown'}; git {env.get('git_commit')}")


def _host_envs(out: Path) -> dict[str, dict[str, Any]]:
    envs = {}
    for path in sorted(out.glob("env_*.json")):
        try:
            env = read_json(path, JSON_BYTES, "a machine record")
        except (OSError, UserError):
            continue  # not this sweep's (damaged, a link to a device, ...): the machine goes unnamed
        if isinstance(env, dict):
            envs[str(env.get("hostname", path.stem[4:]))] = env
    return envs


def _fixed_text(fixed: dict[str, str]) -> str:
    return "".join(f", {k}={v}" for k, v in fixed.items())


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
