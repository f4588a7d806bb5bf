"""bench.claims: every verdict rule on fake measurements, the per-run numbers, one real --quick run,
bad input in one line, and SIGTERM keeping what was measured."""

from __future__ import annotations

import math
import signal

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error, started_until_epochs
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.claims.__main__ import main
from bench.claims.gradient_flow import VANISH, claim6
from bench.claims.landscape import claim7
from bench.claims.minimum import claim8a, claim8b
from bench.claims.residual_block import claim9a, claim9b
from bench.claims.training import REPORTED, claim1, claim2, claim3, claim4, claim5, per_run
from bench.claims.verdict import (
    INCONCLUSIVE,
    MIN_RUNS,
    MIN_SEEDS,
    NOT_SUPPORTED,
    SUPPORTED,
    TYPICAL,
    Verdict,
    provisional,
)
from bench.errors import UserError

VERDICTS = {SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE}


def around(centre: float, n: int = MIN_RUNS, spread: float = 0.002, seed: int = 0) -> np.ndarray:
    return centre + spread * np.random.default_rng(seed).standard_normal(n)


# ---------------------------------------------------------------- claims 1-5


def test_claim1_reported_figures_inside_and_outside_their_seed_distribution():
    inside = {"numpy": around(REPORTED["numpy"]), "torch": around(REPORTED["torch"], seed=1)}
    a, b, c = claim1(inside, "")
    assert (a.id, a.verdict, b.verdict) == ("1a", SUPPORTED, SUPPORTED)
    assert c.verdict == SUPPORTED and "significantly bigger in NumPy" in c.reason  # 2 points apart, spread 0.2
    outside = {"numpy": around(0.45), "torch": around(0.45, seed=1)}
    a, b, c = claim1(outside, "")
    assert a.verdict == b.verdict == NOT_SUPPORTED and "outside" in a.reason
    assert c.verdict == NOT_SUPPORTED and "not significant" in c.reason


def test_claim1_on_unofficial_data_says_so_and_cannot_test_the_absolute_figures():
    inside = {"numpy": around(REPORTED["numpy"]), "torch": around(REPORTED["torch"], seed=1)}
    verdicts = claim1(inside, "on the unofficial stand-in copy: ")
    assert [v.verdict for v in verdicts[:2]] == [INCONCLUSIVE, INCONCLUSIVE]
    assert all("unofficial stand-in" in v.reason for v in verdicts)
    assert "inside" in verdicts[0].reason  # what was measured is still said
    assert verdicts[2].verdict == SUPPORTED  # the gap: both on the same pixels


def test_claim1_gap_the_wrong_way_round_is_not_supported():
    acc = {"numpy": around(0.47), "torch": around(0.50, seed=1)}
    gap = claim1(acc, "")[2]
    assert gap.verdict == NOT_SUPPORTED and "significantly bigger in PyTorch" in gap.reason


def test_claims_2_and_3_count_the_runs_that_show_the_statement():
    n = MIN_RUNS
    enough = int(math.ceil(TYPICAL * n))
    falls = {"numpy": np.ones(n, bool), "torch": np.arange(n) < enough}
    assert claim2(falls).verdict == SUPPORTED
    falls["torch"] = np.arange(n) < enough - 1
    v = claim2(falls)
    assert v.verdict == NOT_SUPPORTED and f"torch {enough - 1}/{n}" in v.statistic
    rises = {"numpy": np.ones(n, bool), "torch": np.ones(n, bool)}
    dips = {"numpy": np.ones(n, int), "torch": np.full(n, 2)}
    v = claim3(rises, dips)
    assert v.verdict == SUPPORTED and "numpy 1.0, torch 2.0" in v.reason
    assert claim3(rises, {"numpy": np.zeros(n, int), "torch": dips["torch"]}).verdict == NOT_SUPPORTED  # monotone
    assert claim3({"numpy": np.zeros(n, bool), "torch": rises["torch"]}, dips).verdict == NOT_SUPPORTED


def test_claim4_splits_the_difference_with_the_lockstep_gap():
    drops = {"numpy": around(1.0, spread=0.01), "torch": around(1.1, spread=0.01, seed=1)}
    v = claim4(drops, np.array([1e-6, -2e-6, 3e-6]))
    assert v.verdict == SUPPORTED and "significantly bigger in PyTorch" in v.reason
    assert "in lock-step" in v.reason and "3 seeds" in v.reason and "framework" in v.reason
    same = {"numpy": around(1.0, spread=0.01), "torch": around(1.0, spread=0.01, seed=1)}
    v = claim4(same, np.array([]))
    assert v.verdict == NOT_SUPPORTED and "not split" in v.reason
    assert claim4({"numpy": drops["torch"], "torch": drops["numpy"]}, np.array([0.0])).verdict == NOT_SUPPORTED


