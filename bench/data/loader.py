"""Load CIFAR-10: find -> verify -> decode (or reuse the cache) -> split by seed -> normalise.

Where the data is read from (the first that exists wins):

1. the data directory: the ``data_dir`` argument (``--data-dir``), else
   ``$MLPBENCH_DATA_DIR``, else :func:`default_data_dir`;
2. inside it, in this order: ``cifar-10-binary.tar.gz``, ``cifar-10-batches-bin/``,
   ``cifar-10-python.tar.gz``, ``cifar-10-batches-py/`` (what torchvision leaves);
3. if none is there and downloads are allowed, the official binary archive is
   downloaded into the data directory and its md5 checked before use.

An archive is official when its md5 is the published one. An extracted folder
has no archive checksum to compare, so it loads as unofficial; so does any
other copy, each with a one-line warning.
"""

from __future__ import annotations

import os
import urllib.error
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data import archive, cache, formats
from bench.data.dataset import Dataset, normalise
from bench.data.formats import BINARY, LAYOUTS, Decoded, Layout
from bench.config import DTYPES, Config
from bench.errors import ConfigError, UserError
from bench.io import make_dirs, owned_folder, read_bounded, remove_empty, sweep_temporaries

DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ENV_DATA_DIR = "MLPBENCH_DATA_DIR"
ENV_CACHE_DIR = "MLPBENCH_CACHE_DIR"
DEFAULTS = Config()   # the one definition of the defaults (bench.config)
DEFAULT_ORIGIN = "the default data dir"  # resolve_data_dir: neither --data-dir nor $MLPBENCH_DATA_DIR


# ---------------------------------------------------------------- where things live


def _user_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"


def default_cache_dir() -> Path:
    """Where decoded caches go: $MLPBENCH_CACHE_DIR, else $XDG_CACHE_HOME/mlpbench (~/.cache/mlpbench)."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else _user_cache_root() / "mlpbench"


def default_data_dir() -> Path:
    """Where CIFAR-10 is looked for and downloaded to: $MLPBENCH_DATA_DIR, else a per-user folder.

    The per-user folder is ``$XDG_CACHE_HOME/mlpbench/data`` (``~/.cache/mlpbench/data``).
    """
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else _user_cache_root() / "mlpbench" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """(data directory, how it was chosen): the argument > $MLPBENCH_DATA_DIR > the default."""
    if data_dir is not None and str(data_dir) == "":
        raise UserError("--data-dir is empty (allowed: a folder path; leave it out for "
                        f"${ENV_DATA_DIR} or the user cache)")
    if data_dir is not None:
        found, origin, name = Path(data_dir).expanduser(), "the data dir given explicitly", "--data-dir"
    elif os.environ.get(ENV_DATA_DIR):
        found, origin, name = default_data_dir(), f"the data dir from ${ENV_DATA_DIR}", f"${ENV_DATA_DIR}"
    else:
        found, origin, name = default_data_dir(), DEFAULT_ORIGIN, "the default data dir"
    try:
        not_folder = found.exists() and not found.is_dir()  # a file, a FIFO, a device
    except OSError:  # a name too long, a loop of links: said where the folder is read
        not_folder = False
    if not_folder:
        raise UserError(f"{name} {found} is not a folder (allowed: a folder holding {accepted_names()}, or "
                        "a new one to download into)")
    return found, origin


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One copy of CIFAR-10: an archive file or an extracted folder of one layout."""

    layout: Layout
    path: Path

    @property
    def kind(self) -> str:
        return "folder" if self.path.name == self.layout.folder else "archive"

    def files(self) -> list[Path]:
        """The files whose size and mtime decide whether the cache is stale."""
        return [self.path] if self.kind == "archive" else [self.path / f for f in self.layout.files()]


def candidates(data_dir: Path) -> list[Source]:
    """Every place a copy is accepted inside ``data_dir``, in the order they are tried."""
    out = []
    for layout in LAYOUTS:
        out += [Source(layout, data_dir / layout.archive), Source(layout, data_dir / layout.folder)]
    return out


def find_source(data_dir: Path) -> Source | None:
    """The first accepted copy in ``data_dir``; every file it reads checked to be a bounded regular file."""
    for src in candidates(data_dir):
        try:
            found = src.path.exists() and (src.kind == "folder") == src.path.is_dir()
        except OSError as exc:  # e.g. a data folder without read or search permission
            raise UserError(f"cannot look inside the data folder {data_dir} "
                            f"({exc.strerror or exc}); allowed: a folder you can read") from None
        if found:
            check_source(src)
            return src
    return None


