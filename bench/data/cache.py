"""The decoded cache: the uint8 arrays of one source, kept as .npy files with a manifest.

One entry per source (an archive or an extracted folder), in its own folder
under the cache directory (never next to the source, which may be read-only)::

    <cache_dir>/cifar10/<layout>-<kind>-<hash of the source path>/
        train_x.npy  train_y.npy  test_x.npy  test_y.npy  manifest.json

Checks, and when they run:

* **stale** (every load, cheap): the manifest records each source file's size,
  mtime and a blake2b of its first and last 64 KiB; if any differ the entry is
  rebuilt from the source.
* **corrupt** (every load, ~50 ms for the full set): each array's file size,
  shape and dtype, and a CRC-32 of its bytes (zlib, ~4 GB/s) against the
  manifest. CRC-32 catches flipped, zeroed or truncated bytes; it is no defence
  against deliberate tampering, which the cache does not claim.
* **edited** (every load): the manifest carries a sha256 ``seal`` of its own
  content (source stamp, array specs and info: the fingerprint, the archive's
  md5 and whether it is official). An entry whose manifest was edited by hand
  fails the seal and is rebuilt from the source, so a result can never report
  an edited fingerprint or ``official: true`` by accident. (Anyone who
  recomputes the seal can still forge it: the cache guards against accidents,
  not attackers.)
* **when writing**: the full sha256 fingerprint and the archive's md5/sha256
  are computed once from the decoded data and stored in the manifest.
  Temporary files a killed writer left in the entry are removed first.

Every file is written to a temporary name and moved into place with
``os.replace``; the old manifest is removed first and the new one written last,
so a reader never pairs a manifest with arrays it does not describe. Every
file is read through the one bounded reader (``bench.io``): a manifest or an
array that is not a regular file of a plausible size (a link to ``/dev/zero``,
a FIFO) is a corrupt entry, rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.formats import ARCHIVE_BYTES, BATCH_RECORDS, N_PIXELS, Decoded
from bench.errors import UserError
from bench.io import atomic_write, open_regular, owned_folder, read_json, sweep_temporaries

CACHE_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_BYTES = 1 << 20  # a manifest is about 2 KiB
ARRAY_BYTES = 6 * BATCH_RECORDS * N_PIXELS + 4096  # the largest .npy of an entry: every image, a header
PROBE_BYTES = 64 * 1024  # hashed at each end of every source file for the staleness check


class CacheMiss(Exception):
    """The entry cannot be used; ``corrupt`` tells a damaged entry from a stale or absent one."""

    def __init__(self, reason: str, corrupt: bool = False):
        super().__init__(reason)
        self.corrupt = corrupt


@dataclass(frozen=True)
class Entry:
    """What a usable cache entry holds besides the arrays."""

    decoded: Decoded
    info: dict[str, Any]  # the manifest's "info": fingerprint, md5, sha256, official, ...


def entry_dir(cache_dir: Path, layout: str, kind: str, source: Path) -> Path:
    """The entry folder of one source (keyed by its resolved path)."""
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "cifar10" / f"{layout}-{kind}-{key}"


def source_stamp(files: list[Path]) -> list[dict[str, Any]]:
    """Size, mtime and a probe hash of each source file (raises OSError if one is missing)."""
    stamp = []
    for path in files:
        probe = hashlib.blake2b(digest_size=16)
        try:
            fh = open_regular(path, ARCHIVE_BYTES)
        except UserError as exc:  # not a regular file: decoding refuses it with the same line
            raise OSError(str(exc)) from None
        with fh:
            st = os.fstat(fh.fileno())
            probe.update(fh.read(PROBE_BYTES))
            if st.st_size > PROBE_BYTES:
                fh.seek(max(PROBE_BYTES, st.st_size - PROBE_BYTES))
                probe.update(fh.read(PROBE_BYTES))
        stamp.append({"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "probe": probe.hexdigest()})
    return stamp


def seal(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's content (every key but the seal), in a canonical JSON form."""
    body = {k: v for k, v in manifest.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def crc32(a: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order)."""
    return zlib.crc32(np.ascontiguousarray(a))  # the buffer, no copy


def load(entry: Path, stamp: list[dict[str, Any]]) -> Entry:
    """The entry's arrays and info, or :class:`CacheMiss` saying why not."""
    try:
        manifest = read_json(entry / MANIFEST, MANIFEST_BYTES, "a cache manifest")
    except OSError as exc:  # absent (or the cache folder unreadable): nothing to reuse
        raise CacheMiss(f"no usable cache ({exc.strerror or exc})") from None
    except UserError as exc:  # not JSON, not a regular file, too large
        raise CacheMiss(str(exc), corrupt=True) from None
    if not isinstance(manifest, dict) or manifest.get("version") != CACHE_VERSION:
        raise CacheMiss("written by another version")
    if manifest.get("seal") != seal(manifest):
        raise CacheMiss("manifest.json fails its seal (edited after it was written)", corrupt=True)
    if manifest.get("source") != stamp:
        raise CacheMiss("the source changed since the cache was written")
    arrays: dict[str, np.ndarray] = {}
    try:
        for name in Decoded.ARRAYS:
            spec = manifest["arrays"][name]
            path = entry / f"{name}.npy"
            with open_regular(path, ARRAY_BYTES, "a cached array") as fh:  # checked, then mapped
                size = os.fstat(fh.fileno()).st_size
            if size != spec["bytes"]:
                raise CacheMiss(f"{path.name} is {size} bytes, expected {spec['bytes']}", corrupt=True)
            a = np.load(path, mmap_mode="r", allow_pickle=False)  # read once by the CRC below
            if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"]:
                raise CacheMiss(f"{path.name} holds {a.dtype} {a.shape}, expected "
                                f"{spec['dtype']} {tuple(spec['shape'])}", corrupt=True)
            if crc32(a) != spec["crc32"]:
                raise CacheMiss(f"{path.name} fails its CRC-32 check", corrupt=True)
            arrays[name] = a
        info = manifest["info"]
        missing = {"fingerprint", "md5", "sha256", "classes"} - set(info)
        if missing:
            raise CacheMiss(f"the manifest lacks {', '.join(sorted(missing))}", corrupt=True)
        return Entry(Decoded(**arrays, classes=tuple(info["classes"])), info)
    except CacheMiss:
        raise
    except UserError as exc:
        raise CacheMiss(str(exc), corrupt=True) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheMiss(f"unreadable ({type(exc).__name__}: {exc})", corrupt=True) from None


def save(entry: Path, decoded: Decoded, stamp: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Write the entry atomically (temp files + os.replace); raises OSError if it cannot, a UserError
    when the entry or its ``cifar10`` folder is a link."""
    owned_folder(entry, 2, create=True)  # <cache>/cifar10/<entry>: never through a link
    sweep_temporaries(entry)
    (entry / MANIFEST).unlink(missing_ok=True)
    for name in Decoded.ARRAYS:  # a link planted in the cache is removed, never written through
        if (entry / f"{name}.npy").is_symlink():
            (entry / f"{name}.npy").unlink()
    specs = {}
    for name, a in decoded.arrays().items():
        a = np.ascontiguousarray(a)
        path = entry / f"{name}.npy"
        atomic_write(path, lambda fh, a=a: np.save(fh, a, allow_pickle=False), binary=True)
        specs[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": crc32(a),
                       "bytes": path.stat().st_size}
    manifest = {"version": CACHE_VERSION, "source": stamp, "arrays": specs,
                "info": {**info, "classes": list(decoded.classes)}}
    manifest["seal"] = seal(manifest)
    text = json.dumps(manifest, indent=1)
    atomic_write(entry / MANIFEST, lambda fh: fh.write(text.encode()), binary=True)
