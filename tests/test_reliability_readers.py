"""The one bounded reader (``bench.io``), and what reads through it: tar headers, python batches, TOML.

Promise B (resources stay bounded) and C (one line, exit 2), by mechanism:
every file is opened without blocking, checked to be a regular file and read
for at most its kind's cap; a tar archive's raw headers are walked before
``tarfile`` parses them; a pickle builds no array larger than a CIFAR-10
batch; a config file is capped in size and depth, and its one-line error is
short whatever it echoes. Inputs that vary are drawn by hypothesis.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import io as bio
from bench.cli import load_toml
from bench.data import archive, formats, load_dataset
from bench.data.formats import BATCH_RECORDS, N_PIXELS, RestrictedUnpickler, restricted_loads
from bench.errors import MAX_LINE, UserError
from conftest import assert_one_line_error
from test_data_formats import make_source, pack, tiny_arrays, write_binary_folder, write_python_folder

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLPBENCH_DATA_DIR", raising=False)


def load_quiet(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_dataset(data_dir, val_size=10, progress=False)


def within(seconds: float, fn):
    """fn() in a thread; fails the test when it has not returned in time (it blocked)."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=_outcome(fn)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return box["result"]


def _outcome(fn):
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - returned for the test to look at
        return exc


# ---------------------------------------------------------------- the reader itself


@SETTINGS
@given(size=st.integers(0, 5000), limit=st.integers(0, 5000))
def test_read_bounded_returns_the_file_or_refuses_it_by_its_size(size, limit):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f"
        data = os.urandom(size)
        path.write_bytes(data)
        if size <= limit:
            assert bio.read_bounded(path, limit) == data
        else:
            with pytest.raises(UserError, match=f"{size} bytes, more than the {limit}"):
                bio.read_bounded(path, limit)


@pytest.mark.parametrize("make", ["fifo", "dev_zero", "link_to_dev_zero", "folder", "link_to_fifo"])
def test_anything_but_a_regular_file_is_refused_without_blocking(tmp_path, make):
    path = tmp_path / "x"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "dev_zero":
        path = Path("/dev/zero")
    elif make == "link_to_dev_zero":
        path.symlink_to("/dev/zero")
    elif make == "folder":
        path.mkdir()
    else:
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    for read in (lambda: bio.read_bounded(path, 1 << 30), lambda: bio.read_json(path)):
        got = within(10, read)
        assert isinstance(got, UserError) and "not a regular file" in str(got), got


@SETTINGS
@given(st.binary(max_size=300))
def test_read_json_of_any_bytes_is_a_document_or_one_user_error(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.json"
        path.write_bytes(data)
        try:
            bio.read_json(path)
        except UserError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)


def test_json_nested_too_deeply_is_one_user_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested too deeply"):
        bio.read_json(path)


def test_json_that_cannot_fit_once_parsed_is_refused_before_parsing(tmp_path, monkeypatch):
    """3 bytes of "{}," became 72 bytes of Python: a 198 MB file took 3.7 GB (adversarial O18)."""
    import bench.memory

    path = tmp_path / "objects.json"
    path.write_text("[" + ",".join(["{}"] * 100_000) + "]")  # 300 kB, about 7 MB once parsed
    assert len(bio.read_json(path)) == 100_000
    monkeypatch.setattr(bench.memory, "available", lambda: (2 * 2**20, "a 2 MiB test limit"))
    with pytest.raises(UserError, match="64 times as much once parsed.*a 2 MiB test limit"):
        bio.read_json(path)


