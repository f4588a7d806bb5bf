"""make_synthetic, and the data layer's promise not to import torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.data import make_synthetic
from bench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shapes_dtypes_and_raw_pixels():
    d = make_synthetic(50, 20, 30, seed=1)
    for split, n in (("train", 50), ("val", 20), ("test", 30)):
        x, y = d.split(split)
        raw = getattr(d, f"raw_{split}")
        assert x.shape == (n, 3072) and x.dtype == np.float32 and x.flags.c_contiguous
        assert y.shape == (n,) and y.dtype == np.int64 and set(y) <= set(range(10))
        assert raw.shape == (n, 3072) and raw.dtype == np.uint8
        # x is raw normalised with the recorded per-channel mean/std (CHW)
        for c in range(3):
            cols = slice(c * 1024, (c + 1) * 1024)
            expected = (raw[:, cols] / 255 - d.mean[c]) / d.std[c]
            np.testing.assert_allclose(x[:, cols], expected, atol=1e-5)
    assert d.n_classes == 10 and d.official is False and len(d.fingerprint) == 64


def test_other_sizes_are_normalised_as_one_channel():
    d = make_synthetic(40, 0, 8, n_features=17, n_classes=4, dtype="float64")
    assert d.x_train.shape == (40, 17) and d.x_val.shape == (0, 17) and d.x_train.dtype == np.float64
    assert d.raw_train.shape == (40, 17) and d.raw_train.dtype == np.uint8
    np.testing.assert_allclose(d.x_train, (d.raw_train / 255 - 0.5) / 0.25, rtol=1e-12)
    assert d.n_classes == 4 and set(d.y_train) == {0, 1, 2, 3}
    assert np.bincount(d.y_train).tolist() == [10, 10, 10, 10]  # balanced


def test_the_seed_fixes_everything():
    a, b, c = make_synthetic(30, 5, 5, seed=7), make_synthetic(30, 5, 5, seed=7), make_synthetic(30, 5, 5, seed=8)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not np.array_equal(a.x_train, c.x_train)


def test_it_is_learnable_not_noise():
    d = make_synthetic(500, 0, 500, n_features=64, seed=3)
    # nearest class mean, fitted on train, scored on test: far above the 10 % of chance
    centres = np.stack([d.x_train[d.y_train == k].mean(0) for k in range(10)])
    pred = np.argmin(((d.x_test[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (pred == d.y_test).mean() > 0.6
    # and the classes really differ: shuffled labels give chance
    shuffled = np.random.default_rng(0).permutation(d.y_train)
    centres = np.stack([d.x_train[shuffled == k].mean(0) for k in range(10)])
    pred = np.argmin(((d.x_test[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (pred == d.y_test).mean() < 0.3


@pytest.mark.parametrize("kw, field", [({"n_train": 0}, "n_train"), ({"n_classes": 1}, "n_classes"),
                                       ({"dtype": "int8"}, "dtype"), ({"n_features": 0}, "n_features")])
def test_bad_sizes_are_config_errors(kw, field):
    args = {"n_train": 10, "n_val": 0, "n_test": 0, **kw}
    with pytest.raises(ConfigError, match=f"invalid {field}"):
        make_synthetic(args.pop("n_train"), args.pop("n_val"), args.pop("n_test"), **args)


def test_the_data_layer_does_not_import_torch():
    code = (
        "import sys\n"
        "import bench.data, bench.data.__main__, bench.data.archive, bench.data.cache\n"
        "from bench.data import make_synthetic\n"
        "make_synthetic(20, 5, 5)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
