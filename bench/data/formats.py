"""The two official CIFAR-10 layouts and their parsers (NumPy only, no torch).

Both layouts hold five training batches and one test batch plus a file of
class names, in a folder (``cifar-10-batches-bin/`` or ``cifar-10-batches-py/``)
that the official archives wrap.

* **binary**: each batch is a run of 3 073-byte records, 1 label byte (0-9)
  then 3 072 pixel bytes in CHW order (1 024 red, 1 024 green, 1 024 blue, each
  plane 32x32 row-major). Parsed with ``np.frombuffer``, no pickle.
* **python**: each batch is a pickled dict ``{b"data": uint8 (N, 3072),
  b"labels": [N ints], ...}``. Unpickled by :class:`RestrictedUnpickler`, which
  admits only the NumPy array reconstruction those files need, because a
  pickle from the internet can otherwise run any code.

Record counts: the official batches hold 10 000 records each. Smaller batches
(any positive whole number of records, the five training batches all the same
size) are accepted so that tests and demos can build tiny archives; a file
whose size is not a whole number of records, a label outside 0-9 or a missing
file is an error naming the file. No file is read that is larger than a
CIFAR-10 file of its kind can be (:func:`max_bytes`), so a hostile archive or
folder cannot make the loader read gigabytes. Every error a user can cause is
a :class:`~bench.errors.UserError` with a one-line message.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import math
import pickle
import pickletools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from bench.errors import UserError
from bench.io import shallow

try:  # the array reconstructors NumPy writes into pickles (admitted by the unpickler)
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - NumPy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

N_PIXELS = 3 * 32 * 32          # 3072 bytes per image, CHW
RECORD_BYTES = 1 + N_PIXELS     # binary record: label byte + pixels
N_CLASSES = 10
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

# md5 of the official archives from https://www.cs.toronto.edu/~kriz/cifar.html
# (a dict so that a test can stand a tiny archive in for the official one)
OFFICIAL_MD5 = {
    "binary": "c32a1d4ab5d03f1284b67883e8d87530",
    "python": "c58f30108f718f92721af3b95e74349a",
}


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR-10 version keeps its files."""

    name: str          # "binary" or "python"
    archive: str       # file name of the official archive
    folder: str        # the folder inside it (and what extracting it leaves)
    batch_suffix: str  # appended to data_batch_1 ... test_batch
    meta: str          # the file of class names

    def batch_files(self) -> tuple[str, ...]:
        """The six batch file names, training batches first, test batch last."""
        return tuple(b + self.batch_suffix for b in (*TRAIN_BATCHES, TEST_BATCH))

    def files(self) -> tuple[str, ...]:
        """Every file the layout needs, relative to its folder."""
        return (*self.batch_files(), self.meta)

    @property
    def official_md5(self) -> str:
        return OFFICIAL_MD5[self.name]


BINARY = Layout("binary", "cifar-10-binary.tar.gz", "cifar-10-batches-bin", ".bin", "batches.meta.txt")
PYTHON = Layout("python", "cifar-10-python.tar.gz", "cifar-10-batches-py", "", "batches.meta")
LAYOUTS = (BINARY, PYTHON)

BATCH_RECORDS = 10_000                        # records in an official batch, the most accepted
BINARY_BATCH_BYTES = BATCH_RECORDS * RECORD_BYTES   # 30 730 000
PYTHON_BATCH_BYTES = 32 * 2**20               # the official pickles are 31 035 704 bytes or fewer
META_BYTES = 4096                             # the official class-name files are 61 and 158 bytes
ARCHIVE_BYTES = 512 * 2**20                   # the official archives are about 163 MiB
MAX_NESTING = 16  # containers in containers of one pickled batch: the official ones nest 3
MAX_OPCODES = 250_000  # opcodes of one pickled batch: 10 000 labels and file names take under 100 000


def max_bytes(layout: Layout, name: str) -> int:
    """The largest size a file ``name`` of ``layout`` can have; anything larger is refused unread."""
    if name == layout.meta:
        return META_BYTES
    return BINARY_BATCH_BYTES if layout.name == "binary" else PYTHON_BATCH_BYTES


