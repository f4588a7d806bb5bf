"""report.md's shared pieces (tables, the setup block, the clocks, timing verdicts) and the compare report's
sections; the skeleton around them is ``bench.runner``'s."""

from __future__ import annotations

import math
import shlex
from typing import Any

import pandas as pd

from bench.cli import prog_name
from bench.config import COMMAND_FIELDS, MODEL, preset
from bench.run import WARMUP_STEPS
from bench.timing import BRACKET_TOLERANCE, MIN_TIMED_EPOCHS, NOMINAL_SLACK, OK, SPREAD_TOLERANCE

MIN_SEEDS = 5  # seeds per backend the next command proposes for an accuracy verdict
CLOCKS = ("What the clocks cover: `epoch_seconds` is the training steps of one epoch between two device "
          "synchronisations; excluded are data loading, the copy of the epoch's index order to the "
          f"device, evaluation (timed apart as `eval_seconds`), and {WARMUP_STEPS} warm-up steps taken "
          "before the first epoch and then undone by restoring the initial weights.")
REFERENCE = ("The GEMM-only time is one epoch's matrix products alone, in the same shapes and count, "
             "with each backend's own library on its own device, timed before the first epoch and "
             "after every epoch; each epoch is divided by the mean of the two around it "
             "(`epoch_to_gemm`). The gather-only time (`gather_seconds`) is one epoch's batch gathers "
             "alone, the same rows through the backend's own gather, timed after every epoch; "
             "divided by the GEMM-only time it is the part of the ratio the data path costs. "
             "The fixed-cost floor is `1 + fixed cost of a step / GEMM-only time of "
             "a step`, the fixed cost timed on an 8-feature, 8-unit model with the same steps. "
             "An epoch is flagged when its ratio is below 1 or below its floor, or when the GEMM-only "
             f"times before and after it differ by more than {BRACKET_TOLERANCE:.0%}. The *trusted* "
             "epochs (column `trusted` of `epochs.csv`) are each run's epochs after the first, at "
             f"nominal machine speed (GEMM-only within {NOMINAL_SLACK:.0%} of the backend's fastest) "
             "and unflagged; every `*_trusted` figure and every speed verdict uses those alone, and a "
             f"backend's timing is flagged when fewer than {MIN_TIMED_EPOCHS} are trusted or their IQR "
             f"exceeds {SPREAD_TOLERANCE:.0%} of their median. `*_all` figures are over every epoch, "
             "the first included, trusted or not.")


