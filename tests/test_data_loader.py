"""load_dataset beyond the formats: cache, split, normalisation, lookup, download, summary command."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.data import default_cache_dir, default_data_dir, formats, load_dataset, loader
from bench.data.loader import load_decoded, normalise, split_indices
from bench.errors import ConfigError, UserError
from conftest import assert_one_line_error

N_PER_BATCH, N_TEST = 20, 30
MEAN, STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLPBENCH_DATA_DIR", raising=False)
    return tmp_path / "cache"


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 5 * N_PER_BATCH
    return {"train_x": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "train_y": rng.integers(0, 10, n).astype(np.uint8),
            "test_x": rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8),
            "test_y": rng.integers(0, 10, N_TEST).astype(np.uint8)}


def write_binary_folder(data_dir: Path, a) -> Path:
    """The binary layout, extracted: five training batches, a test batch, the class names."""
    folder = data_dir / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = np.split(a["train_x"], 5), np.split(a["train_y"], 5)
    for name, x, y in [*((f"data_batch_{i + 1}", xs[i], ys[i]) for i in range(5)),
                       ("test_batch", a["test_x"], a["test_y"])]:
        (folder / f"{name}.bin").write_bytes(np.concatenate([y[:, None], x], axis=1).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    return folder


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kw)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    write_binary_folder(tmp_path / "data", tiny_arrays())
    return tmp_path / "data"


# ---------------------------------------------------------------- cache


def cache_files(cache_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in cache_dir.rglob("*") if p.is_file()}


def test_the_second_load_reuses_the_cache_and_writes_nothing_next_to_the_source(data_dir, cache_dir):
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    first = quiet(load_decoded, data_dir)
    second = quiet(load_decoded, data_dir)
    assert (first.cache_status, second.cache_status) == ("written", "reused")
    assert first.cache_entry == second.cache_entry and cache_dir in first.cache_entry.parents
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    assert second.fingerprint == first.fingerprint
    for name in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(second.decoded, name), getattr(first.decoded, name))


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_a_corrupted_cache_is_detected_and_rebuilt(data_dir, cache_dir, damage):
    first = quiet(load_dataset, data_dir, val_size=10)
    files = cache_files(cache_dir)
    victim = files["manifest.json" if damage == "manifest" else "train_x.npy"]
    original = victim.read_bytes()
    if damage == "flip":
        raw = bytearray(original)
        raw[-1000] ^= 0xFF  # a pixel inside the array data
        victim.write_bytes(bytes(raw))
    elif damage == "truncate":
        victim.write_bytes(original[:-3072])
    else:
        victim.write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(data_dir, val_size=10)
    assert any("the decoded cache is corrupt" in str(w.message) for w in caught)
    assert victim.read_bytes() == original  # rewritten, not used
    for name in ("x_train", "y_train", "x_val", "x_test", "raw_train", "raw_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert quiet(load_decoded, data_dir).cache_status == "reused"


def test_a_stale_cache_is_rebuilt_when_the_source_changes(data_dir, cache_dir):
    first = quiet(load_dataset, data_dir, val_size=10)
    b = tiny_arrays(seed=1)
    write_binary_folder(data_dir, b)  # same files, new contents
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset(data_dir, val_size=10)
    assert not any("corrupt" in str(w.message) for w in caught)  # stale is not corrupt
    np.testing.assert_array_equal(again.raw_test, b["test_x"])
    assert again.fingerprint != first.fingerprint


def test_an_unwritable_cache_dir_warns_and_still_loads(data_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(blocker))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = load_dataset(data_dir, val_size=10)
    messages = [str(w.message) for w in caught]
    assert any("cannot write the decoded cache" in m for m in messages)
    assert not any("corrupt" in m for m in messages)
    assert d.x_test.shape == (N_TEST, 3072)


# ---------------------------------------------------------------- split and normalisation


def test_the_split_is_fixed_by_the_seed(data_dir):
    a = quiet(load_dataset, data_dir, val_size=10, seed=1)
    b = quiet(load_dataset, data_dir, val_size=10, seed=1)
    c = quiet(load_dataset, data_dir, val_size=10, seed=2)
    np.testing.assert_array_equal(a.raw_val, b.raw_val)
    np.testing.assert_array_equal(a.raw_train, b.raw_train)
    assert not np.array_equal(a.raw_val, c.raw_val)
    train, val = split_indices(100, 10, seed=1)
    np.testing.assert_array_equal(val, np.sort(np.random.default_rng(1).permutation(100)[:10]))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # original order kept
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    t = tiny_arrays()
    np.testing.assert_array_equal(a.raw_val, t["train_x"][val])
    np.testing.assert_array_equal(a.y_train, t["train_y"][train].astype(np.int64))
    np.testing.assert_array_equal(a.raw_test, t["test_x"])  # the test set is untouched


def test_train_subset_keeps_the_first_rows_of_the_training_split(data_dir):
    full = quiet(load_dataset, data_dir, val_size=10)
    sub = quiet(load_dataset, data_dir, val_size=10, train_subset=7)
    assert (len(full.y_train), len(sub.y_train)) == (90, 7)
    np.testing.assert_array_equal(sub.x_train, full.x_train[:7])
    np.testing.assert_array_equal(sub.x_val, full.x_val)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-14)])
def test_normalisation_is_per_channel_in_chw_order(data_dir, dtype, tol):
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    d = quiet(load_dataset, data_dir, val_size=10, mean=mean, std=std, dtype=dtype)
    for x, y, raw in [(d.x_train, d.y_train, d.raw_train), (d.x_val, d.y_val, d.raw_val),
                      (d.x_test, d.y_test, d.raw_test)]:
        assert x.dtype == np.dtype(dtype) and x.flags.c_contiguous and x.shape == (len(y), 3072)
        assert y.dtype == np.int64 and raw.dtype == np.uint8 and raw.flags.c_contiguous
        for c in range(3):
            cols = slice(c * 1024, (c + 1) * 1024)
            expected = (raw[:, cols].astype(np.float64) / 255 - mean[c]) / std[c]
            np.testing.assert_allclose(x[:, cols], expected, rtol=0, atol=tol * 10)
    assert d.mean == mean and d.std == std


def test_normalise_maps_known_pixels():
    raw = np.zeros((2, 3072), np.uint8)
    raw[0, :1024], raw[0, 1024:2048], raw[0, 2048:] = 255, 0, 128
    x = normalise(raw, MEAN, STD, "float32")
    assert x[0, 0] == pytest.approx((1 - MEAN[0]) / STD[0], rel=1e-6)
    assert x[0, 1024] == pytest.approx(-MEAN[1] / STD[1], rel=1e-6)
    assert x[0, 3071] == pytest.approx((128 / 255 - MEAN[2]) / STD[2], rel=1e-6)
    assert x[1, 0] == pytest.approx(-MEAN[0] / STD[0], rel=1e-6)


@pytest.mark.parametrize("kw, field", [({"dtype": "float16"}, "dtype"), ({"val_size": -1}, "val_size"),
                                       ({"seed": -3}, "seed"), ({"train_subset": 0}, "train_subset"),
                                       ({"std": (0.2, 0.0, 0.2)}, "std"), ({"mean": (0.5,)}, "mean")])
def test_bad_arguments_are_rejected_before_any_work(tmp_path, kw, field):
    with pytest.raises(ConfigError, match=f"invalid {field}"):
        load_dataset(tmp_path / "nothing-here", download=False, **kw)


def test_val_size_must_leave_training_images(data_dir):
    with pytest.raises(ConfigError, match=r"invalid val_size: 100 \(allowed: an integer from 0 to 99"):
        quiet(load_dataset, data_dir, val_size=100)


# ---------------------------------------------------------------- where the data is looked for


def test_lookup_order_argument_then_environment_then_default(tmp_path, monkeypatch):
    a, b = tiny_arrays(0), tiny_arrays(1)
    write_binary_folder(tmp_path / "arg", a)
    write_binary_folder(tmp_path / "env", b)
    monkeypatch.setenv("MLPBENCH_DATA_DIR", str(tmp_path / "env"))
    np.testing.assert_array_equal(quiet(load_dataset, tmp_path / "arg", val_size=1).raw_test, a["test_x"])
    np.testing.assert_array_equal(quiet(load_dataset, None, val_size=1).raw_test, b["test_x"])
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("MLPBENCH_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "mlpbench" / "data"
    with pytest.raises(UserError, match=str(tmp_path / "xdg" / "mlpbench" / "data")):
        load_dataset(download=False)


def test_default_cache_dir(tmp_path, monkeypatch):
    assert default_cache_dir() == tmp_path / "cache"  # $MLPBENCH_CACHE_DIR, set by the fixture
    monkeypatch.delenv("MLPBENCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mlpbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mlpbench"


# ---------------------------------------------------------------- download


UNREACHABLE = "http://127.0.0.1:9/cifar-10-binary.tar.gz"  # the discard port: connection refused


@pytest.mark.parametrize("given", [True, False])
def test_offline_says_where_it_looked_what_it_tried_and_how_to_fix_it(tmp_path, monkeypatch, given):
    monkeypatch.setattr(loader, "DOWNLOAD_URL", UNREACHABLE)
    monkeypatch.delenv("MLPBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    empty = tmp_path / "empty" if given else tmp_path / "xdg" / "mlpbench" / "data"
    if given:
        empty.mkdir()
    with pytest.raises(UserError) as err:
        load_dataset(empty if given else None, progress=False)
    message = str(err.value)
    assert "\n" not in message
    for expected in [str(empty / "cifar-10-binary.tar.gz"), str(empty / "cifar-10-batches-bin"),
                     str(empty / "cifar-10-python.tar.gz"), str(empty / "cifar-10-batches-py"),
                     UNREACHABLE, "--dataset synthetic"]:
        assert expected in message
    # the advice fits what was given: a folder to fill, or where to point the suite
    assert ("--data-dir" in message) is not given and (f"into {empty}" in message) is given
    assert empty.exists() is given  # a folder made for the download is not left behind; yours stays
    assert not (empty / "cifar-10-binary.tar.gz").exists()


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_data_dir_that_does_not_exist_is_one_line_and_nothing_is_made(tmp_path, monkeypatch, how):
    monkeypatch.setattr(loader, "DOWNLOAD_URL", UNREACHABLE)
    typo = tmp_path / "typo" / "path"
    if how == "environment":
        monkeypatch.setenv("MLPBENCH_DATA_DIR", str(typo))
    with pytest.raises(UserError) as err:
        load_dataset(typo if how == "argument" else None, progress=False)
    message = str(err.value)
    assert f"data dir {typo} does not exist" in message and "--data-dir" not in message
    assert "download" in message and UNREACHABLE not in message  # nothing was tried
    assert not (tmp_path / "typo").exists()


def test_no_download_says_downloads_are_off(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "DOWNLOAD_URL", UNREACHABLE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="downloads are off"):
        load_dataset(tmp_path / "empty", download=False)


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server (127.0.0.1 only) serving the files of a folder."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _tiny_archive(tmp_path: Path, dest: Path) -> Path:
    import tarfile
    folder = write_binary_folder(tmp_path / "build", tiny_arrays())
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return dest


def test_a_download_with_the_wrong_md5_is_deleted_and_reported(tmp_path, monkeypatch, http_root):
    root, base = http_root
    _tiny_archive(tmp_path, root / "cifar-10-binary.tar.gz")  # md5 is not the official one
    monkeypatch.setattr(loader, "DOWNLOAD_URL", f"{base}/cifar-10-binary.tar.gz")
    target = tmp_path / "downloads"
    target.mkdir()
    with pytest.raises(UserError, match=r"md5 [0-9a-f]{32} is not the expected "
                                        + formats.OFFICIAL_MD5["binary"]):
        load_dataset(target, progress=False)
    assert target.exists() and not list(target.iterdir())  # the bad download is gone, your folder stays


def test_a_verified_download_is_kept_and_official(tmp_path, monkeypatch, http_root, capsys):
    root, base = http_root
    served = _tiny_archive(tmp_path, root / "cifar-10-binary.tar.gz")
    monkeypatch.setitem(formats.OFFICIAL_MD5, "binary", hashlib.md5(served.read_bytes()).hexdigest())
    monkeypatch.setattr(loader, "DOWNLOAD_URL", f"{base}/cifar-10-binary.tar.gz")
    target = tmp_path / "downloads"
    target.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_dataset(target, val_size=10, progress=True)
    assert d.official is True
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-binary.tar.gz"]
    assert "downloading cifar-10-binary.tar.gz" in capsys.readouterr().err  # the progress bar
    monkeypatch.setattr(loader, "DOWNLOAD_URL", UNREACHABLE)  # found now: no second download
    assert load_dataset(target, val_size=10).fingerprint == d.fingerprint


def test_a_missing_file_on_the_server_is_an_offline_style_error(tmp_path, monkeypatch, http_root):
    _root, base = http_root
    monkeypatch.setattr(loader, "DOWNLOAD_URL", f"{base}/nothing.tar.gz")
    monkeypatch.delenv("MLPBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "downloads"))
    with pytest.raises(UserError, match="the download failed.*404"):
        load_dataset(None, progress=False)  # the default data dir, made for the download
    assert not (tmp_path / "downloads").exists()  # the folders made for it are not left behind


def test_an_existing_data_folder_stays_after_a_failed_download(tmp_path, monkeypatch, http_root):
    _root, base = http_root
    monkeypatch.setattr(loader, "DOWNLOAD_URL", f"{base}/nothing.tar.gz")
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="the download failed"):
        load_dataset(tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []


# ---------------------------------------------------------------- the summary command


def test_the_summary_command_prints_sizes_and_counts(data_dir, cache_dir, cli):
    out = cli("bench.data", "--data-dir", str(data_dir), "--val-size", "10", "--seeds", "3")
    assert out.returncode == 0, out.stderr
    assert "train 90, val 10, test 30 (archive: 100 training + 30 test images)" in out.stdout
    assert "official     no" in out.stdout and "seed 3" in out.stdout
    assert str(data_dir / "cifar-10-batches-bin") in out.stdout and str(cache_dir) in out.stdout
    # the counts are those of the archive and of the split load_dataset gives for that seed
    d = quiet(load_dataset, data_dir, val_size=10, seed=3)
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("class")][:1]
    rows += [line.split()[2:] for line in out.stdout.splitlines() if line[:1].isdigit() and " class" in line]
    assert rows[0] == ["class", "archive-train", "train", "val", "test"] and len(rows) == 11
    expected = np.stack([np.bincount(y, minlength=10) for y in
                         (tiny_arrays()["train_y"], d.y_train, d.y_val, d.y_test)], axis=1)
    np.testing.assert_array_equal(np.array(rows[1:], dtype=int), expected)
    total = next(line for line in out.stdout.splitlines() if line.startswith("total")).split()
    assert total[1:] == ["100", "90", "10", "30"]
    warning_lines = out.stderr.strip().splitlines()
    assert len(warning_lines) == 1 and "unofficial copy" in warning_lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, expected", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--val-size", "many"], "invalid val_size: 'many'"),
    (["--val-size", "0"], "invalid val_size: 0"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--dataset", "synthetic"], "--dataset synthetic"),  # a data dir given with it, or the command: refused
])
def test_bad_flags_give_one_line_and_exit_2(args, expected, data_dir, cli):
    out = cli("bench.data", "--data-dir", str(data_dir), *args)
    assert_one_line_error(out, "python -m bench.data: error:", expected)
    assert out.stdout == ""


def test_bad_data_through_the_command_line_is_one_line(data_dir, cli):
    batch = data_dir / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    out = cli("bench.data", "--data-dir", str(data_dir), "--val-size", "10")
    assert_one_line_error(out, str(batch), "3073-byte records")


def test_missing_data_through_the_command_line_is_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    out = cli("bench.data", "--data-dir", str(tmp_path / "empty"), "--no-download")
    assert_one_line_error(out, "CIFAR-10 not found", str(tmp_path / "empty" / "cifar-10-binary.tar.gz"),
                          f"put one of cifar-10-binary.tar.gz, cifar-10-batches-bin/, "
                          f"cifar-10-python.tar.gz or cifar-10-batches-py/ into {tmp_path / 'empty'}")
    typo = cli("bench.compare", "--data-dir", "/typo/path", "--quiet")
    assert_one_line_error(typo, "data dir /typo/path does not exist")
    assert "--data-dir" not in typo.stderr and not (typo.cwd / "results").exists()


def test_a_data_dir_one_level_above_the_copy_is_named_not_downloaded_into(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "DOWNLOAD_URL", UNREACHABLE)
    write_binary_folder(tmp_path / "parent" / "cifar10", tiny_arrays())
    with pytest.raises(UserError, match=r"but cifar-10-batches-bin is in .*parent/cifar10: did you mean "
                                        r"--data-dir .*parent/cifar10\?"):
        load_dataset(tmp_path / "parent", progress=False)
    assert sorted(p.name for p in (tmp_path / "parent").iterdir()) == ["cifar10"]  # nothing downloaded


@pytest.mark.parametrize("by_env", [False, True])
@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_data_dir_that_is_not_a_folder_is_named_by_where_it_came_from(tmp_path, monkeypatch, by_env, kind):
    """$MLPBENCH_DATA_DIR naming a FIFO was told to "put one ... into" it (A7-F6)."""
    import os

    target = tmp_path / "x"
    target.write_text("") if kind == "file" else os.mkfifo(target)
    monkeypatch.setenv(loader.ENV_DATA_DIR, str(target)) if by_env else monkeypatch.delenv(
        loader.ENV_DATA_DIR, raising=False)
    with pytest.raises(UserError, match=("\\$MLPBENCH_DATA_DIR" if by_env else "--data-dir") + " .* is not a folder"):
        loader.resolve_data_dir(None if by_env else target)
