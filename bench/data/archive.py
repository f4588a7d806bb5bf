"""Archives: checksums, safe reading of tar members, and the download.

Nothing is ever extracted to disk: the members a layout needs are read
straight out of the ``.tar.gz`` into memory, after every member of the archive
has passed :func:`check_member` (no absolute path, no ``..`` component, no
symbolic or hard link, no device or FIFO). So an archive cannot write outside
its folder, and a read-only data directory stays untouched.

Before ``tarfile`` reads the archive, :func:`check_headers` walks the
decompressed stream's raw 512-byte headers, each parsed by ``tarfile``'s own
``TarInfo.frombuf`` and followed as ``tarfile`` follows it: a header it cannot
parse, an extended header (pax, GNU long name or link) larger than
``HEADER_BYTES`` or one that changes a member's size, a sparse member, more
than ``MAX_MEMBERS`` headers or more than ``RAW_BYTES`` of decompressed data
(a decompression bomb) is refused, so neither the parser nor the decompressor
can be made to run for minutes or fill the memory. Every file is opened by the one bounded reader,
:func:`bench.io.open_regular`.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import sys
import tarfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from bench.data.formats import ARCHIVE_BYTES
from bench.errors import UserError
from bench.io import open_regular, refuse_link

CHUNK = 1 << 20  # bytes read at a time when hashing or downloading
BLOCK = 512      # a tar header, and the unit of its data
HEADER_BYTES = 64 * 1024  # the largest pax or GNU extended header accepted (names, not data)
MAX_MEMBERS = 256         # headers at most (the official archives hold 8 members)
MAX_EXTENDED = 4          # extended headers in a row at most (pax global, pax, long name, long link)
RAW_BYTES = 400 * 2**20   # decompressed bytes at most (the official archives: about 178 MiB)
PAX = {b"x", b"g", b"X"}  # pax headers: per file, global, Solaris
EXTENDED = PAX | {b"L", b"K"}  # and GNU long name and link


def file_digests(path: Path, limit: int) -> dict[str, str]:
    """{"md5": hex, "sha256": hex} of a regular file of at most ``limit`` bytes, read once."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with open_regular(path, limit, "a CIFAR-10 file of its kind") as fh:
            while chunk := fh.read(CHUNK):
                md5.update(chunk)
                sha256.update(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def _skip(fh: BinaryIO, n: int) -> int:
    """Read and drop ``n`` bytes; how many there were."""
    left = n
    while left > 0:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
    return n - left


def _refuse(archive: Path, why: str) -> UserError:
    return UserError(f"{archive}: refusing an archive whose {why}")


def check_headers(fh: BinaryIO, archive: Path) -> None:
    """Walk the raw headers of a decompressed tar stream exactly as ``tarfile`` will read them; a
    UserError for a header ``tarfile`` cannot parse, an extended header over ``HEADER_BYTES`` (or one
    that changes a member's size), a sparse member, more than ``MAX_EXTENDED`` extended headers in a
    row, more than ``MAX_MEMBERS`` headers or more than ``RAW_BYTES`` in all."""
    seen = headers = run = 0
    while True:
        header = fh.read(BLOCK)
        if len(header) < BLOCK or header == bytes(BLOCK):
            return  # the end (or a truncated archive: tarfile says which)
        try:  # tarfile's own parser: its numbers (NUL-terminated octal or base-256), checksum, types
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise _refuse(archive, f"header {headers + 1} cannot be parsed ({exc})") from None
        kind, size = info.type, info.size
        headers += 1
        run = run + 1 if kind in EXTENDED else 0
        if size < 0 or (kind in EXTENDED and size > HEADER_BYTES):
            raise _refuse(archive, f"{'extended ' * (kind in EXTENDED)}header (type "
                          f"{kind.decode('latin-1')!r}) is {size} bytes (allowed: 0 to "
                          f"{HEADER_BYTES if kind in EXTENDED else RAW_BYTES}; CIFAR-10 member names are short)")
        what = ("a sparse member" if kind == tarfile.GNUTYPE_SPARSE else
                f"more than {MAX_EXTENDED} extended headers in a row" if run > MAX_EXTENDED else
                f"more than {MAX_MEMBERS} headers" if headers > MAX_MEMBERS else None)
        if what:
            raise _refuse(archive, f"it has {what}, which a CIFAR-10 archive never has (the official one holds "
                          "8 plain members)")
        # as tarfile: data follows a regular file, an extended header or an unknown type, nothing else
        data = -(-size // BLOCK) * BLOCK if (kind in EXTENDED or info.isreg()
                                             or kind not in tarfile.SUPPORTED_TYPES) else 0
        seen += BLOCK + data
        if seen > RAW_BYTES:
            raise UserError(f"{archive}: more than {RAW_BYTES} bytes once decompressed (a CIFAR-10 "
                            "archive holds about 180 MB); refusing to read it")
        if kind in PAX:
            if re.search(rb"size=|GNU\.sparse", fh.read(data)):  # a pax record that moves the next header
                raise _refuse(archive, f"pax header (type {kind.decode('latin-1')!r}) sets a size or a "
                              "sparse map (a CIFAR-10 archive's members are small and plain)")
        elif _skip(fh, data) < data:
            return


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Raise :class:`UserError` unless ``member`` is a plain file or folder inside the archive."""
    name = member.name
    why = None
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):  # a root or a drive
        why = "an absolute path"
    elif ".." in PurePosixPath(name.replace("\\", "/")).parts:
        why = "a '..' component, pointing outside the archive"
    elif member.issym():
        why = f"a symbolic link to {member.linkname!r}"
    elif member.islnk():
        why = f"a hard link to {member.linkname!r}"
    elif member.isdev():
        why = "a device or FIFO"
    elif not (member.isfile() or member.isdir()):
        why = f"an unsupported member type {member.type!r}"
    if why:
        raise UserError(f"{archive}: refusing unsafe archive member {name!r} ({why})")


def read_tar_members(archive: Path, wanted: Iterable[str],
                     limit: Callable[[str], int] | None = None) -> dict[str, bytes]:
    """Bytes of the ``wanted`` members (names inside the archive), in one pass.

    Every member is checked by :func:`check_member` first, wanted or not; a
    wanted member that is absent is simply missing from the result. A wanted
    member larger than ``limit(name)`` bytes is refused before it is read.
    """
    wanted = set(wanted)
    found: dict[str, bytes] = {}
    try:
        with open_regular(archive, ARCHIVE_BYTES, "a CIFAR-10 archive") as raw:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                check_headers(stream, archive)  # before tarfile parses a single header
            raw.seek(0)
            found = _read_members(raw, archive, wanted, limit)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise UserError(f"{archive}: not a readable .tar.gz archive (truncated or corrupt: "
                        f"{' '.join(str(exc).split()) or type(exc).__name__})") from None
    return found


def _read_members(raw: BinaryIO, archive: Path, wanted: set[str],
                  limit: Callable[[str], int] | None) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=raw, mode="r:gz") as tar:
        for member in tar:  # in archive order, so the gzip stream is read forward only
            check_member(member, archive)
            name = member.name[2:] if member.name.startswith("./") else member.name
            if name in wanted and member.isfile():
                if limit is not None and member.size > limit(name):
                    raise UserError(f"{archive}: member {name} is {member.size} bytes, more than "
                                    f"the {limit(name)} a CIFAR-10 file of its kind can be; "
                                    "refusing to read it")
                fh = tar.extractfile(member)
                assert fh is not None  # a regular file always has one
                found[name] = fh.read()
    return found


def check_regular(path: Path, limit: int) -> None:
    """A UserError unless ``path`` is a regular file of at most ``limit`` bytes (FileNotFoundError when
    it is missing). Opens it without blocking and reads nothing (:func:`bench.io.open_regular`)."""
    try:
        open_regular(path, limit, "a CIFAR-10 file of its kind").close()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def download(url: str, dest: Path, *, expected_md5: str, progress: bool = True) -> None:
    """Fetch ``url`` to ``dest`` with a progress bar on stderr; keep it only if its md5 matches.

    The bytes go to ``dest`` + ``.part`` first and are renamed into place only
    after the md5 check, so a partial or corrupt download never survives: it is
    deleted and reported. Network failures raise :class:`OSError` (including
    ``urllib.error.URLError``) for the caller to explain; a wrong checksum raises
    :class:`UserError`.
    """
    from tqdm import tqdm  # imported here: only a download needs it

    part = dest.with_name(dest.name + ".part")
    md5 = hashlib.md5(usedforsecurity=False)
    refuse_link(dest)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW  # never through a planted link
        with urllib.request.urlopen(url, timeout=60) as response, \
                os.fdopen(os.open(part, flags, 0o666), "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                      desc=f"downloading {dest.name}", disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except http.client.HTTPException as exc:  # e.g. IncompleteRead: the connection dropped
        part.unlink(missing_ok=True)
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    found = md5.hexdigest()
    if found != expected_md5:
        part.unlink(missing_ok=True)
        raise UserError(f"downloaded {url} but its md5 {found} is not the expected {expected_md5} "
                        f"(incomplete or altered download); deleted it, nothing was kept in {dest.parent}")
    os.replace(part, dest)