def test_claim5_volatility():
    calm, jumpy = around(0.01, spread=0.002), around(0.03, spread=0.002, seed=1)
    assert claim5({"numpy": calm, "torch": jumpy}).verdict == SUPPORTED
    assert claim5({"numpy": jumpy, "torch": calm}).verdict == NOT_SUPPORTED


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, MIN_RUNS - 1), m=st.integers(MIN_RUNS, 30), values=st.floats(0, 1),
       official=st.booleans())
def test_claims_1_to_5_never_decide_on_fewer_runs_than_the_test_needs(n, m, values, official):
    """Whatever the values, a side with fewer than MIN_RUNS runs makes every rule inconclusive."""
    few, many = np.full(n, values), around(values, m)
    for pair in ({"numpy": few, "torch": many}, {"numpy": many, "torch": few}):
        bools = {k: v > -1 for k, v in pair.items()}
        verdicts = [*claim1(pair, "" if official else "on synthetic data: "), claim2(bools), claim3(bools, {k: v + 1 for k, v in pair.items()}),
                    claim4(pair, np.array([0.0])), claim5(pair)]
        assert all(v.verdict == INCONCLUSIVE and f"at least {MIN_RUNS}" in v.reason for v in verdicts
                   if v.id != ("1a" if pair["numpy"] is many else "1b"))


def test_per_run_numbers():
    runs = pd.DataFrame({"impl": ["numpy", "torch", "torch"], "seed": [1, 1, 2],
                         "status": ["ok", "ok", "diverged"], "test_acc": [0.5, 0.4, np.nan],
                         "init_val_loss": [2.3, 2.4, 2.3]})
    rows = []
    for impl, seed, loss, acc, val in (("numpy", 1, [2.0, 1.8, 1.7, 1.6], [0.3, 0.35, 0.33, 0.4], 1.9),
                                       ("torch", 1, [2.0, 1.9, 1.95, 1.8], [0.3, 0.31, 0.32, 0.33], 1.5)):
        rows += [{"impl": impl, "seed": seed, "epoch": e + 1, "train_loss": loss[e], "val_acc": acc[e],
                  "val_loss": val if e == 0 else 1.0} for e in range(4)]
    t = per_run(runs, pd.DataFrame(rows)).set_index("impl")
    assert len(t) == 2  # the diverged run does not count
    assert t.loc["numpy", "falls"] and not t.loc["torch", "falls"]
    assert t.loc["numpy", "rises"] and t.loc["numpy", "dips"] == 1 and t.loc["torch", "dips"] == 0
    assert t.loc["numpy", "dip_total"] == pytest.approx(0.02) and t.loc["torch", "dip_total"] == 0
    assert t.loc["numpy", "drop"] == pytest.approx(0.4) and t.loc["torch", "drop"] == pytest.approx(0.9)


# ---------------------------------------------------------------- claims 6-9


def ratios(plain: dict[int, float], residual: dict[int, float], seeds: int = MIN_SEEDS) -> pd.DataFrame:
    return pd.DataFrame([{"depth": d, "arch": arch, "seed": s, "first_last": r[d] * (1 + 0.01 * s)}
                         for arch, r in (("plain", plain), ("residual", residual)) for d in r
                         for s in range(seeds)])


def test_claim6_needs_a_depth_where_the_plain_net_vanishes():
    v = claim6(ratios({21: 0.5, 41: VANISH / 10}, {21: 7.0, 41: 6.5}))
    assert v.verdict == SUPPORTED and "depth 41" in v.reason
    assert claim6(ratios({21: 0.5, 41: VANISH / 10}, {21: 7.0, 41: VANISH / 5})).verdict == NOT_SUPPORTED
    v = claim6(ratios({21: 2.0, 41: 40.0}, {21: 7.0, 41: 7.0}))
    assert v.verdict == INCONCLUSIVE and "no depth up to 41" in v.reason
    assert claim6(ratios({21: 0.001}, {21: 7.0}, seeds=MIN_SEEDS - 1)).verdict == INCONCLUSIVE


