"""The two CIFAR-10 layouts, archives and folders, built here from small random arrays.

Covers: both formats give the same arrays and fingerprint; the unofficial
warning; unsafe archive members; truncated files, bad labels and missing
batches; the restricted unpickler.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.data import formats, load_dataset
from bench.data.formats import RestrictedUnpickler, restricted_loads
from bench.errors import UserError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N_PER_BATCH, N_TEST = 20, 30


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLPBENCH_DATA_DIR", raising=False)


# ---------------------------------------------------------------- builders


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 5 * N_PER_BATCH
    return {"train_x": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "train_y": rng.integers(0, 10, n).astype(np.uint8),
            "test_x": rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8),
            "test_y": rng.integers(0, 10, N_TEST).astype(np.uint8)}


def _batches(a):
    for i in range(5):
        rows = slice(i * N_PER_BATCH, (i + 1) * N_PER_BATCH)
        yield f"data_batch_{i + 1}", a["train_x"][rows], a["train_y"][rows]
    yield "test_batch", a["test_x"], a["test_y"]


def write_binary_folder(root: Path, a) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, x, y in _batches(a):
        records = np.concatenate([y[:, None], x], axis=1)  # (N, 3073): label byte, then pixels
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return folder


def write_python_folder(root: Path, a, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, x, y in _batches(a):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": x,
                 b"filenames": [f"{i}.png".encode() for i in range(len(y))]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": N_PER_BATCH,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


def pack(folder: Path, archive: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    """Tar+gzip ``folder`` (as its own name) into ``archive``, then append ``extra`` members."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive


def make_source(tmp_path: Path, fmt: str, kind: str, a=None) -> Path:
    """A data dir holding the tiny arrays as ``fmt`` (binary/python) ``kind`` (archive/folder)."""
    a = tiny_arrays() if a is None else a
    data_dir = tmp_path / f"data-{fmt}-{kind}"
    write = write_binary_folder if fmt == "binary" else write_python_folder
    if kind == "folder":
        write(data_dir, a)
    else:
        folder = write(tmp_path / f"build-{fmt}", a)
        pack(folder, data_dir / ("cifar-10-binary.tar.gz" if fmt == "binary" else "cifar-10-python.tar.gz"))
    return data_dir


def load_quiet(data_dir, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_dataset(data_dir, val_size=kw.pop("val_size", 10), **kw)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- both formats


SOURCES = [("binary", "archive"), ("binary", "folder"), ("python", "archive"), ("python", "folder")]


def test_every_format_gives_the_same_arrays_and_fingerprint(tmp_path):
    a = tiny_arrays()
    expected_fp = hashlib.sha256(b"".join(a[k].tobytes() for k in
                                          ("train_x", "train_y", "test_x", "test_y"))).hexdigest()
    loaded = {src: load_quiet(make_source(tmp_path, *src, a=a)) for src in SOURCES}
    for (fmt, kind), d in loaded.items():
        assert d.fingerprint == expected_fp, (fmt, kind)
        assert d.classes == CLASSES
        np.testing.assert_array_equal(d.raw_test, a["test_x"])
        np.testing.assert_array_equal(d.y_test, a["test_y"].astype(np.int64))
        # train + val are exactly the training images, each row once
        rows = np.concatenate([d.raw_train, d.raw_val])
        order = np.lexsort(rows.T[::-1])
        expected = a["train_x"][np.lexsort(a["train_x"].T[::-1])]
        np.testing.assert_array_equal(rows[order], expected)
        assert fmt in d.source and str(tmp_path) in d.source
    first = loaded[SOURCES[0]]
    for d in loaded.values():
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "raw_train"):
            np.testing.assert_array_equal(getattr(d, name), getattr(first, name))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_batches_of_any_pickle_protocol_load(tmp_path, protocol):
    a = tiny_arrays()
    write_python_folder(tmp_path / "d", a, protocol=protocol)
    d = load_quiet(tmp_path / "d")
    np.testing.assert_array_equal(d.raw_test, a["test_x"])


