"""bench.timing driven by a fake backend and a fake clock: which epochs can be trusted, and why not.

The fake backend's steps advance a fake clock by a set time and its GEMM-only
reference returns scripted times, so every ratio below is exact.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.backends.api import StepRecords
from bench.config import Config
from bench.data import make_synthetic
from bench.run import epoch_order, run_one
from bench.roofline import step_gemms
from bench.timing import GatherTime, GemmBrackets, OK, epoch_flags, ratio_floor, summarise_timing, trusted_mask

N_TRAIN, BATCH = 64, 16  # 4 steps per epoch
STEPS = N_TRAIN // BATCH


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Each step costs ``step_seconds`` on the clock; the GEMM-only epochs cost what ``gemm`` says."""

    impl, device = "fake", "cpu"

    def __init__(self, clock: FakeClock, step_seconds: float, gemm: list[float]):
        self.clock, self.step_seconds, self.gemm = clock, step_seconds, list(gemm)
        self.calls = 0
        self._n = 0

    def load_data(self, data): pass
    def init_model(self, seed): pass
    def device_indices(self, order): return np.asarray(order)
    def synchronize(self): pass
    def evaluate(self, split): return 1.0, 0.5
    def export_state(self): return {}
    def import_state(self, state): pass
    def describe(self): return {}
    def peak_memory_bytes(self): return None

    def train_batch(self, idx):
        self.clock.now += self.step_seconds
        self._n += 1

    def pop_step_records(self):
        n, self._n = self._n, 0
        return StepRecords(losses=np.full(n, 1.0), correct=n, seen=n * BATCH)

    def gemm_seconds(self, shapes, repeats):
        if repeats < STEPS:  # the warm-up round
            return 0.0
        value = self.gemm[min(self.calls, len(self.gemm) - 1)]
        self.calls += 1
        return value


def timed(step_seconds: float, gemm: list[float], epochs: int, fixed_step: float = 0.0) -> pd.DataFrame:
    """The epoch rows of one fake run with the GEMM-only brackets of bench.timing."""
    clock = FakeClock()
    backend = FakeBackend(clock, step_seconds, gemm)
    data = make_synthetic(N_TRAIN, 8, 8, n_features=4, seed=0)
    config = Config(hidden_dims=[4], batch_size=BATCH, epochs=epochs, dataset="synthetic",
                    train_subset=N_TRAIN, reference_timing=False)  # the test's own brackets
    hook = GemmBrackets(step_gemms(4, [4], 10, BATCH), STEPS, fixed_step)
    result = run_one(backend, config, data, 0, hooks=[hook], clock=clock, warmup_steps=0)
    return pd.DataFrame(result.epochs)


def test_a_steady_run_is_ok():
    # every epoch 4 x 0.15 s = 0.6 s against a GEMM-only 0.4 s: ratio 1.5, floor 1 + 0.01 / 0.1 = 1.1
    epochs = timed(0.15, [0.4], epochs=5, fixed_step=0.01)
    assert epochs["epoch_seconds"].tolist() == pytest.approx([0.6] * 5)
    assert epochs["epoch_to_gemm"].tolist() == pytest.approx([1.5] * 5)
    assert epochs["ratio_floor"].tolist() == pytest.approx([1.1] * 5)
    assert set(epochs["timing_quality"]) == {OK}
    s = summarise_timing(epochs)
    assert s["timing_quality"] == OK
    assert (s["n_epochs_all"], s["n_epochs_trusted"]) == (5, 4)  # the first epoch is left out
    assert s["epoch_to_gemm_trusted"] == pytest.approx(1.5)
    assert s["epoch_to_gemm_min_trusted"] == pytest.approx(1.5)
    assert s["median_epoch_seconds_trusted"] == pytest.approx(0.6) == s["median_epoch_seconds_all"]


def test_an_epoch_faster_than_its_gemm_only_bracket_is_flagged():
    # epoch 3 is bracketed by two slow GEMM-only times (load arrived): ratio 0.6 / 0.8 = 0.75
    epochs = timed(0.15, [0.4, 0.4, 0.4, 0.8, 0.8, 0.4, 0.4], epochs=6)
    q = epochs.set_index("epoch")["timing_quality"]
    assert epochs.set_index("epoch")["epoch_to_gemm"][4] == pytest.approx(0.75)
    assert q[4].startswith("ratio 0.75 below 1")
    assert "before and after differ by 100%" in q[3] and "differ by 100%" in q[5]
    assert q[1] == q[2] == q[6] == OK
    s = summarise_timing(epochs)
    # the summary keeps the trusted epochs (2 and 6) and says there are too few of them
    assert s["n_epochs_trusted"] == 2 and s["epoch_to_gemm_trusted"] == pytest.approx(1.5)
    assert "too few trusted epochs (2 < 3)" in s["timing_quality"]
    assert list(trusted_mask(epochs)) == [False, True, False, False, False, True]