def md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return format(v, floatfmt)
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(v))
        return text.replace("|", "\\|")  # a newline or a pipe in a cell never splits its row

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def flagged(summary: pd.DataFrame) -> pd.Series:
    """True for the summary rows whose timing is flagged."""
    if "timing_quality" not in summary:
        return pd.Series(False, index=summary.index)
    return ~summary["timing_quality"].fillna(OK).eq(OK)


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary table as a person reads it: every epoch-time column says over which epochs;
    a flagged ratio is marked, never shown bare."""
    bad = flagged(summary)
    v = pd.DataFrame({
        "backend": summary["backend"],
        "n": summary["n"],
        "test acc % (mean ± std)": [
            f"{100 * m:.2f} ± {100 * s:.2f}" if not math.isnan(s) else _fmt(100 * m, ".2f")
            for m, s in zip(summary["test_acc_mean"], summary["test_acc_std"])],
        "trusted epochs": [f"{t} of {a}" for t, a in zip(summary["n_epochs_trusted"],
                                                        summary["n_epochs_all"])],
        "median epoch s (trusted)": summary["median_epoch_seconds_trusted"],
        "Q1–Q3 s (trusted)": [f"{_fmt(lo)}–{_fmt(hi)}" if not math.isnan(lo) else ""
                              for lo, hi in zip(summary["epoch_seconds_q25_trusted"],
                                                summary["epoch_seconds_q75_trusted"])],
        "min epoch s (trusted)": summary["epoch_seconds_min_trusted"],
    })
    for col, label in (("median_data_seconds_trusted", "data s (trusted)"),
                       ("median_compute_seconds_trusted", "compute s (trusted)")):
        if col in summary and summary[col].notna().any():  # backends that split their epoch time
            v[label] = summary[col]
    if "gemm_seconds_trusted" in summary:
        v["GEMM-only s (trusted)"] = summary["gemm_seconds_trusted"]
        if "gather_seconds_trusted" in summary and summary["gather_seconds_trusted"].notna().any():
            v["gather s (trusted)"] = summary["gather_seconds_trusted"]
        v["epoch / GEMM (trusted)"] = [_fmt(r, ".3g") + (" (flagged)" if b and not math.isnan(r) else "")
                                       for r, b in zip(summary["epoch_to_gemm_trusted"], bad)]
        v["floor"] = summary.get("ratio_floor")
        v["GFLOP/s (trusted)"] = summary.get("achieved_gflops")
    v["median epoch s (all)"] = summary["median_epoch_seconds_all"]
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
            left, quality = row.get("epochs_left_out"), row["timing_quality"]
            detail = f" ({left})" if isinstance(left, str) and left and left not in quality else ""
            out.append(f"{row['backend']}: the timing is not a finding: {quality}{detail}.")
    return out


def command_line(command: str, config: dict[str, Any], **changes: Any) -> str:
    """The command line that runs ``command`` with ``config`` and ``changes``: the flags of the fields
    that differ from the command's preset (``bench.config``), ready to paste."""
    base, cfg = preset(command).to_dict(), {**config, **changes}
    words = []
    for name in COMMAND_FIELDS[command]:
        value, flag = cfg.get(name), "--" + name.replace("_", "-")
        if value == base[name]:
            continue
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            text = ("none" if value is None else
                    ",".join(map(str, value)) if isinstance(value, list) else str(value))
            words += [flag, shlex.quote(text)]
    return " ".join([prog_name(command), *words])


def next_steps(config: dict[str, Any], summary: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    """What to run when this comparison could not give an accuracy or a speed verdict."""
    out = []
    few = len(pairs) and (pairs[["n_a", "n_b"]].min(axis=1) < 2).any()
    if few and len(config["seeds"]) < MIN_SEEDS:
        seeds = list(dict.fromkeys([*config["seeds"], *range(42, 42 + MIN_SEEDS)]))[:MIN_SEEDS]
        out.append(f"For an accuracy verdict (Welch's t needs two seeds or more per backend; "
                   f"{MIN_SEEDS} give it some power): `{command_line('compare', config, seeds=seeds)}`")
    bad = list(summary.loc[flagged(summary), "backend"])
    if bad and len(summary) > 1:
        same = {k: config[k] for k in MODEL + ("batch_size", "dtype", "threads")}
        turns = command_line("epoch_ratio", {**preset("epoch_ratio").to_dict(), **same},
                             backends=list(summary["backend"]))
        out.append(f"For a speed verdict ({', '.join(bad)} flagged): rerun on a quieter machine, or let "
                   "the backends take turns epoch by epoch, so that a changing load hits all of them "
                   f"alike: `{turns}`")
    elif bad:
        out.append(f"For a trusted timing of {bad[0]}: rerun on a quieter machine, with more epochs: "
                   f"`{command_line('compare', config, epochs=2 * config['epochs'])}`")
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
            f"epoch{'s' if config['epochs'] != 1 else ''}, {config['dtype']}"
            + ("; batches gathered from the uint8 images, normalised as gathered"
               if config.get("gather_from") == "uint8" else ""))


def gemm_libraries(options: dict[str, Any]) -> dict[str, str]:
    """{backend: the library its GEMMs ran on}, from each backend's ``describe()`` (``options``)."""
    return {b: o["gemm_library"] for b, o in options.items()
            if isinstance(o, dict) and o.get("gemm_library")}