def test_a_binary_archive_is_preferred_to_the_other_copies(tmp_path):
    a, b = tiny_arrays(0), tiny_arrays(1)
    data_dir = tmp_path / "data"
    write_python_folder(data_dir, b)
    pack(write_binary_folder(tmp_path / "build", a), data_dir / "cifar-10-binary.tar.gz")
    d = load_quiet(data_dir)
    assert "cifar-10-binary.tar.gz" in d.source
    np.testing.assert_array_equal(d.raw_test, a["test_x"])


# ---------------------------------------------------------------- official or not


def test_a_non_official_archive_warns_with_its_md5(tmp_path):
    data_dir = make_source(tmp_path, "binary", "archive")
    archive = data_dir / "cifar-10-binary.tar.gz"
    with pytest.warns(UserWarning) as record:
        d = load_dataset(data_dir, val_size=10)
    messages = [str(w.message) for w in record]
    assert any(str(archive) in m and md5_of(archive) in m and "not the official" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert d.official is False


def test_an_extracted_folder_warns_that_it_cannot_be_checked(tmp_path):
    data_dir = make_source(tmp_path, "python", "folder")
    with pytest.warns(UserWarning, match="no checksum can be compared"):
        d = load_dataset(data_dir, val_size=10)
    assert d.official is False


def test_an_archive_with_the_official_md5_is_official_and_quiet(tmp_path, monkeypatch):
    data_dir = make_source(tmp_path, "python", "archive")
    monkeypatch.setitem(formats.OFFICIAL_MD5, "python", md5_of(data_dir / "cifar-10-python.tar.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_dataset(data_dir, val_size=10)
        again = load_dataset(data_dir, val_size=10)  # from the cache: still official
    assert d.official and again.official


# ---------------------------------------------------------------- unsafe archives


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize("member, why", [
    (_file("cifar-10-batches-bin/../../evil.txt"), "'..'"),
    (_file("../evil.txt"), "'..'"),
    (_file("/tmp/mlpbench-evil.txt"), "absolute path"),
    (_link("cifar-10-batches-bin/data_batch_6.bin", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (_link("cifar-10-batches-bin/copy.bin", tarfile.LNKTYPE, "cifar-10-batches-bin/test_batch.bin"),
     "hard link"),
    (_device("cifar-10-batches-bin/null"), "device"),
], ids=["dotdot-inside", "dotdot", "absolute", "symlink", "hardlink", "device"])
def test_an_archive_with_an_unsafe_member_is_rejected(tmp_path, member, why):
    folder = write_binary_folder(tmp_path / "build", tiny_arrays())
    archive = pack(folder, tmp_path / "data" / "cifar-10-binary.tar.gz", extra=[member])
    with pytest.raises(UserError, match="unsafe archive member") as err:
        load_quiet(tmp_path / "data")
    message = str(err.value)
    assert str(archive) in message and member[0].name in message and why in message
    assert "\n" not in message
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/mlpbench-evil.txt").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


def test_a_truncated_archive_is_one_clear_error(tmp_path):
    data_dir = make_source(tmp_path, "binary", "archive")
    archive = data_dir / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable .tar.gz archive") as err:
        load_quiet(data_dir)
    assert str(archive) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- structure checks


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_a_truncated_binary_batch_names_the_file(tmp_path, kind):
    build = write_binary_folder(tmp_path / "build", tiny_arrays())
    batch = build / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-5])
    data_dir = tmp_path / "data"
    if kind == "archive":
        pack(build, data_dir / "cifar-10-binary.tar.gz")
    else:
        data_dir.mkdir()
        build.rename(data_dir / build.name)
    with pytest.raises(UserError, match=r"data_batch_2\.bin.*3073-byte records") as err:
        load_quiet(data_dir)
    assert "\n" not in str(err.value)


def test_a_binary_batch_short_of_whole_records_names_the_file(tmp_path):
    folder = write_binary_folder(tmp_path / "data", tiny_arrays())
    batch = folder / "data_batch_4.bin"
    batch.write_bytes(batch.read_bytes()[: -3073 * 2])  # two records short: sizes still whole
    with pytest.raises(UserError, match=rf"{batch}: {N_PER_BATCH - 2} records where the other "
                                        rf"training batches hold {N_PER_BATCH}"):
        load_quiet(tmp_path / "data")


def test_a_truncated_python_batch_names_the_file(tmp_path):
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    batch = folder / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(UserError, match=rf"{batch}: not a readable CIFAR-10 python batch"):
        load_quiet(tmp_path / "data")


def test_a_bad_binary_label_names_the_file(tmp_path):
    folder = write_binary_folder(tmp_path / "data", tiny_arrays())
    batch = folder / "data_batch_3.bin"
    raw = bytearray(batch.read_bytes())
    raw[3073 * 7] = 10  # the label byte of record 7
    batch.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=rf"{batch}: label 10 of record 7 is outside 0-9"):
        load_quiet(tmp_path / "data")


def test_a_bad_python_label_names_the_file(tmp_path):
    a = tiny_arrays()
    folder = write_python_folder(tmp_path / "data", a)
    batch = pickle.loads((folder / "data_batch_5").read_bytes())
    batch[b"labels"][3] = -1
    (folder / "data_batch_5").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UserError, match=rf"{folder / 'data_batch_5'}: label 3 is int -1"):
        load_quiet(tmp_path / "data")


@pytest.mark.parametrize("fmt, missing", [("binary", "data_batch_4.bin"), ("binary", "batches.meta.txt"),
                                          ("python", "test_batch")])
def test_a_missing_batch_in_a_folder_is_named(tmp_path, fmt, missing):
    data_dir = make_source(tmp_path, fmt, "folder")
    path = next(data_dir.iterdir()) / missing
    path.unlink()
    with pytest.raises(UserError, match=rf"{path}: missing"):
        load_quiet(data_dir)


def test_a_missing_member_in_an_archive_is_named(tmp_path):
    build = write_binary_folder(tmp_path / "build", tiny_arrays())
    (build / "data_batch_1.bin").unlink()
    archive = pack(build, tmp_path / "data" / "cifar-10-binary.tar.gz")
    with pytest.raises(UserError, match=rf"{archive}: no member cifar-10-batches-bin/data_batch_1\.bin"):
        load_quiet(tmp_path / "data")


def test_python_data_of_the_wrong_shape_is_named(tmp_path):
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    batch = pickle.loads((folder / "data_batch_1").read_bytes())
    batch[b"data"] = batch[b"data"][:, :3000]
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UserError, match=r"data_batch_1: 'data' is ndarray uint8 of shape \(20, 3000\)"):
        load_quiet(tmp_path / "data")