def test_a_ratio_below_its_fixed_cost_floor_is_flagged():
    # fixed cost 0.05 s a step against a GEMM-only step of 0.1 s: the floor is 1.5; the epochs reach 1.25
    epochs = timed(0.125, [0.4], epochs=2, fixed_step=0.05)
    assert set(epochs["timing_quality"]) == {"ratio 1.25 below its fixed-cost floor 1.5"}


def test_every_epoch_flagged_gives_no_trusted_figure_and_says_why():
    epochs = timed(0.05, [0.4], epochs=4)  # 0.2 s against 0.4 s: all below 1
    s = summarise_timing(epochs)
    assert s["n_epochs_trusted"] == 0 and not trusted_mask(epochs).any()
    assert math.isnan(s["median_epoch_seconds_trusted"]) and math.isnan(s["epoch_to_gemm_trusted"])
    assert s["median_epoch_seconds_all"] == pytest.approx(0.2) and s["n_epochs_all"] == 4
    assert s["timing_quality"] == ("no trusted epoch (3 of 3 epochs after the first left out: "
                                   "3 flagged)")


def test_loaded_epochs_are_left_out_as_not_nominal():
    # epochs 4 and 5 run with the whole machine 40 % slower, steps and products alike
    clock = FakeClock()
    backend = FakeBackend(clock, 0.15, [0.4, 0.4, 0.4, 0.4, 0.56, 0.56, 0.56])
    data = make_synthetic(N_TRAIN, 8, 8, n_features=4, seed=0)
    config = Config(hidden_dims=[4], batch_size=BATCH, epochs=6, dataset="synthetic", train_subset=N_TRAIN,
                    reference_timing=False)
    hook = GemmBrackets(step_gemms(4, [4], 10, BATCH), STEPS)
    orig = backend.train_batch

    def slower(idx):
        orig(idx)
        if backend.calls >= 5:  # after the 4th bracket: the load has arrived
            clock.now += 0.06
    backend.train_batch = slower
    epochs = pd.DataFrame(run_one(backend, config, data, 0, hooks=[hook], clock=clock,
                                  warmup_steps=0).epochs)
    s = summarise_timing(epochs)
    assert s["n_epochs_all"] == 6 and s["n_epochs_trusted"] == 2  # epochs 2 and 3 at nominal speed
    assert s["median_epoch_seconds_trusted"] == pytest.approx(0.6)
    assert "not at nominal machine speed" in s["epochs_left_out"]


def test_the_gather_only_time_is_the_epochs_gathers_on_the_epoch_clock():
    """Each gather costs 0.02 s on the fake clock: 4 a epoch, on the rows the epoch trained on."""
    clock = FakeClock()
    backend = FakeBackend(clock, 0.15, [0.4])
    gathered = []

    def gather(idx):
        gathered.append(np.asarray(idx))
        clock.now += 0.02
    backend.gather = gather
    data = make_synthetic(N_TRAIN, 8, 8, n_features=4, seed=0)
    config = Config(hidden_dims=[4], batch_size=BATCH, epochs=5, dataset="synthetic", train_subset=N_TRAIN,
                    reference_timing=False)  # the test's own hooks
    hooks = [GemmBrackets(step_gemms(4, [4], 10, BATCH), STEPS), GatherTime(N_TRAIN, BATCH, clock)]
    epochs = pd.DataFrame(run_one(backend, config, data, 7, hooks=hooks, clock=clock, warmup_steps=0).epochs)
    assert epochs["gather_seconds"].tolist() == pytest.approx([0.08] * 5)
    assert epochs["epoch_seconds"].tolist() == pytest.approx([0.6] * 5)  # not inside the epoch's clock
    np.testing.assert_array_equal(np.concatenate(gathered[-STEPS:]), epoch_order(7, 5, N_TRAIN))
    assert summarise_timing(epochs)["gather_seconds_trusted"] == pytest.approx(0.08)
    # a backend without a gather by row index (a DataLoader peer): no figure, and no call
    backend.gather = None
    epochs = pd.DataFrame(run_one(backend, config, data, 7, hooks=hooks, clock=clock, warmup_steps=0).epochs)
    assert epochs["gather_seconds"].isna().all() and math.isnan(summarise_timing(epochs)["gather_seconds_trusted"])