def test_op_ratios_refuses_a_saved_run_too_big_to_parse_in_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "0001_big.json"
    path.write_text("[" + ",".join(["{}"] * 20_000_000) + "]")  # 60 MB: 2.4 GB at the bound
    proc = subprocess.run(["bash", "-c", f"ulimit -v 2000000; exec {sys.executable} -m bench.op_ratios "
                           f"{path} --out {tmp_path / 'out'}"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert_one_line_error(proc, "once parsed", "ulimit -v")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable", ["cache", "loop"])
def test_a_cache_path_the_file_system_refuses_is_one_line_exit_2(cli, tmp_path, variable):
    """MLPBENCH_CACHE_DIR too long or in a loop of links was exit 1 (adversarial N-F2)."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cache = str(tmp_path / ("k" * 300)) if variable == "cache" else str(tmp_path / "loop" / "x")
    data = write_python_folder(tmp_path / "d", tiny_arrays()).parent
    proc = cli("bench.compare", "--data-dir", str(data), "--epochs", "1", "--train-subset", "50",
               "--val-size", "10", "--batch-size", "10", "--backends", "numpy:cpu", "--out", "o",
               env={"MLPBENCH_CACHE_DIR": cache})
    assert_one_line_error(proc, "a path this file system can hold")


# ---------------------------------------------------------------- every reader goes through it


@pytest.mark.parametrize("make", ["dev_zero", "fifo"])
def test_op_ratios_refuses_a_device_or_a_fifo_at_once(cli, tmp_path, make):
    path = "/dev/zero"
    if make == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    proc = cli("bench.op_ratios", path, "--out", str(tmp_path / "o"), timeout=60)
    assert_one_line_error(proc, "not a regular file")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("victim", ["manifest.json", "train_x.npy"])
@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_cache_file_that_is_not_a_regular_file_is_rebuilt_unread(tmp_path, victim, target):
    data_dir = make_source(tmp_path, "binary", "archive")
    first = load_quiet(data_dir)
    path = next((tmp_path / "cache").rglob(victim))
    path.unlink()
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    path.symlink_to(target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = within(60, lambda: load_dataset(data_dir, val_size=10, progress=False))
    assert not isinstance(again, BaseException), again
    assert again.fingerprint == first.fingerprint
    assert any("corrupt" in str(w.message) for w in caught)
    assert path.is_file() and not path.is_symlink()  # rebuilt in place of the link


def test_a_config_file_that_is_a_fifo_is_one_line(cli, tmp_path):
    os.mkfifo(tmp_path / "c.toml")
    proc = cli("bench.compare", "--config", str(tmp_path / "c.toml"), timeout=60)
    assert_one_line_error(proc, "c.toml: not a regular file")


# ---------------------------------------------------------------- tar headers, before tarfile


def tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    """One raw ustar header block."""
    h = bytearray(512)
    h[:len(name)] = name
    h[100:108], h[108:116], h[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def write_gz(path: Path, *parts: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        for part in parts:
            fh.write(part)
    return path


@pytest.mark.parametrize("kind", [b"x", b"g", b"L", b"K"])
def test_a_huge_extended_header_is_refused_before_tarfile_reads_it(tmp_path, kind):
    # a 600 MiB pax or GNU long-name header announced: refused on its header alone
    write_gz(tmp_path / "d" / "cifar-10-binary.tar.gz", tar_header(b"././@LongLink", 600 * 2**20, kind),
             b"a" * 4096)
    got = within(30, lambda: load_quiet(tmp_path / "d"))
    assert isinstance(got, UserError) and "extended header" in str(got) and "629145600" in str(got)


def test_a_600_mib_pax_header_in_a_small_gzip_is_refused_in_seconds(tmp_path):
    """The reported case whole: 600 MiB of one pax record, a few hundred KB compressed."""
    path = tmp_path / "d" / "cifar-10-binary.tar.gz"
    path.parent.mkdir()
    size, chunk = 600 * 2**20, b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(tar_header(b"././@PaxHeader", size, b"x") + b"%d path=" % size)
        for _ in range(size // len(chunk) - 1):
            fh.write(chunk)
    got = within(60, lambda: load_quiet(tmp_path / "d"))
    assert isinstance(got, UserError) and "extended header (type 'x')" in str(got)


@SETTINGS
@given(kind=st.sampled_from([b"x", b"g", b"L", b"K", b"0", b"5"]), size=st.integers(0, 2 * 2**16))
def test_extended_headers_are_refused_exactly_above_the_cap(kind, size):
    stream = io.BytesIO(tar_header(b"m", size, kind) + bytes(-(-size // 512) * 512) + bytes(1024))
    if kind in archive.EXTENDED and size > archive.HEADER_BYTES:
        with pytest.raises(UserError, match="extended header"):
            archive.check_headers(stream, Path("a.tar.gz"))
    else:
        archive.check_headers(stream, Path("a.tar.gz"))


def with_size_field(header: bytes, field: bytes) -> bytes:
    """``header`` with its 12-byte size field replaced and its checksum recomputed."""
    h = bytearray(header)
    h[124:136], h[148:156] = field, b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


@SETTINGS
@given(kind=st.sampled_from(sorted(archive.EXTENDED)), size=st.integers(0, 2**32),
       junk=st.binary(max_size=11))
def test_the_walk_reads_every_size_field_as_tarfile_does(kind, size, junk):
    """Octal up to the first NUL, whatever follows it (the d01/d02 fields "40000000\\0ZZZ")."""
    field = (b"%o\0" % size + junk)[:12].ljust(12, b"\0")
    header = with_size_field(tar_header(b"././@LongLink", 0, kind), field)
    assert tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape").size == size
    stream = io.BytesIO(header + bytes(-(-min(size, 2**17) // 512) * 512) + bytes(1024))
    if size > archive.HEADER_BYTES:
        with pytest.raises(UserError, match=f"is {size} bytes"):
            archive.check_headers(stream, Path("a.tar.gz"))
    else:
        archive.check_headers(stream, Path("a.tar.gz"))


@SETTINGS
@given(field=st.binary(min_size=12, max_size=12))
def test_a_header_tarfile_cannot_parse_is_a_refusal_not_the_end(field):
    header = with_size_field(tar_header(b"m", 0, b"0"), field)
    try:
        tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        with pytest.raises(UserError, match="cannot be parsed"):
            archive.check_headers(io.BytesIO(tar_header(b"ok", 0, b"0") + header), Path("a"))


def test_the_walk_skips_data_only_where_tarfile_does():
    """A folder's size is not followed by data for tarfile: a big pax header hidden there is found."""
    hidden = tar_header(b"././@PaxHeader", 10 * 2**20, b"x")
    for folder in (tar_header(b"d", 512, b"5"), tar_header(b"d/", 512, b"\0")):
        with pytest.raises(UserError, match="extended header"):
            archive.check_headers(io.BytesIO(folder + hidden + bytes(1024)), Path("a"))


@pytest.mark.parametrize("stream, needle", [
    (b"".join(tar_header(b"././@LongLink", 0, b"L") for _ in range(archive.MAX_EXTENDED + 1)),
     "in a row"),
    (tar_header(b"././@PaxHeader", 512, b"x") + b"20 size=99999999999\n".ljust(512, b"\0"),
     "sets a size"),
    (tar_header(b"s", 0, b"S"), "sparse"),
    (with_size_field(tar_header(b"m", 0, b"0"), b"\xff" + b"\xff" * 11), "bytes"),  # negative
])
def test_headers_that_would_move_tarfiles_walk_are_refused(stream, needle):
    with pytest.raises(UserError, match=needle):
        archive.check_headers(io.BytesIO(stream + bytes(1024)), Path("a"))


def test_too_many_members_or_too_many_bytes_are_refused(tmp_path, monkeypatch):
    many = b"".join(tar_header(b"f%d" % i, 0, b"0") for i in range(archive.MAX_MEMBERS + 1))
    with pytest.raises(UserError, match=f"it has more than {archive.MAX_MEMBERS} headers") as err:
        archive.check_headers(io.BytesIO(many + bytes(1024)), Path("a"))
    assert "sparse" not in str(err.value)  # A13-F1: the line says which rule it broke, and only that one
    monkeypatch.setattr(archive, "RAW_BYTES", 10_000)
    big = tar_header(b"big", 20_000, b"0") + bytes(20_480) + bytes(1024)
    with pytest.raises(UserError, match="more than 10000 bytes once decompressed"):
        archive.check_headers(io.BytesIO(big), Path("a"))


def test_a_well_formed_archive_passes_the_header_walk(tmp_path):
    folder = write_binary_folder(tmp_path / "build", tiny_arrays())
    path = pack(folder, tmp_path / "a.tar.gz")
    with gzip.open(path) as fh:
        archive.check_headers(fh, path)


# ---------------------------------------------------------------- python batches: no array too large


class Reduce:
    """Pickles as ``func(*args)``: what a hostile batch file can ask the unpickler to call."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _python_folder_with(tmp_path: Path, data) -> Path:
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": data, b"labels": [0] * 10},
                                                       protocol=2))
    return tmp_path / "data"


@pytest.mark.parametrize("data, needle", [
    (Reduce(np.ndarray, (100_000, 3072), "u1"), "shape (100000, 3072) and dtype uint8 (307200000 bytes"),
    (Reduce(np.ndarray, (10**9,), np.dtype("O")), "dtype"),
    (Reduce(np.ndarray, (10,), np.dtype("V1000000000")), "dtype"),
    (Reduce(np.ndarray, "not a shape"), "shape"),
    (Reduce(np.ndarray, (-5,), "u1"), "shape"),
])
def test_a_pickle_cannot_build_an_array_larger_than_a_batch(tmp_path, data, needle):
    got = within(30, lambda: load_quiet(_python_folder_with(tmp_path, data)))
    assert isinstance(got, UserError) and "refusing to build" in str(got) and needle in str(got), got


@SETTINGS
@given(rows=st.integers(1, 10_000), builder=st.sampled_from(["ndarray", "reconstruct"]))
def test_an_array_is_never_built_from_no_bytes(tmp_path_factory, rows, builder):
    """A batch-sized array with no buffer behind it (d03: uninitialised memory) is refused."""
    from numpy.core.multiarray import _reconstruct

    data = (Reduce(np.ndarray, (rows, 3072), "u1") if builder == "ndarray"
            else Reduce(_reconstruct, np.ndarray, (rows, 3072), b"b"))
    got = within(30, lambda: load_quiet(_python_folder_with(tmp_path_factory.mktemp("u"), data)))
    assert isinstance(got, UserError) and "from no bytes" in str(got), got


@pytest.mark.parametrize("entry", ["data", "labels"])
@pytest.mark.parametrize("dtype", ["V0", np.dtype([])])
def test_elements_of_no_bytes_still_count_against_the_cap(tmp_path, entry, dtype):
    """A zero-size dtype made 3e8 labels '0 bytes'; listing them took 2.4 GB (adversarial P02)."""
    huge = Reduce(np.ndarray, (3 * 10**8,), dtype)
    arrays = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
    arrays[entry.encode()] = huge
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    (folder / "data_batch_2").write_bytes(pickle.dumps(arrays, protocol=2))
    got = within(30, lambda: load_quiet(tmp_path / "data"))
    assert isinstance(got, UserError) and "refusing to build" in str(got), got


@pytest.mark.parametrize("where", ["label", "key", "meta"])
def test_an_integer_python_cannot_print_is_refused_before_unpickling(tmp_path, where):
    """10**4400 as a label, a dict key or a class name was a ValueError traceback (adversarial N-F1)."""
    huge = 10**4400  # over the 4300 digits int() and str() take; 1.8 kB pickled
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    if where == "meta":
        (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [huge] + [b"c"] * 9}))
    else:
        batch = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
        batch.update({b"labels": [huge] * 10} if where == "label" else {huge: 1})
        (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=4))
    got = within(30, lambda: load_quiet(tmp_path / "data"))
    assert isinstance(got, UserError) and "a pickled integer of" in str(got), got


def test_labels_are_counted_before_they_are_listed():
    buf = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": np.zeros(11, np.uint8)})
    with pytest.raises(UserError, match="11 labels for 10 images"):
        formats.parse_python_batch(buf, "b")


def test_a_batch_holds_no_more_pixels_than_its_file_has_bytes():
    data = np.zeros((10, 3072), np.uint8)
    buf = pickle.dumps({b"data": data, b"labels": [0] * 10}, protocol=2)
    assert formats.parse_python_batch(buf, "b")[0].shape == (10, 3072)
    with pytest.raises(UserError, match="not read from it"):
        with pytest.MonkeyPatch.context() as mp:  # the guard behind the builders' own checks
            mp.setattr(formats, "restricted_loads", lambda *_: {b"data": data, b"labels": [0] * 10})
            formats.parse_python_batch(b"short", "b")


def test_a_chain_of_codec_encodings_cannot_grow_bytes(tmp_path):
    import codecs

    data = b"a" * 1000
    for _ in range(30):  # each hex encoding doubles: 2^30 x 1000 bytes if it were allowed
        data = Reduce(codecs.encode, data, "hex")
    got = within(30, lambda: load_quiet(_python_folder_with(tmp_path, data)))
    assert isinstance(got, UserError) and "_codecs.encode" in str(got)


def test_a_pickle_of_millions_of_tiny_opcodes_is_refused_before_it_builds_anything(tmp_path):
    from bench.data.formats import MAX_OPCODES

    n = MAX_OPCODES + 10
    dups = b"\x80\x02](K\x01" + b"2" * n + b"e."  # a list of n ones: one byte per item
    folder = write_python_folder(tmp_path / "data", tiny_arrays())
    (folder / "data_batch_1").write_bytes(dups)
    with pytest.raises(UserError, match=f"more than {MAX_OPCODES} pickle opcodes"):
        load_quiet(tmp_path / "data")


@SETTINGS
@given(shape=st.lists(st.integers(0, 5000), min_size=0, max_size=4),
       dtype=st.sampled_from(["u1", "i4", "f8", "c16", "U3"]))
def test_the_unpickler_builds_an_array_exactly_when_it_fits_the_cap(shape, dtype):
    cap = 40_000
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    array = np.zeros(shape, dtype) if nbytes <= cap else Reduce(np.ndarray, tuple(shape), dtype)
    buf = pickle.dumps(array, protocol=5)  # an array with its bytes, as NumPy pickles it
    if nbytes <= cap:
        a = restricted_loads(buf, "f", cap)
        assert a.shape == tuple(shape) and a.dtype == np.dtype(dtype)
    else:
        with pytest.raises(UserError, match="refusing to build"):
            restricted_loads(buf, "f", cap)


def test_a_full_size_batch_still_loads():
    a = np.zeros((BATCH_RECORDS, N_PIXELS), np.uint8)
    for protocol in (2, 5):
        out = restricted_loads(pickle.dumps({b"data": a}, protocol=protocol), "f")
        assert out[b"data"].shape == a.shape


def test_the_unpickler_admits_reconstruct_only_for_plain_arrays():
    unpickler = RestrictedUnpickler(io.BytesIO(b""), "f", 100)
    with pytest.raises(UserError, match="class"):
        unpickler._reconstruct(np.ma.MaskedArray, (0,), b"b")


# ---------------------------------------------------------------- the config file


def test_a_deeply_nested_toml_is_one_line(cli, tmp_path):
    (tmp_path / "deep.toml").write_text("lr = " + "[" * 5000 + "]" * 5000 + "\n")
    assert_one_line_error(cli("bench.compare", "--config", str(tmp_path / "deep.toml")),
                          "nested too deeply")


@pytest.mark.parametrize("text, needle", [
    ('lr = "' + "x" * 6_000_000 + '"\n', "big.toml"),          # over the size cap
    ('lr = "' + "x" * 600_000 + '"\n', "big.toml"),            # under it: the echoed value is cut
    ("x" * 600_000 + " = 1\n", "big.toml"),                    # an unknown key that long
    ("hidden_dims = [" + "1," * 200_000 + "]\n", "hidden_dims"),  # a list that long
])
def test_a_huge_toml_gives_a_short_line(cli, tmp_path, text, needle):
    (tmp_path / "big.toml").write_text(text)
    proc = cli("bench.compare", "--config", str(tmp_path / "big.toml"))
    assert_one_line_error(proc, needle)
    assert len(proc.stderr) <= MAX_LINE + 1


TOML_VALUES = st.recursive(
    st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
              st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@SETTINGS
@given(doc=st.dictionaries(st.sampled_from(["lr", "epochs", "hidden_dims", "seeds", "dtype", "nope",
                                            "depth", "activation"]), TOML_VALUES, max_size=4))
def test_the_config_parser_returns_values_or_one_short_line(doc):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in doc.items()))
        try:
            values = load_toml(path, "compare")
        except UserError as exc:  # echoed values are cut short; run_cli caps the whole line
            assert "\n" not in str(exc) and len(str(exc)) <= 1000
        else:
            assert set(values) <= set(doc)


@SETTINGS
@given(st.binary(max_size=200))
def test_the_config_parser_takes_any_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.toml"
        path.write_bytes(data)
        try:
            load_toml(path, "compare")
        except UserError as exc:
            assert "\n" not in str(exc) and len(str(exc)) <= 1000