def hessians(ratio: float, seeds: int = 5, noise: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for s in range(seeds):
        for stage in ("init", "trained"):
            plain = 10.0 * (1 + rng.random())
            rows += [{"seed": s, "stage": stage, "arch": "plain", "lambda_max": plain, "lambda_min": -1.0},
                     {"seed": s, "stage": stage, "arch": "residual",
                      "lambda_max": plain * ratio * (1 + noise * rng.standard_normal()), "lambda_min": -0.5}]
    return pd.DataFrame(rows)


def test_claim7_paired_over_seeds():
    v = claim7(hessians(0.3), "trained", "7b")
    assert v.verdict == SUPPORTED and v.n == 5 and "smaller" in v.reason and "|λ_min| is 0.5×" in v.reason
    assert claim7(hessians(3.0), "init", "7a").verdict == NOT_SUPPORTED
    assert claim7(hessians(1.0), "init", "7a").verdict == NOT_SUPPORTED
    t = hessians(0.3)
    t.loc[t["seed"] >= MIN_SEEDS - 1, "lambda_max"] = np.nan  # Lanczos did not converge: pair left out
    assert claim7(t, "init", "7a").verdict == INCONCLUSIVE


def tiny(mins: list[float], grad: float = 1e-8) -> pd.DataFrame:
    rows = []
    for s, m in enumerate(mins):
        rows += [{"seed": s, "point": "sgd", "grad_norm": np.nan, "exact_min": -0.2, "exact_max": 5.0,
                  "lanczos_min": -0.2, "lanczos_max": 5.0},
                 {"seed": s, "point": "minimum", "grad_norm": grad, "exact_min": m, "exact_max": 5.0,
                  "lanczos_min": m + 1e-9, "lanczos_max": 5.0}]
    return pd.DataFrame(rows)


def test_claim8_h1_at_minima_and_the_sgd_point():
    assert claim8a(tiny([1e-3, 2e-3, 1e-10]), 1e-6).verdict == SUPPORTED
    assert claim8a(tiny([1e-3, -1e-9 / 2, 1e-3]), 1e-6).verdict == SUPPORTED  # within the Lanczos error
    assert claim8a(tiny([1e-3, -1e-4, 1e-3]), 1e-6).verdict == NOT_SUPPORTED
    v = claim8a(tiny([1e-3] * 3, grad=1e-4), 1e-6)  # not at a minimum: nothing to test
    assert v.verdict == INCONCLUSIVE and "minima reached" in v.reason
    v = claim8b({"lambda_min": -1.8, "lambda_max": 16.0}, tiny([1e-3] * 3), 1e-8)
    assert v.verdict == NOT_SUPPORTED and "saddle" in v.reason and "3 of 3" in v.reason
    assert claim8b({"lambda_min": 0.01, "lambda_max": 16.0}, tiny([1e-3]), 1e-8).verdict == SUPPORTED
    assert claim8b({"lambda_min": math.nan, "lambda_max": 16.0}, tiny([]), 1e-8).verdict == INCONCLUSIVE


def test_claim9_rules():
    assert claim9a(0.0, "refused", "broadcast").verdict == NOT_SUPPORTED
    assert claim9a(1e-3, "refused", "broadcast").verdict == INCONCLUSIVE
    assert claim9a(0.0, "", "broadcast").verdict == INCONCLUSIVE
    rel = {"R1": 1e-10, "write-up: dL/dY·W + I": 0.9, "through the layers alone": 0.8}
    assert claim9b(rel).verdict == NOT_SUPPORTED
    assert claim9b({**rel, "R1": 0.5}).verdict == INCONCLUSIVE  # the check itself is broken


def test_provisional_says_so():
    v = provisional(Verdict("2", "m", 10, "s", "", SUPPORTED, "because"))
    assert v.verdict == SUPPORTED and v.reason.startswith("provisional (--quick")


# ---------------------------------------------------------------- the command

SMALL = ["--quick", "--dataset", "synthetic", "--train-subset", "300", "--val-size", "100", "--epochs", "2",
         "--hidden-dims", "16", "--batch-size", "50", "--seeds", "1", "2", "3", "--depths", "3", "5", "--width", "8",
         "--landscape-dims", "8,8,8", "--batch-examples", "64", "--check-examples", "200",
         "--check-features", "12", "--check-hidden", "4", "--threads", "1"]


def test_quick_run_end_to_end(cli):
    proc = cli("bench.claims", *SMALL, "--out", "c")
    assert proc.returncode == 0, proc.stderr
    out = proc.cwd / "c"
    table = pd.read_csv(out / "claims.csv", keep_default_na=False)
    assert list(table.columns) == ["id", "measured", "n", "statistic", "ci_or_p", "verdict", "reason"]
    assert list(table["id"]) == ["1a", "1b", "1c", "2", "3", "4", "5", "6", "7a", "7b", "8a", "8b", "9a", "9b"]
    assert set(table["verdict"]) <= VERDICTS and table["reason"].str.startswith("provisional").all()
    data_claims = table["id"].str[0].isin(list("123457"))  # on synthetic data: a smoke test (SG09b)
    assert (table.loc[data_claims, "verdict"] == INCONCLUSIVE).all()
    assert table.loc[data_claims, "reason"].str.contains("on synthetic data, a smoke test").all()
    assert not table.loc[~data_claims, "reason"].str.contains("synthetic").any()
    assert list(table.loc[table["id"].isin(["9a", "9b"]), "verdict"]) == [NOT_SUPPORTED] * 2
    assert table.loc[table["id"] == "8a", "verdict"].item() == SUPPORTED
    md = (out / "claims.md").read_text()
    assert "Every verdict is provisional" in md and "their verdicts are inconclusive" in md
    for n in range(1, 10):
        assert f"## Claim {n}:" in md and f"](claim{n}.png)" in md and (out / f"claim{n}.png").stat().st_size
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs["impl"]) == {"numpy", "torch"}
    assert len(pd.read_csv(out / "lockstep.csv")) == 1
    lock = pd.read_csv(out / "lockstep.csv").iloc[0]  # the same weights: the same loss before the first step
    assert lock["init_val_loss_torch"] == pytest.approx(lock["init_val_loss_numpy"], rel=1e-5)
    assert {"env.json", "per_run.csv", "claim6_ratios.csv", "claim7_hessian.csv", "claim8_tiny.csv",
            "claim9_gradients.csv"} <= {p.name for p in out.iterdir()}
    assert "results: c" in proc.stdout and "claim 9b: not supported" in proc.stderr


