"""Will a run fit in memory? An estimate made before any work, so that a run too big is one line.

The estimate is a lower bound of what a command holds: the loaded data (the
normalised splits and their uint8 copies, and for CIFAR-10 the decoded
arrays), plus per CPU backend its parameters, their gradients, an update's
temporary and the momentum buffers, the activations of one training batch and
of one evaluation chunk, and every step's record in a lock-step run. A run is
refused when that is more than the memory the process may still take (the
least of ``MemAvailable``, the ``ulimit -v``/``-d`` headroom and the cgroup's
``memory.max`` headroom); a run that still runs out of memory is recorded with
status ``oom`` by the run path.
"""

from __future__ import annotations

from pathlib import Path

from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, CIFAR10_TRAIN_SIZE, Config
from bench.errors import UserError
from impl_common.arch import layer_widths

GIB = 2**30
CIFAR10_TEST_SIZE = 10_000
RECORD_BYTES = 400  # one step's record (a dict of a few numbers) in a lock-step run
SCRATCH_BYTES = 64 * 2**20  # the synthetic data's float32 block, the normalisation's blocks


class NotEnoughMemory(UserError, MemoryError):
    """A run refused because it cannot fit: a one-line user error, and status ``oom`` in a record."""


def bytes_needed(config: Config, n_features: int = CIFAR10_N_FEATURES,
                 n_classes: int = CIFAR10_N_CLASSES) -> int:
    """A lower bound of one backend's bytes beyond the data (see the module doc)."""
    widths = layer_widths(n_features, config.hidden_dims, n_classes)
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    copies = 3 + (1 if config.momentum else 0)  # weights, gradients, the update's temporary, velocity
    batch_values = config.batch_size * sum(widths) * 4  # outputs, activations and their gradients
    eval_values = min(config.eval_batch_size, 10_000) * max(widths) * 2
    itemsize = 8 if config.dtype == "float64" else 4
    steps = config.epochs * (config.n_train // config.batch_size) if config.lockstep else 0
    return itemsize * (params * copies + batch_values + eval_values) + RECORD_BYTES * steps


def data_bytes(config: Config, n_features: int = CIFAR10_N_FEATURES) -> int:
    """A lower bound of the loaded data's bytes: every split in the config's dtype and as uint8."""
    itemsize = 8 if config.dtype == "float64" else 4
    if config.dataset == "synthetic":
        rows, decoded = config.n_train + 2 * config.val_size, 0
    else:
        rows = config.n_train + config.val_size + CIFAR10_TEST_SIZE
        decoded = (CIFAR10_TRAIN_SIZE + CIFAR10_TEST_SIZE) * n_features
    return rows * n_features * (itemsize + 1) + decoded + SCRATCH_BYTES


def _kib_fields(path: str, *names: str) -> dict[str, int]:
    """``{name: bytes}`` of the "Name: N kB" lines of a /proc file (what it says of them)."""
    from bench.io import read_bounded

    found = {}
    try:
        for line in read_bounded(Path(path), 2**20).decode().splitlines():
            key, _, rest = line.partition(":")
            if key in names and rest.split():
                found[key] = int(rest.split()[0]) * 1024
    except (OSError, UserError, ValueError):
        pass
    return found


def _cgroup_headroom() -> int | None:
    """The least ``memory.max - memory.current`` over this process's cgroup v2 and its parents."""
    from bench.io import read_bounded

    try:
        line = next(x for x in read_bounded(Path("/proc/self/cgroup"), 2**16).decode().splitlines()
                    if x.startswith("0::"))
    except (OSError, UserError, ValueError, StopIteration):
        return None
    folder, least = Path("/sys/fs/cgroup") / line[3:].lstrip("/"), None
    for group in (folder, *folder.parents):
        try:
            limit = read_bounded(group / "memory.max", 64).decode().strip()
            if limit != "max":
                used = int(read_bounded(group / "memory.current", 64).decode())
                least = min(int(limit) - used, least if least is not None else int(limit))
        except (OSError, UserError, ValueError):
            pass
        if group == Path("/sys/fs/cgroup"):
            break
    return least


def available() -> tuple[int, str] | None:
    """The least of what may still be allocated, and what sets it: ``MemAvailable`` of /proc/meminfo,
    the address-space and data limits (``ulimit -v``, ``-d``) less what the process already maps, and
    its cgroup's ``memory.max`` less its use; None where none of them says."""
    import resource

    room = [(b, "the machine's MemAvailable") for b in _kib_fields("/proc/meminfo", "MemAvailable").values()]
    used = _kib_fields("/proc/self/status", "VmSize", "VmData")
    limits = ((resource.RLIMIT_AS, "VmSize", "ulimit -v"), (resource.RLIMIT_DATA, "VmData", "ulimit -d"))
    for limit, field, name in limits:
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY and field in used:
            room.append((soft - used[field], f"{name} of {soft / GIB:.1f} GiB less the "
                                             f"{used[field] / GIB:.1f} GiB this process already maps"))
    cgroup = _cgroup_headroom()
    room += [(cgroup, "the cgroup's memory.max less its use")] if cgroup is not None else []
    if not room:
        return None
    least, what = min(room, key=lambda pair: pair[0])
    return max(least, 0), what


def available_bytes() -> int | None:
    """:func:`available`'s bytes alone."""
    found = available()
    return found[0] if found else None


def check_memory(config: Config, n_cpu_backends: int, *, data: bool = True, extra: int = 0,
                 flags: str = "--hidden-dims, --batch-size, --eval-batch-size or --train-subset, or "
                              "fewer backends") -> None:
    """A UserError, before any work, when ``n_cpu_backends`` backends of ``config`` (and the data,
    unless ``data`` is False: already loaded; and ``extra`` bytes a command adds) cannot fit;
    ``flags`` names what the user can lower."""
    models = n_cpu_backends * bytes_needed(config)
    loaded = data_bytes(config) if data else 0
    need = models + loaded + extra
    found = available()
    if found is not None and need > found[0]:
        have, what = found
        raise NotEnoughMemory(
            f"the run needs at least {need / GIB:.1f} GiB ({n_cpu_backends} CPU backend(s) of "
            f"hidden_dims {config.hidden_dims if len(config.hidden_dims) <= 8 else '[...]'}, batch "
            f"{config.batch_size}, {config.dtype}: {models / GIB:.1f} GiB; data of {config.n_train} "
            f"training images: {loaded / GIB:.1f} GiB"
            + (f"; the command's own: {extra / GIB:.1f} GiB" if extra else "")
            + f") and {have / GIB:.1f} GiB is available ({what}); use smaller {flags}")
