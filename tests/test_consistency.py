"""Every output of a comparison against every other: scripted backends on a fake clock.

Three backends whose every time is scripted (tests/fake_backends.py) run through the real
``python -m bench.compare`` path: ``clean`` (every epoch trusted), ``mixed`` (per run one trusted
epoch, three flagged, one on a loaded machine) and ``flagged`` (every epoch faster than its own
matrix products). Then epochs.csv, runs.csv, summary.csv, pairs.csv, report.md, the terminal and the
epoch-time plot must tell the same story, figure for figure, and each figure must be what its label
says. A property test does the same for random epoch tables through the summary functions.
"""

from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import compare, plots
from bench.backends import IMPLS, Impl
from bench.report import md_table, summary_view
from bench.stats import compare_pairs, pair_sentences, summarise
from bench.timing import MIN_TIMED_EPOCHS, OK, SPREAD_TOLERANCE, trusted_mask
from conftest import REPO

SEEDS = (42, 43, 44)
SCRIPTS = {
    # steps of 1.2, 1.0, 1.04, 0.96, 1.12, 1.08 s an epoch against a steady GEMM-only 0.8 s: all ok
    "clean": {"step": [0.15, 0.125, 0.13, 0.12, 0.14, 0.135], "gemm": [0.8] * 7,
              "acc": {42: 0.50, 43: 0.52, 44: 0.51}},
    # epoch 2 trusted; 3 (brackets 0.8/1.6), 4 (ratio 0.75) and 5 (1.6/1.0) flagged; 6 ok but loaded
    "mixed": {"step": [0.15] * 6, "gemm": [0.8, 0.8, 0.8, 1.6, 1.6, 1.0, 1.0],
              "acc": {42: 0.40, 43: 0.41, 44: 0.43}},
    # 0.8 s epochs against 2 s of their own matrix products: impossible, every epoch flagged
    "flagged": {"step": [0.1] * 6, "gemm": [2.0] * 7, "acc": {42: 0.45, 43: 0.45, 44: 0.46}},
}
TRUSTED = {"clean": 15, "mixed": 3, "flagged": 0}  # 5, 1, 0 per run, three runs each


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One comparison of the three scripted backends, 6 epochs, 3 seeds: its folder and its stdout."""
    import fake_backends
    from fake_backends import SCRIPT, ScriptClock

    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(REPO / "tests"))
    for name in SCRIPTS:
        mp.setitem(IMPLS, name, Impl("fake_backends", f"{name.capitalize()}Backend", None, False))
        mp.setitem(SCRIPT, name, SCRIPTS[name])
    mp.setattr(compare, "run_one", functools.partial(compare.run_one, clock=ScriptClock()))
    out = tmp_path_factory.mktemp("consistency") / "o"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = compare.main(["--dataset", "synthetic", "--train-subset", "512", "--val-size", "128",
                             "--batch-size", "64", "--hidden-dims", "16", "--epochs", "6", "--quiet",
                             "--seeds", *map(str, SEEDS), "--backends", "clean:cpu,mixed:cpu,flagged:cpu",
                             "--out", str(out)])
    mp.undo()
    assert code == 0 and fake_backends.SCRIPT == {}
    return out, printed.getvalue()


def read(out, name):
    return pd.read_csv(out / name)


def test_the_trusted_epochs_are_the_scripted_ones_and_every_count_agrees(compared):
    out, _ = compared
    epochs, summary, pairs = read(out, "epochs.csv"), read(out, "summary.csv"), read(out, "pairs.csv")
    summary = summary.set_index("backend")
    for name, n in TRUSTED.items():
        backend = f"{name}:cpu"
        ep = epochs[epochs["backend"] == backend]
        assert int(ep["trusted"].sum()) == n == summary.at[backend, "n_epochs_trusted"]
        assert len(ep) == 18 == summary.at[backend, "n_epochs_all"]
        trusted = ep[ep["trusted"]]
        assert (trusted["epoch"] > 1).all() and trusted["timing_quality"].eq(OK).all()
    assert list(epochs["trusted"]) == list(trusted_mask(epochs.drop(columns="trusted")))
    for r in pairs.itertuples():
        assert r.trusted_epochs_a == summary.at[r.a, "n_epochs_trusted"]
        assert r.trusted_epochs_b == summary.at[r.b, "n_epochs_trusted"]


def test_every_summary_figure_is_what_its_column_name_says(compared):
    out, _ = compared
    epochs, runs, summary = read(out, "epochs.csv"), read(out, "runs.csv"), read(out, "summary.csv")
    for row in summary.to_dict("records"):
        ep = epochs[epochs["backend"] == row["backend"]]
        t = ep.loc[ep["trusted"], "epoch_seconds"].to_numpy()
        assert row["median_epoch_seconds_all"] == pytest.approx(np.median(ep["epoch_seconds"]))
        if len(t):
            assert row["median_epoch_seconds_trusted"] == pytest.approx(np.median(t))
            assert row["epoch_seconds_min_trusted"] == pytest.approx(t.min())
            assert (row["epoch_seconds_q25_trusted"], row["epoch_seconds_q75_trusted"]) == \
                pytest.approx(tuple(np.percentile(t, [25, 75])))
            trusted = ep[ep["trusted"]]
            assert row["gemm_seconds_trusted"] == pytest.approx(trusted["gemm_seconds"].median())
            assert row["epoch_to_gemm_trusted"] == pytest.approx(trusted["epoch_to_gemm"].median())
            assert row["epoch_to_gemm_min_trusted"] >= 1
        else:
            for col in ("median_epoch_seconds_trusted", "epoch_seconds_min_trusted",
                        "gemm_seconds_trusted", "epoch_to_gemm_trusted"):
                assert math.isnan(row[col]), col
        ok = len(t) >= MIN_TIMED_EPOCHS and (np.subtract(*np.percentile(t, [75, 25])) / np.median(t)
                                             <= SPREAD_TOLERANCE)
        assert (row["timing_quality"] == OK) is bool(ok), row["timing_quality"]
        ok_runs = runs[(runs["backend"] == row["backend"]) & (runs["status"] == "ok")]
        assert row["n"] == len(ok_runs) == 3
        assert row["test_acc_mean"] == pytest.approx(ok_runs["test_acc"].mean())
    for r in runs.to_dict("records"):  # runs.csv: every epoch of the run, the first included
        ep = epochs[(epochs["backend"] == r["backend"]) & (epochs["seed"] == r["seed"])]
        assert r["median_epoch_seconds_all"] == pytest.approx(np.median(ep["epoch_seconds"]))
    flagged = summary.set_index("backend").at["flagged:cpu", "timing_quality"]
    assert flagged == "no trusted epoch (15 of 15 epochs after the first left out: 15 flagged)"
    mixed = summary.set_index("backend").at["mixed:cpu", "epochs_left_out"]
    assert mixed == "12 of 15 epochs after the first left out: 9 flagged, 3 not at nominal machine speed"


def test_pairs_take_the_summary_figures_and_the_split_adds_up(compared):
    out, _ = compared
    summary, pairs = read(out, "summary.csv").set_index("backend"), read(out, "pairs.csv")
    runs = read(out, "runs.csv")
    for r in pairs.itertuples():
        for side, name in (("a", r.a), ("b", r.b)):
            assert getattr(r, f"epoch_seconds_trusted_{side}") == pytest.approx(
                summary.at[name, "median_epoch_seconds_trusted"], nan_ok=True)
            assert getattr(r, f"gemm_seconds_trusted_{side}") == pytest.approx(
                summary.at[name, "gemm_seconds_trusted"], nan_ok=True)
        assert r.time_ratio_trusted == pytest.approx(r.epoch_seconds_trusted_a / r.epoch_seconds_trusted_b,
                                                     nan_ok=True)
        assert r.epoch_diff_seconds == pytest.approx(r.gemm_diff_seconds + r.rest_diff_seconds,
                                                     nan_ok=True)
        acc = runs.groupby("backend")["test_acc"].mean()
        assert r.acc_diff == pytest.approx(acc[r.a] - acc[r.b])
        assert (r.n_a, r.n_b) == (3, 3)


def test_the_terminal_and_the_report_say_what_the_tables_hold(compared):
    out, printed = compared
    summary, pairs = read(out, "summary.csv"), read(out, "pairs.csv")
    report = (out / "report.md").read_text()
    table = md_table(summary_view(summary))
    assert table in printed and table in report  # the same table, from the same summary
    verdicts = [line[len("verdict: "):] for line in printed.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 3 and all(f"- {v}" in report for v in verdicts)
    by_pair = {(r.a, r.b): (r, v) for r, v in zip(pairs.itertuples(), verdicts)}
    r, clean_mixed = by_pair[("clean:cpu", "mixed:cpu")]
    assert (f"median epoch time over the trusted epochs {r.epoch_seconds_trusted_a:.4g} s vs "
            f"{r.epoch_seconds_trusted_b:.4g} s (ratio {r.time_ratio_trusted:.3g}; 15 vs 3 trusted "
            "epochs)") in clean_mixed
    assert clean_mixed.count("Speed: ") == 1 and "(clean BLAS 1.0 vs mixed BLAS 1.0)" in clean_mixed
    assert f"accounts for {r.gemm_diff_seconds:+.3g} s" in clean_mixed
    assert f"everything else for {r.rest_diff_seconds:+.3g} s" in clean_mixed
    assert (f"test accuracy {100 * r.acc_a:.2f} % vs {100 * r.acc_b:.2f} % ({100 * r.acc_diff:+.2f} "
            "points, n = 3 vs 3 seeds, Welch's t): significant") in clean_mixed
    assert "so clean:cpu is more accurate" in clean_mixed and "so clean:cpu is faster" in clean_mixed
    for pair in (("clean:cpu", "flagged:cpu"), ("mixed:cpu", "flagged:cpu")):
        assert "No speed verdict: flagged:cpu had no trusted epoch." in by_pair[pair][1]
        assert "Speed:" not in by_pair[pair][1]
    flagged_lines = [line for line in printed.splitlines() if line.startswith("timing flagged:")]
    assert flagged_lines == ["timing flagged: flagged:cpu: the timing is not a finding: no trusted epoch "
                             "(15 of 15 epochs after the first left out: 15 flagged)."]
    assert "- flagged:cpu: the timing is not a finding: no trusted epoch" in report
    nxt = [line for line in printed.splitlines() if line.startswith("next: ")]
    assert len(nxt) == 1 and "python -m bench.epoch_ratio --hidden-dims 16 --batch-size 64 --backends " \
        "clean:cpu,mixed:cpu,flagged:cpu" in nxt[0]
    assert "GEMMs ran on: `clean:cpu` clean BLAS 1.0" in report
    row = next(line for line in printed.splitlines() if line.startswith("| flagged:cpu"))
    assert "| 0 of 18 |" in row and row.rstrip(" |").endswith("flagged")


def test_the_epoch_time_plot_draws_the_summary_quartiles(compared):
    out, _ = compared
    summary = read(out, "summary.csv")
    fig = plots.epoch_time(summary)
    try:
        ax = fig.axes[0]
        bars = ax.containers[1] if len(ax.containers) > 1 else ax.containers[0]
        heights = [b.get_height() for b in bars]
        assert heights == pytest.approx(list(summary["median_epoch_seconds_trusted"].fillna(0)))
        whiskers = ax.containers[0].lines[2][0].get_segments()  # ErrorbarContainer: (x, lo)-(x, hi)
        for seg, row in zip(whiskers, summary.to_dict("records")):
            lo, hi = sorted(y for _, y in seg)
            if math.isnan(row["median_epoch_seconds_trusted"]):
                assert lo == hi == 0
            else:
                assert (lo, hi) == pytest.approx((row["epoch_seconds_q25_trusted"],
                                                  row["epoch_seconds_q75_trusted"]))
                assert lo >= 0
        texts = [t.get_text() for t in ax.texts]
        assert texts == ["no trusted\nepoch"]
        assert "whiskers Q1–Q3" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    finally:
        plt.close(fig)


def test_epoch_ratio_words_the_same_counts(compared):
    from bench.epoch_ratio import _summary_lines

    out, _ = compared
    lines = _summary_lines(read(out, "epochs.csv"), read(out, "summary.csv"))
    assert "over the 15 trusted" in lines[0] and "over the 3 trusted" in lines[1]
    assert "no trusted epoch" in lines[2] and "over the 0" not in lines[2]


# ---------------------------------------------------------------- any epoch table

@st.composite
def epoch_tables(draw):
    """Two backends, 1-3 runs of 1-6 epochs, random times, brackets and qualities."""
    rows = []
    for backend in ("a:cpu", "b:cpu"):
        for seed in range(draw(st.integers(1, 3))):
            for epoch in range(1, draw(st.integers(1, 6)) + 1):
                t = draw(st.floats(0.1, 2.0))
                g = draw(st.floats(0.1, 2.0))
                rows.append({"backend": backend, "seed": seed, "epoch": epoch, "epoch_seconds": t,
                             "gemm_seconds": g, "epoch_to_gemm": t / g, "ratio_floor": 1.0,
                             "fixed_step_seconds": 0.0,
                             "timing_quality": OK if t >= g and draw(st.booleans()) else "flagged"})
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(epochs=epoch_tables(), acc=st.lists(st.floats(0.1, 0.9), min_size=6, max_size=6))
def test_any_epoch_table_gives_counts_and_medians_that_agree(epochs, acc):
    runs = epochs[["backend", "seed"]].drop_duplicates().reset_index(drop=True)
    runs = runs.assign(status="ok", test_acc=acc[:len(runs)])
    summary = summarise(runs, epochs).set_index("backend")
    pairs = compare_pairs(runs, epochs, summary.reset_index())
    mask = trusted_mask(epochs)
    r = pairs.iloc[0]
    for side, name in (("a", "a:cpu"), ("b", "b:cpu")):
        t = epochs.loc[mask & (epochs["backend"] == name), "epoch_seconds"]
        assert r[f"trusted_epochs_{side}"] == len(t) == summary.at[name, "n_epochs_trusted"]
        assert summary.at[name, "median_epoch_seconds_trusted"] == pytest.approx(
            t.median() if len(t) else math.nan, nan_ok=True)
        assert (summary.at[name, "timing_quality"] == OK) <= (len(t) >= MIN_TIMED_EPOCHS)
    sentence = pair_sentences(pairs, {b for b in summary.index if summary.at[b, "timing_quality"] != OK})[0]
    says_speed = "Speed: " in sentence
    assert says_speed == all(summary.at[b, "timing_quality"] == OK for b in summary.index)
    assert ("nan" in sentence) is False


# ---------------------------------------------------------------- the next command

@pytest.mark.parametrize("flags", [
    [],
    ["--data-dir", "/data/my cifar", "--hidden-dims", "512,256", "--no-reference-timing", "--lockstep"],
    ["--train-subset", "none", "--threads", "1", "--backends", "numpy:cpu,torch:cpu", "--lr", "0.05"],
])
def test_the_next_command_runs_the_same_comparison_with_more_seeds(flags):
    """What the report proposes, pasted into a shell, is this run with five seeds and nothing else."""
    import shlex

    from bench.report import next_steps
    from bench.runner import parse

    config = parse(compare.COMMAND, [*flags, "--seeds", "7"]).config
    pairs = pd.DataFrame([{"a": "numpy:cpu", "b": "torch:cpu", "n_a": 1, "n_b": 1}])
    summary = pd.DataFrame({"backend": ["numpy:cpu", "torch:cpu"], "timing_quality": [OK, OK]})
    [step] = next_steps(config.to_dict(), summary, pairs)
    command = step.split("`")[1]
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "bench.compare"]
    again = parse(compare.COMMAND, words[3:]).config
    assert again.to_dict() == {**config.to_dict(), "seeds": [7, 42, 43, 44, 45]}


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(alphabet=st.characters(exclude_characters="\\"), min_size=1, max_size=20),
                      min_size=1, max_size=4))
def test_any_text_stays_in_its_cell_of_a_markdown_table(texts):
    """Every report's tables: a newline, a control character or a pipe in a cell (a backend's name, a
    folder's, an error) neither adds a row nor a column."""
    import re

    lines = md_table(pd.DataFrame({"name": texts, "value": [1.0] * len(texts), "note": texts})).split("\n")
    assert len(lines) == len(texts) + 2
    for line in lines:
        assert re.sub(r"\\\|", "", line).count("|") == 4, line
