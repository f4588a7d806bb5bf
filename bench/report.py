"""report.md: the shared Markdown pieces (tables, the setup block, timing verdicts) and the compare report."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.loop import WARMUP_STEPS
from bench.stats import pair_sentences
from bench.timing import BRACKET_TOLERANCE, MIN_TIMED_EPOCHS, NOMINAL_SLACK, OK, SPREAD_TOLERANCE

CLOCKS = ("What the clocks cover: `epoch_seconds` is the training steps of one epoch between two device "
          "synchronisations; excluded are data loading, the copy of the epoch's index order to the "
          f"device, evaluation (timed apart as `eval_seconds`), and {WARMUP_STEPS} warm-up steps taken "
          "before the first epoch and then undone by restoring the initial weights.")
REFERENCE = ("The GEMM-only time is one epoch's matrix products alone, in the same shapes and count, "
             "with each backend's own library on its own device, timed before the first epoch and "
             "after every epoch; each epoch is divided by the mean of the two around it "
             "(`epoch_to_gemm`). The fixed-cost floor is `1 + fixed cost of a step / GEMM-only time of "
             "a step`, the fixed cost timed on an 8-feature, 8-unit model with the same steps. "
             "Summaries use each run's epochs after the first, at nominal machine speed (GEMM-only "
             f"within {NOMINAL_SLACK:.0%} of the fastest) and unflagged; an epoch is flagged when its "
             "ratio is below 1 or below its floor, or when the GEMM-only times before and after it "
             f"differ by more than {BRACKET_TOLERANCE:.0%}; a summary when fewer than "
             f"{MIN_TIMED_EPOCHS} epochs remain or their IQR exceeds {SPREAD_TOLERANCE:.0%} of the "
             "median.")


def md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def flagged(summary: pd.DataFrame) -> pd.Series:
    """True for the summary rows whose timing is flagged."""
    if "timing_quality" not in summary:
        return pd.Series(False, index=summary.index)
    return ~summary["timing_quality"].fillna(OK).eq(OK)


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary table as a person reads it; a flagged ratio is marked, never shown bare."""
    bad = flagged(summary)

    def ratio(v: float, is_bad: bool) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.3g} (flagged)" if is_bad else f"{v:.3g}"

    v = pd.DataFrame({
        "backend": summary["backend"],
        "n": summary["n"],
        "test acc % (mean ± std)": [
            f"{100 * m:.2f} ± {100 * s:.2f}" if not math.isnan(s) else
            (f"{100 * m:.2f}" if not math.isnan(m) else "")
            for m, s in zip(summary["test_acc_mean"], summary["test_acc_std"])],
        "median epoch s": summary["median_epoch_seconds"],
        "min epoch s": summary.get("epoch_seconds_min"),
        "IQR s": summary["epoch_seconds_iqr"],
    })
    at = v.columns.get_loc("IQR s") + 1  # the split of the epoch time, where a backend records one
    for col, label in (("median_data_seconds", "data s"), ("median_compute_seconds", "compute s")):
        if col in summary and summary[col].notna().any():
            v.insert(at, label, summary[col])
            at += 1
    if "gemm_seconds" in summary:
        v["GEMM-only s"] = summary["gemm_seconds"]
        v["epoch / GEMM"] = [ratio(r, b) for r, b in zip(summary["epoch_to_gemm"], bad)]
        v["floor"] = summary.get("ratio_floor")
        v["GFLOP/s"] = summary.get("achieved_gflops")
    if "compile_seconds" in summary and summary["compile_seconds"].notna().any():
        v["compile s"] = summary["compile_seconds"]
    v["timing"] = ["flagged" if b else "ok" for b in bad]
    if summary["n_failed"].any():
        v["failed runs"] = summary["n_failed"]
    if "n_interrupted" in summary and summary["n_interrupted"].any():
        v["interrupted"] = summary["n_interrupted"]
    return v


def timing_sentences(summary: pd.DataFrame) -> list[str]:
    """One sentence per backend whose timing is flagged, saying why (empty when none is)."""
    out = []
    for row, bad in zip(summary.to_dict("records"), flagged(summary)):
        if bad:
            left = row.get("epochs_left_out")
            out.append(f"{row['backend']}: the timing is not a finding: {row['timing_quality']}"
                       + (f" ({left})" if isinstance(left, str) and left else "")
                       + ". Rerun on a quieter machine or with more epochs.")
    return out


def compile_sentence(summary: pd.DataFrame) -> str | None:
    """What the compiling backends spent compiling, or None when none compiled."""
    if "compile_seconds" not in summary or not summary["compile_seconds"].notna().any():
        return None
    done = summary[summary["compile_seconds"].notna()]
    return ("Compilation (before the first epoch, outside every clock; the warm-up steps run the "
            "compiled code, later seeds reuse it): " + "; ".join(
                f"`{b}` {s:.2f} s" for b, s in zip(done["backend"], done["compile_seconds"])) + ".")