def check_source(src: Source) -> None:
    """Refuse, before reading anything, a file of ``src`` that is not a regular file or is too big."""
    if src.kind == "archive":
        archive.check_regular(src.path, formats.ARCHIVE_BYTES)
        return
    for name in src.layout.files():
        try:
            archive.check_regular(src.path / name, formats.max_bytes(src.layout, name))
        except FileNotFoundError:
            pass  # decoding names the missing file


def accepted_names() -> str:
    names = [n for layout in LAYOUTS for n in (layout.archive, layout.folder + "/")]
    return ", ".join(names[:-1]) + " or " + names[-1]


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Loaded:
    """The decoded data of one source and what is known about it."""

    decoded: Decoded
    source: Source
    fingerprint: str      # sha256 hex of the decoded arrays (Decoded.fingerprint)
    official: bool
    md5: str | None       # of the archive; None for an extracted folder
    cache_entry: Path
    cache_status: str     # "reused", "written", or "not written (why)"

    @property
    def description(self) -> str:
        what = f"CIFAR-10 {self.source.layout.name} version, {self.source.kind} {self.source.path}"
        if self.md5 is None:
            return f"{what} (no archive checksum, unofficial)"
        return f"{what} (md5 {self.md5}, {'official' if self.official else 'unofficial'})"


def decode_source(src: Source) -> tuple[Decoded, dict]:
    """Parse a source from scratch: (decoded arrays, manifest info without classes)."""
    layout = src.layout
    if src.kind == "archive":
        digests = archive.file_digests(src.path, formats.ARCHIVE_BYTES)
        members = archive.read_tar_members(
            src.path, [f"{layout.folder}/{f}" for f in layout.files()],
            limit=lambda name: formats.max_bytes(layout, name.rsplit("/", 1)[-1]))

        def where(name: str) -> str:
            return f"{layout.folder}/{name} in {src.path}"

        def read(name: str) -> bytes:
            try:
                return members[f"{layout.folder}/{name}"]
            except KeyError:
                raise UserError(f"{src.path}: no member {layout.folder}/{name} (the CIFAR-10 "
                                f"{layout.name} layout needs {', '.join(layout.files())})") from None
    else:
        digests = {"md5": None, "sha256": None}

        def where(name: str) -> str:
            return str(src.path / name)

        def read(name: str) -> bytes:
            try:
                return read_bounded(src.path / name, formats.max_bytes(layout, name),
                                    "a CIFAR-10 file of its kind")
            except FileNotFoundError:
                raise UserError(f"{src.path / name}: missing (the CIFAR-10 {layout.name} layout "
                                f"needs {', '.join(layout.files())})") from None
            except OSError as exc:
                raise UserError(f"{src.path / name}: cannot read ({exc.strerror or exc})") from None

    decoded = formats.decode(layout, read, where)
    info = {"layout": layout.name, "kind": src.kind, "path": str(src.path), **digests,
            "fingerprint": decoded.fingerprint()}
    return decoded, info


