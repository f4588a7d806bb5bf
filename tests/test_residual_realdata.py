"""R2 on real CIFAR-10: a deep residual ELU net trains at the reference lr 0.1, the plain one diverges.

Needs a CIFAR-10 copy (``MLPBENCH_DATA_DIR``); skipped without one.
"""

from __future__ import annotations

import pandas as pd
import pytest

from bench import compare
from conftest import real_data_dir

DEEP = ",".join(["128"] * 9)  # a stem and four blocks; the plain net has the same layers


@pytest.mark.realdata
@pytest.mark.parametrize("residual, expected", [(True, "ok"), (False, "diverged")])
def test_a_deep_residual_elu_net_trains_at_lr_0_1_where_the_plain_one_diverges(tmp_path, monkeypatch,
                                                                               residual, expected):
    data = real_data_dir()
    if data is None:
        pytest.skip("no CIFAR-10 copy: set MLPBENCH_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--data-dir", str(data), "--train-subset", "10000", "--epochs", "1", "--hidden-dims", DEEP,
            "--backends", "numpy:cpu,torch:cpu", "--no-reference-timing", "--seeds", "42", "--quiet",
            "--out", "o"]
    code = compare.main([*args, "--residual" if residual else "--no-residual"])
    runs = pd.read_csv(tmp_path / "o" / "runs.csv")
    assert set(runs["status"]) == {expected}, runs[["backend", "status"]]
    if residual:
        assert code == 0 and (runs["test_acc"] > 0.3).all()
