"""bench.epoch_ratio runs end to end on a tiny config and prints a ratio per backend."""

from __future__ import annotations

from bench import epoch_ratio
from conftest import assert_one_line_error


def test_prints_a_median_ratio_per_backend(capsys):
    code = epoch_ratio.main(["--dataset", "synthetic", "--train-subset", "256", "--batch-size", "64",
                             "--hidden-dims", "8", "--epochs", "2", "--threads", "1",
                             "--backends", "numpy:cpu,torch:cpu"])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("numpy:cpu", "torch:cpu"):
        assert f"{name} epoch 2:" in out
        line = next(s for s in out.splitlines() if s.startswith(f"{name}: median"))
        assert float(line.split("ratio ")[1].split()[0]) > 0
        nominal = next(s for s in out.splitlines() if s.startswith(f"{name}: median") and "nominal" in s)
        assert float(nominal.split("ratio ")[1].split()[0]) > 0
        fixed = next(s for s in out.splitlines() if s.startswith(f"{name}: fixed cost of a step"))
        micros = float(fixed.split("step ")[1].split(" us")[0])
        share = float(fixed.split("= ")[1].split(" of")[0])
        floor = float(fixed.rsplit("below ", 1)[1])
        assert micros > 0 and share > 0
        assert abs(floor - (1 + share)) < 2e-3  # the floor is 1 + fixed / GEMM-only step


def test_bad_flag_is_one_line(cli):
    assert_one_line_error(cli("bench.epoch_ratio", "--lr", "0"), "lr")


def test_nominal_epochs_keep_those_near_the_fastest_gemm_time():
    assert epoch_ratio.nominal_epochs([1.0, 1.09, 1.1, 0.95, 2.0]) == [0, 1, 3]  # 1.1 > 1.15 * 0.95
    assert epoch_ratio.nominal_epochs([0.5]) == [0]