def test_a_wide_spread_flags_the_summary():
    rows = [{"epoch": e, "epoch_seconds": t, "gemm_seconds": 1.0, "epoch_to_gemm": t,
             "ratio_floor": 1.0, "fixed_step_seconds": 0.0, "timing_quality": OK}
            for e, t in enumerate([1.5, 1.2, 1.3, 2.4, 1.25, 2.6], 1)]
    s = summarise_timing(pd.DataFrame(rows))
    assert "spread too wide" in s["timing_quality"]


def test_without_reference_timing_only_the_count_and_spread_are_checked():
    rows = pd.DataFrame({"epoch": [1, 2, 3, 4], "epoch_seconds": [0.5, 0.4, 0.41, 0.4]})
    s = summarise_timing(rows)
    assert s["timing_quality"] == OK and "epoch_to_gemm_trusted" not in s
    assert s["n_epochs_trusted"] == 3 and s["median_epoch_seconds_trusted"] == pytest.approx(0.4)


def test_floor_and_flags_on_their_own():
    assert ratio_floor(0.001, 0.5, 100) == pytest.approx(1.2)
    assert math.isnan(ratio_floor(math.nan, 0.5, 100))
    assert epoch_flags({"epoch_to_gemm": 1.3, "ratio_floor": 1.2, "gemm_before_seconds": 1.0,
                        "gemm_after_seconds": 1.2}) == []
    assert epoch_flags({"epoch_to_gemm": 0.9})[0].startswith("ratio 0.9 below 1")


def test_compare_words_a_flagged_timing_in_every_output(tmp_path, monkeypatch, capsys):
    """A backend whose epochs beat its GEMM-only time: the CSVs, the table, the report and the plot
    say it is flagged, and no ratio below 1 is printed as a finding."""
    from bench import compare
    from bench.backends import IMPLS, Impl
    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    monkeypatch.setitem(IMPLS, "slowgemm", Impl("fake_backends", "SlowGemmBackend", None, False))
    monkeypatch.chdir(tmp_path)
    code = compare.main(["--dataset", "synthetic", "--train-subset", "512", "--val-size", "128",
                         "--batch-size", "64", "--hidden-dims", "16", "--epochs", "3", "--quiet",
                         "--seeds", "42",
                         "--backends", "slowgemm:cpu,numpy:cpu", "--out", "o"])
    assert code == 0
    printed = capsys.readouterr().out
    epochs = pd.read_csv(tmp_path / "o" / "epochs.csv")
    slow = epochs[epochs["backend"] == "slowgemm:cpu"]
    assert slow["timing_quality"].str.contains("below 1").all()
    summary = pd.read_csv(tmp_path / "o" / "summary.csv").set_index("backend")
    assert summary.loc["slowgemm:cpu", "timing_quality"] != OK
    table = next(line for line in printed.splitlines() if line.startswith("| slowgemm:cpu"))
    assert "| 0 of 3 |" in table and table.rstrip(" |").endswith("flagged")
    assert "timing flagged: slowgemm:cpu: the timing is not a finding" in printed
    report = (tmp_path / "o" / "report.md").read_text()
    assert "**Timing flagged:**" in report and "slowgemm:cpu: the timing is not a finding" in report
    pair = next(line for line in report.splitlines() if line.startswith("- slowgemm:cpu vs numpy:cpu"))
    assert "No speed verdict: slowgemm:cpu" in pair
    assert (tmp_path / "o" / "epoch_time.png").exists()


@pytest.mark.parametrize("every, steps", [(3, [3, 4, 7, 8]), (100, [4, 8]), (None, [])])
def test_eval_every_evaluates_inside_epochs_outside_the_clock(every, steps):
    clock = FakeClock()
    backend = FakeBackend(clock, 0.25, [0.4])
    data = make_synthetic(N_TRAIN, 8, 8, n_features=4, seed=0)
    config = Config(hidden_dims=[4], batch_size=BATCH, epochs=2, dataset="synthetic",
                    train_subset=N_TRAIN, eval_every=every, reference_timing=False)
    result = run_one(backend, config, data, 0, clock=clock, warmup_steps=0)
    assert [e["step"] for e in result.evals] == steps
    assert [e["epoch_seconds"] for e in result.epochs] == pytest.approx([1.0, 1.0])  # 4 steps each