@dataclass(frozen=True)
class Decoded:
    """The whole dataset as stored, before any split or normalisation."""

    train_x: np.ndarray  # (50000, 3072) uint8, CHW, data_batch_1 ... data_batch_5 in order
    train_y: np.ndarray  # (50000,) uint8 in 0..9
    test_x: np.ndarray   # (10000, 3072) uint8
    test_y: np.ndarray   # (10000,) uint8
    classes: tuple[str, ...]

    ARRAYS = ("train_x", "train_y", "test_x", "test_y")

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    def fingerprint(self) -> str:
        """sha256 hex of train images, train labels, test images, test labels (uint8, C order).

        It depends only on the decoded pixels and labels, so the binary and the
        python version of the same data have the same fingerprint.
        """
        h = hashlib.sha256()
        for a in self.arrays().values():
            h.update(np.ascontiguousarray(a, dtype=np.uint8))  # the buffer, no copy
        return h.hexdigest()


# ---------------------------------------------------------------- binary version


def parse_binary_batch(buf: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Records of one binary batch -> (images (N, 3072) uint8, labels (N,) uint8)."""
    if len(buf) == 0 or len(buf) % RECORD_BYTES:
        raise UserError(f"{where}: size {len(buf)} bytes is not a positive whole number of "
                        f"{RECORD_BYTES}-byte records (1 label + {N_PIXELS} pixels); the file is "
                        "truncated or not a CIFAR-10 binary batch")
    records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, RECORD_BYTES)  # (N, 3073)
    labels = records[:, 0].copy()
    check_labels(labels, where)
    return records[:, 1:], labels


def parse_binary_meta(buf: bytes, where: str) -> tuple[str, ...]:
    """batches.meta.txt: the class names, one a line (blank lines ignored)."""
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a text file of class names") from None
    return _check_classes([line.strip() for line in text.splitlines() if line.strip()], where)


# ---------------------------------------------------------------- python version


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays of bounded size and nothing else.

    ``find_class`` is the only way a pickle reaches code; it answers from a
    fixed table of checked builders and raises :class:`UserError` (naming the
    file and the global) for anything else, such as ``os.system``. Each builder
    checks what it is asked for before anything is allocated: an array's shape
    and dtype (at most ``max_bytes``, no Python objects; empty unless its bytes
    come with it), a dtype's item size, and text encoded to bytes (latin-1
    only, as Python 2's pickles need), so a small file cannot build a huge or
    uninitialised array.
    """

    BUILDERS: dict[tuple[str, str], str] = {
        ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",   # written by NumPy < 2
        ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",  # written by NumPy >= 2
        ("numpy.core.numeric", "_frombuffer"): "_frombuffer",        # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
        ("numpy", "ndarray"): "_ndarray",
        ("numpy", "dtype"): "_dtype",
        ("_codecs", "encode"): "_encode",                             # bytes in protocol 2 from Python 3
    }

    def __init__(self, file: io.BufferedIOBase, where: str, max_bytes: int):
        super().__init__(file, encoding="bytes")
        self.where, self.max_bytes = where, max_bytes

    def find_class(self, module: str, name: str) -> object:
        try:
            return getattr(self, self.BUILDERS[(module, name)])
        except KeyError:
            raise UserError(f"{self.where}: refusing to unpickle {module}.{name} (a CIFAR-10 "
                            "python batch holds only NumPy arrays, lists and strings)") from None

    def _refuse(self, what: str) -> UserError:
        return UserError(f"{self.where}: refusing to build {what}")

    def _checked_dtype(self, dtype: object) -> np.dtype:
        try:
            dt = np.dtype(dtype)
        except Exception:  # noqa: BLE001 - whatever np.dtype refuses
            raise self._refuse(f"an array of dtype {_short(dtype)}") from None
        if dt.hasobject or dt.itemsize > self.max_bytes:
            raise self._refuse(f"an array of dtype {_short(dt)} (allowed: plain numbers)")
        return dt

    def _check(self, shape: object, dtype: object, *, empty: bool = False) -> np.dtype:
        """The dtype, once an array of ``shape`` and ``dtype`` is known to be at most max_bytes (none
        when ``empty``: an array built without a buffer holds uninitialised memory until NumPy's
        ``__setstate__`` fills it from the file's bytes, checking their length against its shape)."""
        dims = (shape,) if isinstance(shape, int) else shape
        if not (isinstance(dims, tuple) and len(dims) <= 32
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in dims)):
            raise self._refuse(f"an array of shape {_short(shape)}")
        dt = self._checked_dtype(dtype)
        # NOTE: an element counts as at least one byte, so a zero-size dtype (V0, an empty record)
        # cannot hide billions of elements that a later .tolist() or iteration would materialise
        nbytes = math.prod(dims) * max(dt.itemsize, 1)
        if nbytes > self.max_bytes:
            raise self._refuse(f"an array of shape {_short(dims)} and dtype {dt} ({nbytes} bytes; a "
                               f"CIFAR-10 batch holds at most {self.max_bytes})")
        if empty and nbytes:
            raise self._refuse(f"an array of shape {_short(dims)} from no bytes (allowed: an empty "
                               "array that the pickle then fills from its own bytes, as NumPy writes it)")
        return dt

    def _reconstruct(self, cls: object, shape: object, dtype: object) -> np.ndarray:
        if cls != self._ndarray:  # what find_class gave for numpy.ndarray
            raise self._refuse(f"an array of class {_short(cls)}")
        return _reconstruct(np.ndarray, shape, self._check(shape, dtype, empty=True))

    def _frombuffer(self, buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
        return _frombuffer(buf, self._check(shape, dtype), shape, order)

    def _ndarray(self, shape: object, dtype: object = float) -> np.ndarray:
        return np.ndarray(shape, self._check(shape, dtype, empty=True))

    def _dtype(self, obj: object, align: bool = False, copy: bool = False) -> np.dtype:
        return self._checked_dtype(obj)

    def _encode(self, obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        if not (isinstance(obj, str) and encoding in ("latin1", "latin-1") and errors == "strict"):
            raise self._refuse(f"bytes by _codecs.encode({_short(obj)}, {encoding!r})")
        return codecs.encode(obj, encoding)


def restricted_loads(buf: bytes, where: str, max_bytes: int = BATCH_RECORDS * N_PIXELS) -> object:
    """Unpickle ``buf`` with :class:`RestrictedUnpickler` (arrays of at most ``max_bytes``); any
    failure is one UserError.

    The opcodes are counted first (``pickletools.genops``, which builds nothing): more than
    ``MAX_OPCODES`` is refused, so a few bytes per opcode (``DUP``, ``APPEND``) cannot build
    lists of tens of millions of items.
    """
    try:
        for count, (_op, arg, _at) in enumerate(pickletools.genops(buf), 1):
            if count > MAX_OPCODES:
                raise UserError(f"{where}: more than {MAX_OPCODES} pickle opcodes (a CIFAR-10 python "
                                "batch has fewer than 100 000); refusing to unpickle it")
            if isinstance(arg, int) and arg.bit_length() > 64:  # Python cannot even print one of 4300 digits
                raise UserError(f"{where}: a pickled integer of {arg.bit_length()} bits (a CIFAR-10 python "
                                "batch holds labels 0-9 and sizes); refusing to unpickle it")
        return shallow(RestrictedUnpickler(io.BytesIO(buf), where, max_bytes).load(), where, MAX_NESTING,
                       "a CIFAR-10 python batch (it nests 3)", shared=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle can raise almost anything
        raise UserError(f"{where}: not a readable CIFAR-10 python batch (truncated or corrupt: "
                        f"{type(exc).__name__}: {_one_line(exc)})") from None


def parse_python_batch(buf: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images (N, 3072) uint8, labels (N,) uint8)."""
    d = _str_keys(restricted_loads(buf, where), where)
    for key in ("data", "labels"):
        if key not in d:
            raise UserError(f"{where}: no {key!r} entry (not a CIFAR-10 python batch)")
    data = d["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and 0 < data.shape[0] <= BATCH_RECORDS and data.shape[1] == N_PIXELS):
        shape = getattr(data, "shape", None)
        raise UserError(f"{where}: 'data' is {type(data).__name__} {getattr(data, 'dtype', '')} "
                        f"of shape {_short(shape)}, expected uint8 of shape (N, {N_PIXELS}) with N from "
                        f"1 to {BATCH_RECORDS}")
    if data.nbytes > len(buf):  # every pixel comes from the file's own bytes
        raise UserError(f"{where}: 'data' holds {data.nbytes} bytes but the file only {len(buf)}; "
                        "refusing an array that was not read from it")
    raw = d["labels"]
    if isinstance(raw, np.ndarray):
        if raw.size != data.shape[0]:  # before .tolist(), which builds one Python object an element
            raise UserError(f"{where}: {raw.size} labels for {data.shape[0]} images")
        raw = raw.tolist() if raw.ndim == 1 else [raw]
    if not isinstance(raw, list):
        raise UserError(f"{where}: 'labels' is a {type(raw).__name__}, not a list of integers")
    if len(raw) != data.shape[0]:
        raise UserError(f"{where}: {len(raw)} labels for {data.shape[0]} images")
    for i, v in enumerate(raw):  # before any conversion: a float or a string is never rounded
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < N_CLASSES:
            what = f"{type(v).__name__} {_short(v)}"
            raise UserError(f"{where}: label {i} is {what} (allowed: integers 0-{N_CLASSES - 1})")
    return data, np.asarray(raw, dtype=np.uint8)


def parse_python_meta(buf: bytes, where: str) -> tuple[str, ...]:
    """batches.meta: a pickled dict whose 'label_names' lists the class names."""
    d = _str_keys(restricted_loads(buf, where, META_BYTES), where)
    names = d.get("label_names")
    if not isinstance(names, list):
        raise UserError(f"{where}: no 'label_names' list (not a CIFAR-10 batches.meta)")
    for i, n in enumerate(names):  # names are text, as in the binary layout's batches.meta.txt
        if not isinstance(n, (str, bytes)):
            raise UserError(f"{where}: label_names[{i}] is {type(n).__name__} {_short(n)} (allowed: text, "
                            "the name of a class)")
    return _check_classes([n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names], where)


# ---------------------------------------------------------------- the whole set


def decode(layout: Layout, read: Callable[[str], bytes], where: Callable[[str], str]) -> Decoded:
    """Parse every file of ``layout``; ``read(name)`` gives a file's bytes, ``where(name)`` its label.

    ``read`` raises :class:`UserError` for a missing file. The five training
    batches must hold the same number of records.
    """
    binary = layout.name == "binary"
    parse = parse_binary_batch if binary else parse_python_batch
    parse_meta = parse_binary_meta if binary else parse_python_meta
    batches = [parse(read(name), where(name)) for name in layout.batch_files()]
    train, (test_x, test_y) = batches[:5], batches[5]
    sizes = [len(y) for _x, y in train]
    common = max(set(sizes), key=sizes.count)
    odd = next((i for i, n in enumerate(sizes) if n != common), None)
    if odd is not None:
        raise UserError(f"{where(layout.batch_files()[odd])}: {sizes[odd]} records where the other "
                        f"training batches hold {common} (truncated or from another copy)")
    classes = parse_meta(read(layout.meta), where(layout.meta))
    return Decoded(
        train_x=np.concatenate([x for x, _y in train]),  # (50000, 3072), a fresh C-contiguous copy
        train_y=np.concatenate([y for _x, y in train]),
        test_x=np.ascontiguousarray(test_x),
        test_y=test_y,
        classes=classes,
    )


def check_labels(labels: np.ndarray, where: str) -> None:
    """Every label must be in 0..9."""
    bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{where}: label {int(labels[i])} of record {i} is outside 0-{N_CLASSES - 1} "
                        f"({bad.size} bad label{'s' if bad.size > 1 else ''} in the file)")


MAX_CLASS_NAME = 64  # characters of a class name


def _check_classes(names: list[str], where: str) -> tuple[str, ...]:
    """The class names, each printable, at most MAX_CLASS_NAME characters, and no two alike."""
    names = [n.removeprefix("\ufeff").strip() for n in names]  # a byte-order mark, a CR
    if len(names) != N_CLASSES:
        raise UserError(f"{where}: {len(names)} class names, expected {N_CLASSES}")
    bad = next((n for n in names if not n or not n.isprintable() or len(n) > MAX_CLASS_NAME), None)
    if bad is not None:
        raise UserError(f"{where}: a class name {_short(bad)} (allowed: 1 to {MAX_CLASS_NAME} printable "
                        "characters, no control characters)")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{where}: the class name {_short(twice)} is given twice (allowed: {N_CLASSES} "
                        "different names)")
    return tuple(names)


def _str_keys(obj: object, where: str) -> Mapping[str, object]:
    """The dict of a batch with bytes keys (pickled by Python 2) turned into str keys."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: holds a {type(obj).__name__}, not the dict of a CIFAR-10 python batch")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "no detail"