def load_decoded(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 progress: bool = True, cache_dir: Path | None = None) -> Loaded:
    """Find, verify and decode CIFAR-10, reusing the decoded cache when it is valid.

    Warns (UserWarning, one line) when the copy is not the official archive,
    and when a corrupt cache entry is being rebuilt.
    """
    data_dir, origin = resolve_data_dir(data_dir)
    try:  # a name the file system refuses (a component too long, say) fails in the first call using it
        if origin != DEFAULT_ORIGIN and not data_dir.exists():  # a typo: no download into a new folder
            raise UserError(f"data dir {data_dir} does not exist ({origin}); allowed: an existing folder "
                            f"holding {accepted_names()}, or an empty one to download CIFAR-10 into")
        src = find_source(data_dir)
    except OSError as exc:
        raise UserError(f"cannot read data dir {data_dir} ({origin}): {exc.strerror or exc}; allowed: a "
                        f"folder this file system can hold, holding {accepted_names()}") from None
    if src is None:
        _refuse_one_level_up(data_dir)
        src = _fetch(data_dir, origin, download, progress)
    entry = cache.entry_dir(cache_dir or default_cache_dir(), src.layout.name, src.kind, src.path)
    if owned_folder(entry, 2, create=False):  # a link planted there: refused, never followed
        sweep_temporaries(entry)  # what a writer killed in an earlier run left
    try:
        stamp = cache.source_stamp(src.files())
    except OSError:
        stamp = None  # a file of the folder is missing or unreadable: decoding names it
    hit = None
    if stamp is not None:
        try:
            hit = cache.load(entry, stamp)
        except cache.CacheMiss as miss:
            if miss.corrupt:
                warnings.warn(f"{entry}: the decoded cache is corrupt ({miss}); rebuilding it from "
                              f"{src.path}", UserWarning, stacklevel=3)
    if hit is not None:
        decoded, info, status = hit.decoded, hit.info, "reused"
    else:
        decoded, info = decode_source(src)
        status = "not written (a source file could not be stamped)"
        if stamp is not None:
            try:
                cache.save(entry, decoded, stamp, info)
                status = "written"
            except OSError as exc:
                status = f"not written ({exc.strerror or exc})"
                warnings.warn(f"{entry}: cannot write the decoded cache ({exc.strerror or exc}); "
                              "loading without it", UserWarning, stacklevel=3)
    official = info["md5"] is not None and info["md5"] == src.layout.official_md5
    loaded = Loaded(decoded, src, info["fingerprint"], official, info["md5"], entry, status)
    if not loaded.official:
        warnings.warn(_unofficial_message(loaded), UserWarning, stacklevel=3)
    return loaded


def _unofficial_message(loaded: Loaded) -> str:
    layout, path = loaded.source.layout, loaded.source.path
    if loaded.md5 is None:
        return (f"{path}: an extracted folder without its archive, so no checksum can be compared "
                f"with the official {layout.archive} (md5 {layout.official_md5}); "
                "loading it as an unofficial copy (official=False)")
    return (f"{path}: md5 {loaded.md5} is not the official {layout.archive} md5 "
            f"{layout.official_md5}; loading it as an unofficial copy (official=False)")


def _refuse_one_level_up(data_dir: Path) -> None:
    """A UserError naming the folder when a copy sits one folder below ``data_dir``: the likely meant
    --data-dir (rather than a 170 MB download beside it)."""
    try:
        below = sorted(p for p in data_dir.iterdir() if p.is_dir())
    except OSError:
        return
    for sub in below:
        try:
            src = find_source(sub)
        except UserError:
            src = None
        if src is not None:
            raise UserError(f"CIFAR-10 not found in {data_dir}, but {src.path.name} is in {sub}: "
                            f"did you mean --data-dir {sub}?")