def test_only_some_claims(tmp_path, monkeypatch):
    """Claim 8 alone trains the one reference run it needs; claims 1-5's runs are not made."""
    monkeypatch.chdir(tmp_path)
    assert main([*SMALL, "--only", "9,8", "--out", "c", "--quiet"]) == 0
    assert list(pd.read_csv("c/claims.csv")["id"]) == ["8a", "8b", "9a", "9b"]
    assert not (tmp_path / "c" / "runs.csv").exists()
    tiny = pd.read_csv("c/claim8_tiny.csv")
    assert (tiny.loc[tiny["point"] == "minimum", "grad_norm"] <= 1e-6).all()


@pytest.mark.parametrize("args, needle", [
    (["--only", "0"], "invalid only"),
    (["--k", "1000000"], "invalid k: 1000000"),  # claim 7's Lanczos: capped as in bench.hessian (N-F8)
    (["--max-matvecs", "100000000"], "invalid max_matvecs"),
    (["--only", "4", "4"], "invalid only"),
    (["--theory-seeds", "4"], "invalid theory_seeds: 4"),
    (["--landscape-dims", "8,4"], "invalid landscape_dims"),
    (["--depths", "4"], "invalid depths"),
    (["--check-examples", "10"], "invalid check_examples"),
    (["--tiny-weight-decay", "0"], "invalid tiny_weight_decay"),
])
def test_bad_input_is_a_user_error_before_any_work(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=needle):
        main([*SMALL, *args, "--out", "c"])
    assert not (tmp_path / "c").exists()


def test_bad_input_is_one_line_exit_2(cli):
    proc = cli("bench.claims", *SMALL, "--only", "1,10", "--out", "c")
    assert_one_line_error(proc, "invalid only", "from 1 to 9")
    assert not (proc.cwd / "c").exists()


def test_sigterm_keeps_the_runs_so_far_and_exits_143(tmp_path):
    with started_until_epochs(["bench.claims", *SMALL, "--only", "1", "--epochs", "60", "--out", "t"],
                              tmp_path, tmp_path / "t" / "epochs.csv", n=1) as proc:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert len(pd.read_csv(tmp_path / "t" / "runs.csv")) >= 1
    table = pd.read_csv(tmp_path / "t" / "claims.csv")
    assert list(table["id"]) == ["1a", "1b", "1c"] and (table["verdict"] == INCONCLUSIVE).all()
    assert "This run was interrupted (SIGTERM)" in (tmp_path / "t" / "claims.md").read_text()