def setup_lines(env: dict[str, Any], extra: list[str] = ()) -> list[str]:
    """Machine, versions, BLAS, OpenBLAS variables, data, ``extra`` lines, then the commit and the
    command: the setup block of every report."""
    data, gpu, v = env.get("data") or {}, env.get("gpu"), env.get("versions", {})
    blas = [b for b in env.get("blas", []) if b.get("user_api") == "blas"]
    lines = [
        f"- Machine: {env['cpu']['model']}, {env['cpu']['logical_cores']} logical cores, "
        f"{env['threads']} threads for every backend"
        + (f"; GPU {gpu['name']} (CUDA {gpu.get('cuda_runtime')}, driver {gpu.get('driver')})" if gpu
           else "; no GPU"),
        f"- Versions: Python {env['python']}, NumPy {v.get('numpy')}, PyTorch {v.get('torch')}"
        + (f", CuPy {v['cupy']}" if v.get("cupy") else "") + (f", JAX {v['jax']}" if v.get("jax") else ""),
        "- BLAS: " + ("; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} "
                                 "threads" + (f", {b['architecture']}" if b.get("architecture") else "")
                                 + ")" for b in blas) or "unknown"),
        f"- OPENBLAS_CORETYPE: {env['env_vars'].get('OPENBLAS_CORETYPE') or 'not set'}, "
        f"OPENBLAS_L2_SIZE: {env['env_vars'].get('OPENBLAS_L2_SIZE') or 'not set'}",
    ]
    if data:
        lines.append(f"- Data: {data.get('source')} — official archive: {data.get('official')}, "
                     f"fingerprint `{str(data.get('fingerprint'))[:16]}…`, train/val/test = "
                     f"{data.get('n_train')}/{data.get('n_val')}/{data.get('n_test')}")
    lines += list(extra)
    lines.append(f"- Git commit: {env.get('git_commit')}; command: `{' '.join(env.get('command', []))}`")
    return lines


def model_line(config: dict[str, Any]) -> str:
    return (f"- Model: hidden {config['hidden_dims']}, {config['activation']}"
            + (f" (alpha {config['alpha']})" if config['activation'] == 'elu' else "")
            + (", residual" if config['residual'] else "")
            + f"; SGD lr {config['lr']}, momentum {config['momentum']}, weight decay "
            f"{config['weight_decay']}, batch {config['batch_size']} (drop_last), {config['epochs']} "
            f"epoch{'s' if config['epochs'] != 1 else ''}, {config['dtype']}")


def build_report(*, env: dict[str, Any], config: dict[str, Any], summary: pd.DataFrame,
                 pairs: pd.DataFrame, runs: pd.DataFrame, skipped: list[tuple[str, str]],
                 plots: dict[str, str], lockstep: dict[str, Any] | None, interrupted: bool,
                 files: list[str]) -> str:
    """The compare report."""
    lines = ["# NumPy vs PyTorch MLP: comparison report", ""]
    if interrupted:
        lines += ["**This run was interrupted (Ctrl-C): the tables hold what finished before it.**", ""]
    seeds = (f"- Seeds: {config['seeds']} (n = {len(config['seeds'])} per backend)"
             + ("; lock-step: every backend starts from the first backend's weights"
                if config['lockstep'] else ""))
    lines += ["## Setup", "", *setup_lines(env, [model_line(config), seeds]), "", CLOCKS, ""]
    if config.get("reference_timing", True):
        lines += [REFERENCE, ""]
    if skipped:
        lines += ["Skipped (not available here): " + "; ".join(f"`{n}` ({r})" for n, r in skipped), ""]
    not_run = [r for r in runs.to_dict("records") if r.get("status") not in ("ok",)]
    started = set(runs["backend"]) if len(runs) else set()
    never = [b for b in env.get("backends", []) if b not in started]
    lines += ["## Summary", "", md_table(summary_view(summary)), ""]
    steady = ("each run's epochs after the first" if config["epochs"] > 1
              else "the one epoch of each run")
    lines += [f"Epoch times: median, minimum and IQR over {steady}"
              + (", at nominal speed and unflagged (see above)." if config.get("reference_timing", True)
                 else "; reference timing was off, so nothing checks them against the GEMM-only "
                      "time.") , ""]
    compiled = compile_sentence(summary)
    if compiled:
        lines += [compiled, ""]
    sentences = timing_sentences(summary)
    if sentences:
        lines += ["**Timing flagged:**", "", *[f"- {s}" for s in sentences], ""]
    if "median_data_seconds" in summary and summary["median_data_seconds"].notna().any():
        lines += ["`data s` and `compute s` (medians, same epochs): for a backend that produces its "
                  "batches inside the epoch (torch-dataloader), the time the loop waited for the next "
                  "batch and the rest of the epoch; on CUDA a step still running on the GPU can hide "
                  "inside `data s` (docs/peers.md).", ""]
    if not_run or never:
        lines += ["## Runs that did not finish", ""]
        lines += [f"- `{r['backend']}` seed {r['seed']}: {r['status']}"
                  + (f" — {r['error']}" if isinstance(r.get("error"), str) and r.get("error") else "")
                  + f" ({r.get('epochs_done', 0)} epochs recorded)" for r in not_run]
        lines += [f"- `{b}`: never started (the run was interrupted before its turn)" for b in never]
        lines += [""]
    if len(pairs):
        lines += ["## Are the differences real?", ""]
        lines += [f"- {s}" for s in pair_sentences(pairs, flagged_backends(summary))]
        lines += [""]
    if lockstep is not None:
        lines += ["## Lock-step", "",
                  f"All backends started from the same weights and took the same batches. Over "
                  f"{lockstep['steps']} steps per run, the largest absolute difference of the batch loss "
                  f"from `{lockstep['reference']}` was {lockstep['max_abs']:.3g} and the largest relative "
                  f"difference {lockstep['max_rel']:.3g} ({lockstep['where']}).", ""]
        for b, where in lockstep.get("parted", {}).items():
            lines += [f"- `{b}` parts from `{lockstep['reference']}` (relative loss difference above "
                      f"1e-4) first at {where}."]
        if lockstep.get("parted"):
            lines += [""]
    lines += ["## Plots", ""]
    for title, name in plots.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += ["## Runs", "", md_table(runs.drop(columns=["impl", "device"], errors="ignore")), "",
              "Files: " + ", ".join(f"`{f}`" for f in files) + ".", ""]
    return "\n".join(lines)


def flagged_backends(summary: pd.DataFrame) -> set[str]:
    return set(summary.loc[flagged(summary), "backend"])