def _fetch(data_dir: Path, origin: str, download: bool, progress: bool) -> Source:
    """Download the official binary archive into ``data_dir``, or explain why not."""
    looked = ", ".join(str(s.path) + ("/" if s.kind == "folder" else "") for s in candidates(data_dir))
    supply = (f"supply a copy with --data-dir DIR or {ENV_DATA_DIR}=DIR, where DIR holds "
              f"{accepted_names()}" if origin == DEFAULT_ORIGIN else
              f"put one of {accepted_names()} into {data_dir}")
    if not download:
        raise UserError(f"CIFAR-10 not found: looked for {looked} ({origin}); downloads are "
                        f"off; {supply}")
    dest = data_dir / BINARY.archive
    # NOTE: the folders made for the download are removed again if it fails: a mistyped
    # --data-dir a/b/c must not be left behind
    created: list[Path] = []
    try:
        created = make_dirs(data_dir)
        if not os.access(data_dir, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        remove_empty(created)
        raise UserError(f"CIFAR-10 not found: looked for {looked} ({origin}), and cannot "
                        f"download into {data_dir} ({exc.strerror or exc}); {supply}") from None
    url = DOWNLOAD_URL
    try:
        archive.download(url, dest, expected_md5=formats.OFFICIAL_MD5[BINARY.name], progress=progress)
    except BaseException as exc:
        remove_empty(created)
        if not isinstance(exc, OSError):
            raise
        _download_failed(exc, looked, origin, url, supply)
    return Source(BINARY, dest)


def _download_failed(exc: OSError, looked: str, origin: str, url: str, supply: str) -> None:
    """Explain a failed download (offline, refused, timed out: urllib's URLError is an OSError)."""
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    else:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
    raise UserError(f"CIFAR-10 not found and the download failed: looked for {looked} "
                    f"({origin}); tried {url} ({' '.join(str(reason).split())}); "
                    f"{supply}. For a run without CIFAR-10, use --dataset synthetic") from None


# ---------------------------------------------------------------- split and normalisation


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of the ``n`` training images, each sorted by original index.

    ``np.random.default_rng(seed).permutation(n)``: its first ``val_size``
    entries are the validation rows, the rest the training rows.
    """
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def split_rows(n: int, *, val_size: int, seed: int,
               train_subset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_indices`, then only the first ``train_subset`` training rows (when given)."""
    if val_size >= n:
        raise ConfigError("val_size", val_size, f"an integer from 0 to {n - 1} (the training "
                          f"archive holds {n} images)")
    train_idx, val_idx = split_indices(n, val_size, seed)
    return (train_idx if train_subset is None else train_idx[:train_subset]), val_idx


def make_dataset(loaded: Loaded, *, val_size: int = DEFAULTS.val_size,
                 seed: int = DEFAULTS.seeds[0], mean: Sequence[float] = tuple(DEFAULTS.mean),
                 std: Sequence[float] = tuple(DEFAULTS.std), dtype=DEFAULTS.dtype,
                 train_subset: int | None = None) -> Dataset:
    """Split ``loaded`` by ``seed`` and normalise it (arguments as in :func:`load_dataset`)."""
    dtype = _check_arguments(val_size, seed, mean, std, dtype, train_subset)
    d = loaded.decoded
    train_x = np.asarray(d.train_x)  # a plain view, also of a memory-mapped cache file
    train_idx, val_idx = split_rows(len(train_x), val_size=val_size, seed=seed, train_subset=train_subset)
    raw = {"train": train_x[train_idx], "val": train_x[val_idx], "test": np.array(d.test_x)}  # copies
    train_y = np.asarray(d.train_y)
    y = {"train": train_y[train_idx], "val": train_y[val_idx], "test": d.test_y}
    return Dataset(
        **{f"x_{s}": normalise(raw[s], mean, std, dtype) for s in raw},
        **{f"y_{s}": np.asarray(y[s], dtype=np.int64) for s in y},
        **{f"raw_{s}": raw[s] for s in raw},
        fingerprint=loaded.fingerprint,
        official=loaded.official,
        source=loaded.description,
        classes=d.classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def load_dataset(data_dir: str | os.PathLike | None = None, *, val_size: int = DEFAULTS.val_size,
                 seed: int = DEFAULTS.seeds[0], mean: Sequence[float] = tuple(DEFAULTS.mean),
                 std: Sequence[float] = tuple(DEFAULTS.std), dtype=DEFAULTS.dtype,
                 train_subset: int | None = None, download: bool = True,
                 progress: bool = True) -> Dataset:
    """CIFAR-10 as normalised train/val/test splits.

    The validation split is ``val_size`` of the training images drawn by
    ``np.random.default_rng(seed)`` (see :func:`split_indices`); ``train_subset``
    keeps the first N rows of the training split; the test set is untouched.
    ``x_*`` are ``dtype`` (S, 3072) C-contiguous, ``y_*`` int64 (S,), ``raw_*``
    the same rows as uint8. Raises :class:`~bench.errors.UserError` (one line)
    for anything wrong with the data, and warns when the copy is unofficial.
    """
    _check_arguments(val_size, seed, mean, std, dtype, train_subset)  # before any work
    loaded = load_decoded(data_dir, download=download, progress=progress)
    return make_dataset(loaded, val_size=val_size, seed=seed, mean=mean, std=std, dtype=dtype,
                        train_subset=train_subset)


def _check_arguments(val_size, seed, mean, std, dtype, train_subset) -> np.dtype:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    if np_dtype is None or np_dtype.name not in DTYPES:
        raise ConfigError("dtype", dtype, ", ".join(DTYPES))
    if not (is_int(val_size) and val_size >= 0):
        raise ConfigError("val_size", val_size, "an integer >= 0")
    if not (is_int(seed) and seed >= 0):
        raise ConfigError("seed", seed, "an integer >= 0")
    if train_subset is not None and not (is_int(train_subset) and train_subset >= 1):
        raise ConfigError("train_subset", train_subset, "an integer >= 1, or None")
    if len(mean) != 3:
        raise ConfigError("mean", mean, "three numbers (R G B)")
    if len(std) != 3 or not all(s > 0 for s in std):
        raise ConfigError("std", std, "three numbers > 0 (R G B)")
    return np_dtype
