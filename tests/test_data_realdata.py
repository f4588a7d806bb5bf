"""The real CIFAR-10 copy at ../shared/cifar10 (or $MLPBENCH_DATA_DIR), decoded once per module.

Skipped with a reason when no copy is present. The decoded cache lives in one
temporary folder shared by this module's tests, never in the user's cache.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.data.loader import find_source, load_decoded, make_dataset

pytestmark = pytest.mark.realdata

SHARED = Path(__file__).resolve().parents[2] / "shared" / "cifar10"
# the JPEG-derived copy in ../shared/cifar10 (its README gives the md5)
SHARED_MD5 = "b73175704595a0e5e028670aca210ca2"
SHARED_FINGERPRINT = "5e415d2255781226156a1c59b384dc212e6aec5be5556b9a14436697374b909e"


def _data_dir() -> Path | None:
    for candidate in (os.environ.get("MLPBENCH_DATA_DIR"), SHARED):
        if candidate and find_source(Path(candidate)) is not None:
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    data_dir = _data_dir()
    if data_dir is None:
        pytest.skip(f"no CIFAR-10 copy at $MLPBENCH_DATA_DIR or {SHARED}")
    cache = tmp_path_factory.mktemp("realdata-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPBENCH_CACHE_DIR", str(cache))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load_decoded(data_dir, download=False)
        yield data_dir, cache, loaded, [str(w.message) for w in caught]


def test_the_real_archive_has_cifar10_sizes_and_balance(real):
    _data_dir, _cache, loaded, _warnings = real
    d = loaded.decoded
    assert d.train_x.shape == (50_000, 3072) and d.test_x.shape == (10_000, 3072)
    assert np.bincount(d.train_y, minlength=10).tolist() == [5000] * 10
    assert np.bincount(d.test_y, minlength=10).tolist() == [1000] * 10
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"


def test_the_default_split_is_45000_5000_10000(real):
    _data_dir, _cache, loaded, _warnings = real
    ds = make_dataset(loaded)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (45_000, 5_000, 10_000)
    assert ds.x_train.dtype == np.float32 and ds.x_train.flags.c_contiguous
    assert abs(float(ds.x_val.mean())) < 0.2  # the reference mean/std centre the data
    assert ds.fingerprint == loaded.fingerprint


def test_the_shared_copy_is_unofficial_with_a_known_fingerprint(real):
    _data_dir, _cache, loaded, messages = real
    if loaded.md5 != SHARED_MD5:
        pytest.skip("not the shared JPEG-derived copy")
    assert loaded.official is False
    assert any("not the official" in m and SHARED_MD5 in m for m in messages)
    assert loaded.fingerprint == SHARED_FINGERPRINT


def test_the_summary_command_on_the_real_copy(real, cli):
    data_dir, cache, loaded, _warnings = real
    out = cli("bench.data", "--data-dir", str(data_dir), env={"MLPBENCH_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stderr
    assert "train 45000, val 5000, test 10000 (archive: 50000 training + 10000 test images)" in out.stdout
    assert f"fingerprint  sha256 {loaded.fingerprint}" in out.stdout
    assert "(reused)" in out.stdout  # the module's cache, decoded once
    total = next(line for line in out.stdout.splitlines() if line.startswith("total")).split()
    assert total[1:] == ["50000", "45000", "5000", "10000"]