def compare_sections(config: dict[str, Any], options: dict[str, Any], summary: pd.DataFrame,
                     verdicts: list[str], next_steps: list[str], runs: pd.DataFrame, never: list[str],
                     skipped: list[tuple[str, str]], lockstep: list[str] | None
                     ) -> tuple[list[str], list[tuple[str | None, list[str]]]]:
    """The compare report's setup lines and sections: ``verdicts`` and ``lockstep`` are the sentences,
    ``never`` the backends an interruption kept from starting, ``options`` each backend's describe()."""
    seeds = (f"- Seeds: {config['seeds']} (n = {len(config['seeds'])} per backend)"
             + ("; lock-step: every backend starts from the first backend's weights"
                if config['lockstep'] else ""))
    libs = gemm_libraries(options)
    gemms = ["- GEMMs ran on: " + "; ".join(f"`{b}` {lib}" for b, lib in libs.items())] if libs else []
    notes = [f"- `{b}`: {o['note']}" for b, o in options.items()
             if isinstance(o, dict) and o.get("note")]  # e.g. what course:PATH trains
    reference = (REFERENCE if config.get("reference_timing", True) else
                 "Reference timing was off (`--no-reference-timing`): no epoch was checked against its "
                 "GEMM-only time, so the *trusted* epochs are simply each run's epochs after the first.")
    intro = [CLOCKS, "", reference]
    if skipped:
        intro += ["", "Skipped (not available here): " + "; ".join(f"`{n}` ({r})" for n, r in skipped)]
    sections: list[tuple[str | None, list[str]]] = [(None, intro)]
    if verdicts or next_steps:
        sections.append(("Verdict", [*[f"- {s}" for s in verdicts], *[f"- Next: {s}" for s in next_steps]]))
    body = [md_table(summary_view(summary)), "",
            "`(trusted)`: over the trusted epochs alone (see above); `(all)`: over every epoch of "
            "every run, the first included, as `median_epoch_seconds_all` of `runs.csv` per run. "
            "`Q1–Q3`: the quartiles of the trusted epoch times."]
    compiled = compile_sentence(summary)
    if compiled:
        body += ["", compiled]
    flagged_words = timing_sentences(summary)
    if flagged_words:
        body += ["", "**Timing flagged:**", "", *[f"- {s}" for s in flagged_words]]
    if "median_data_seconds_trusted" in summary and summary["median_data_seconds_trusted"].notna().any():
        body += ["", "`data s` and `compute s` (medians over the trusted epochs): for a backend that "
                 "produces its batches inside the epoch (torch-dataloader), the time the loop waited "
                 "for the next batch and the rest of the epoch; on CUDA a step still running on the "
                 "GPU can hide inside `data s` (docs/peers.md)."]
    sections.append(("Summary", body))
    not_run = [r for r in runs.to_dict("records") if r.get("status") != "ok"]
    if not_run or never:
        sections.append(("Runs that did not finish", [
            *[f"- `{r['backend']}` seed {r['seed']}: {r['status']}"
              + (f" — {r['error']}" if isinstance(r.get("error"), str) and r.get("error") else "")
              + f" ({r.get('epochs_done', 0)} epochs recorded)" for r in not_run],
            *[f"- `{b}`: never started (the run was interrupted before its turn)" for b in never]]))
    if lockstep is not None:
        sections.append(("Lock-step", [
            "All backends started from the same weights and took the same batches; so did a rounding "
            f"control, the first backend from its own weights times (1 + {config['dtype']} machine "
            "epsilon): its drift is what rounding alone does, the yardstick for the others. A backend "
            "that parts much sooner than the control has a different step, not different rounding.",
            "", *[f"- {s}" for s in lockstep]]))
    sections.append(("Runs", [md_table(runs.drop(columns=["impl", "device"], errors="ignore"))]))
    return [model_line(config), seeds, *gemms, *notes], sections


def flagged_backends(summary: pd.DataFrame) -> set[str]:
    return set(summary.loc[flagged(summary), "backend"])
