"""Will a run fit in memory? An estimate made before any work, so that a model too big is one line.

The estimate is a lower bound of what one CPU backend holds beyond the loaded
data: its parameters, their gradients, an update's temporary and the momentum
buffers, plus the activations of one training batch and of one evaluation
chunk. A run is refused when the CPU backends of a command together need more
than the memory the system says is available (``MemAvailable``); a run that
still runs out of memory is recorded with status ``oom`` by the run path.
"""

from __future__ import annotations

from pathlib import Path

from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config
from bench.errors import UserError
from impl_common.arch import layer_widths

GIB = 2**30


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
    return itemsize * (params * copies + batch_values + eval_values)


def available_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo, or None where the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(config: Config, n_cpu_backends: int) -> None:
    """A UserError, before any work, when ``n_cpu_backends`` backends of ``config`` cannot fit."""
    if n_cpu_backends < 1:
        return
    need = n_cpu_backends * bytes_needed(config)
    have = available_bytes()
    if have is not None and need > have:
        raise NotEnoughMemory(f"the model needs at least {need / GIB:.1f} GiB for {n_cpu_backends} CPU "
                        f"backend(s) (hidden_dims {config.hidden_dims}, batch {config.batch_size}, "
                        f"{config.dtype}) and {have / GIB:.1f} GiB is available; use smaller "
                        "--hidden-dims, --batch-size or --eval-batch-size, or fewer backends")
