"""Archives: checksums, safe reading of tar members, and the download.

Nothing is ever extracted to disk: the members a layout needs are read
straight out of the ``.tar.gz`` into memory, after every member of the archive
has passed :func:`check_member` (no absolute path, no ``..`` component, no
symbolic or hard link, no device or FIFO). So an archive cannot write outside
its folder, and a read-only data directory stays untouched.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import sys
import tarfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from bench.errors import UserError

CHUNK = 1 << 20  # bytes read at a time when hashing or downloading


def file_digests(path: Path) -> dict[str, str]:
    """{"md5": hex, "sha256": hex} of a file, read once."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                md5.update(chunk)
                sha256.update(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


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
        with tarfile.open(archive, "r:gz") as tar:
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
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{archive}: not a readable .tar.gz archive (truncated or corrupt: "
                        f"{' '.join(str(exc).split()) or type(exc).__name__})") from None
    return found


def check_regular(path: Path, limit: int) -> int:
    """The size of ``path``; a UserError unless it is a regular file of at most ``limit`` bytes.

    Checked before anything opens the file: a device (``/dev/zero``) or a FIFO
    would otherwise be read forever or block.
    """
    try:
        st = path.stat()  # follows a link: its target is what would be read
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: not a regular file (a device, FIFO or folder); refusing to read it")
    if st.st_size > limit:
        raise UserError(f"{path}: {st.st_size} bytes, more than the {limit} a CIFAR-10 file of its "
                        "kind can be; refusing to read it")
    return st.st_size


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
    try:
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
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