# ---------------------------------------------------------------- the restricted unpickler


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker)}, protocol=2)
    with pytest.raises(UserError, match=r"evil-file: refusing to unpickle (posix|os|nt)\.system"):
        restricted_loads(payload, "evil-file")
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes do run code without the restriction
    assert marker.exists()


def test_a_python_batch_that_runs_code_is_refused_and_named(tmp_path):
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=4))
    with pytest.raises(UserError, match=rf"{folder / 'data_batch_2'}: refusing to unpickle"):
        load_quiet(tmp_path / "data")
    assert not marker.exists()


def test_the_unpickler_admits_only_numpy_array_parts():
    allowed = {f"{m}.{n}" for m, n in RestrictedUnpickler.BUILDERS}
    assert allowed <= {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                       "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
                       "numpy.ndarray", "numpy.dtype", "_codecs.encode"}
    for module, name in [("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen")]:
        with pytest.raises(UserError, match=rf"refusing to unpickle {module}\.{name}"):
            RestrictedUnpickler(io.BytesIO(b""), "f", 100).find_class(module, name)


NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("names, needle", [
    (["\x1b[31mred"] + NAMES[1:], "printable"),        # a terminal escape (A7-F1)
    (["air\x00plane"] + NAMES[1:], "printable"),        # a NUL
    (["cat"] * 10, "given twice"),                      # one name ten times
    (["x" * 65] + NAMES[1:], "printable"),              # longer than a name
])
def test_class_names_must_be_printable_short_and_different(names, needle):
    meta = "\n".join(names).encode()
    with pytest.raises(UserError, match=needle):
        formats.parse_binary_meta(meta, "batches.meta.txt")
    d = {b"label_names": [n.encode() for n in names]}
    with pytest.raises(UserError, match=needle):
        formats.parse_python_meta(pickle.dumps(d, protocol=2), "batches.meta")


