"""report.md: the tables, the plots and the plain-words verdicts of one compare run."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.loop import WARMUP_STEPS
from bench.stats import pair_sentences


def md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary table as a person reads it: percentages and milliseconds."""
    v = pd.DataFrame({
        "backend": summary["backend"],
        "n": summary["n"],
        "test acc % (mean ± std)": [
            f"{100 * m:.2f} ± {100 * s:.2f}" if not math.isnan(s) else
            (f"{100 * m:.2f}" if not math.isnan(m) else "")
            for m, s in zip(summary["test_acc_mean"], summary["test_acc_std"])],
        "median epoch s": summary["median_epoch_seconds"],
        "IQR s": summary["epoch_seconds_iqr"],
        "GEMM-only s": summary.get("gemm_seconds"),
        "epoch / GEMM": summary.get("epoch_to_gemm"),
        "GFLOP/s": summary.get("achieved_gflops"),
    })
    at = v.columns.get_loc("IQR s") + 1  # the split of the epoch time, where a backend records one
    for col, label in (("median_data_seconds", "data s"), ("median_compute_seconds", "compute s")):
        if col in summary and summary[col].notna().any():
            v.insert(at, label, summary[col])
            at += 1
    if summary["n_failed"].any():
        v["failed runs"] = summary["n_failed"]
    return v


def build_report(*, env: dict[str, Any], config: dict[str, Any], summary: pd.DataFrame,
                 pairs: pd.DataFrame, runs: pd.DataFrame, skipped: list[tuple[str, str]],
                 plots: dict[str, str], lockstep: dict[str, Any] | None,
                 interrupted: bool) -> str:
    data = env.get("data", {})
    gpu = env.get("gpu")
    v = env.get("versions", {})
    lines = ["# NumPy vs PyTorch MLP: comparison report", ""]
    if interrupted:
        lines += ["**This run was interrupted (Ctrl-C): the tables hold what finished before it.**", ""]
    lines += [
        "## Setup",
        "",
        f"- Machine: {env['cpu']['model']}, {env['cpu']['logical_cores']} logical cores, "
        f"{env['threads']} threads for every backend"
        + (f"; GPU {gpu['name']} (CUDA {gpu.get('cuda_runtime')}, driver {gpu.get('driver')})" if gpu else "; no GPU"),
        f"- Versions: Python {env['python']}, NumPy {v.get('numpy')}, PyTorch {v.get('torch')}"
        + (f", CuPy {v.get('cupy') or v.get('cupy-cuda12x')}" if (v.get('cupy') or v.get('cupy-cuda12x')) else ""),
        "- BLAS: " + "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads"
                                 + (f", {b['architecture']}" if b.get('architecture') else "") + ")"
                                 for b in env.get("blas", []) if b.get("user_api") == "blas"),
        f"- OPENBLAS_CORETYPE: {env['env_vars'].get('OPENBLAS_CORETYPE') or 'not set'}, "
        f"OPENBLAS_L2_SIZE: {env['env_vars'].get('OPENBLAS_L2_SIZE') or 'not set'}",
        f"- Data: {data.get('source')} — official archive: {data.get('official')}, "
        f"fingerprint `{str(data.get('fingerprint'))[:16]}…`, "
        f"train/val/test = {data.get('n_train')}/{data.get('n_val')}/{data.get('n_test')}",
        f"- Model: hidden {config['hidden_dims']}, {config['activation']}"
        + (f" (alpha {config['alpha']})" if config['activation'] == 'elu' else "")
        + (", residual" if config['residual'] else "")
        + f"; SGD lr {config['lr']}, momentum {config['momentum']}, weight decay {config['weight_decay']}, "
        f"batch {config['batch_size']} (drop_last), {config['epochs']} epochs, {config['dtype']}",
        f"- Seeds: {config['seeds']} (n = {len(config['seeds'])} per backend)"
        + ("; lock-step: every backend starts from the first backend's weights" if config['lockstep'] else ""),
        f"- Git commit: {env.get('git_commit')}; command: `{' '.join(env.get('command', []))}`",
        "",
        "What the clocks cover: `epoch_seconds` is the training steps of one epoch between two device "
        "synchronisations; excluded are data loading, the copy of the epoch's index order to the device, "
        f"evaluation (timed apart as `eval_seconds`), and {WARMUP_STEPS} warm-up steps taken before the "
        "first epoch and then undone by restoring the initial weights. The GEMM-only time is one epoch's "
        "matrix products alone, in the same shapes and count, with each backend's own library on its own "
        "device (median of 3).",
        "",
    ]
    if skipped:
        lines += ["Skipped (not available here): " + "; ".join(f"`{n}` ({r})" for n, r in skipped), ""]

    lines += ["## Summary", "", md_table(summary_view(summary)), ""]
    lines += ["Epoch times are pooled over every run's epochs after the first; IQR is their "
              "interquartile range.", ""]
    if "median_data_seconds" in summary and summary["median_data_seconds"].notna().any():
        lines += ["`data s` and `compute s` (medians, same epochs): for a backend that produces its "
                  "batches inside the epoch (torch-dataloader), the time the loop waited for the next "
                  "batch and the rest of the epoch; on CUDA a step still running on the GPU can hide "
                  "inside `data s` (docs/peers.md).", ""]
    if len(pairs):
        lines += ["## Are the differences real?", ""]
        lines += [f"- {s}" for s in pair_sentences(pairs)]
        lines += [""]
    if lockstep is not None:
        lines += ["## Lock-step", "",
                  f"All backends started from the same weights and took the same batches. Over "
                  f"{lockstep['steps']} steps per run, the largest absolute difference of the batch loss "
                  f"from `{lockstep['reference']}` was {lockstep['max_abs']:.3g} and the largest relative "
                  f"difference {lockstep['max_rel']:.3g} ({lockstep['where']}).", ""]
    lines += ["## Plots", ""]
    for title, name in plots.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += ["## Runs", "", md_table(runs.drop(columns=["impl", "device"], errors="ignore")), "",
              "Files: `epochs.csv` (one row per epoch), `runs.csv` (one per run), `summary.csv` "
              "(one per backend), `pairs.csv` (the tests above)"
              + (", `steps.csv` (every step's loss)" if lockstep is not None else "")
              + ", `env.json` (machine, versions, config, data).", ""]
    return "\n".join(lines)