def test_a_byte_order_mark_and_crlf_are_not_part_of_a_name():
    meta = ("\ufeff" + "\r\n".join(NAMES) + "\r\n").encode()
    assert formats.parse_binary_meta(meta, "batches.meta.txt") == tuple(NAMES)


def _nested_pickle(depth: int) -> bytes:
    """A pickle of ``depth`` lists, each holding the next: a few bytes a level, built by opcodes."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


@pytest.mark.parametrize("depth", [17, 1500, 100_000])
def test_a_deeply_nested_pickle_is_refused_before_anything_recursive_meets_it(depth):
    """A12-P2/P3: label_names or labels[0] nested 1500 or 100 000 deep unpickled (the C unpickler does
    not recurse), then a repr or a comparison of it raised RecursionError: a traceback. Every pickle,
    JSON and TOML document read is walked without recursion and refused past its nesting limit."""
    with pytest.raises(UserError, match="nested more than 16 deep"):
        restricted_loads(_nested_pickle(depth), "data_batch_1")
    assert restricted_loads(_nested_pickle(16), "data_batch_1") is not None


def test_a_python_batch_whose_labels_nest_deeply_is_one_line(tmp_path):
    a = tiny_arrays()
    folder = write_python_folder(tmp_path / "data", a)
    good = (folder / "batches.meta").read_bytes()
    assert pickle.loads(good)
    deep: list = ["airplane"]
    for _ in range(300):  # the file stays within the 4 KiB a batches.meta may have
        deep = [deep]
    meta = pickle.loads(good)
    meta[b"label_names"][0] = deep
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(UserError, match="batches.meta: nested more than 16 deep"):
        load_quiet(tmp_path / "data")


def test_a_deeply_nested_json_or_toml_is_one_line(tmp_path):
    from bench.cli import load_toml
    from bench.io import read_json

    (tmp_path / "deep.json").write_text("[" * 500 + "]" * 500)
    with pytest.raises(UserError, match="nested more than 32 deep"):
        read_json(tmp_path / "deep.json")
    (tmp_path / "deep.toml").write_text("hidden_dims = " + "[" * 30 + "]" * 30 + "\n")
    with pytest.raises(UserError, match="nested more than 4 deep"):
        load_toml(tmp_path / "deep.toml")


def test_the_nesting_walk_keeps_memory_of_the_depth_alone():
    """A14-F2: the walk pushed every element and remembered every container: a 60 MB JSON of empty
    objects peaked at 74x its bytes. It now holds one iterator a level."""
    import tracemalloc

    from bench.io import shallow

    wide = [{} for _ in range(1_000_000)]
    tracemalloc.start()
    shallow(wide, "w", 32, "a JSON file")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # bytes; the elements' own 64 MB are not the walk's


def test_python_class_names_must_be_text(tmp_path):
    """A15-F2: label_names of integers were printed as class names "0".."9"; the binary layout's are
    refused as not text, and so are the python layout's."""
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    meta = pickle.loads((folder / "batches.meta").read_bytes())
    meta[b"label_names"] = list(range(10))
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(UserError, match=r"batches.meta: label_names\[0\] is int 0 \(allowed: text"):
        load_quiet(tmp_path / "data")
