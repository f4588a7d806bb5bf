"""Backends for the harness tests: the NumPy backend with a learning rate that diverges, or is 1 % off."""

from __future__ import annotations

import dataclasses

from bench.backends.numpy_backend import NumpyBackend, available  # noqa: F401 - the registry hook


class DivergingBackend(NumpyBackend):
    """numpy:cpu with lr = 1e8, so its loss overflows within the first epoch."""

    def __init__(self, config, device="cpu"):
        super().__init__(dataclasses.replace(config, lr=1e8), device)
        self.impl = "diverging"


class SkewedBackend(NumpyBackend):
    """numpy:cpu stepping with a learning rate 1 % above the config's: a wrong step to catch."""

    def __init__(self, config, device="cpu"):
        super().__init__(dataclasses.replace(config, lr=config.lr * 1.01), device)
        self.impl = "skewed"


class ExplodingBackend(NumpyBackend):
    """numpy:cpu whose every training step raises: a backend that fails inside a comparison."""

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.impl = "exploding"

    def train_batch(self, idx):
        raise ValueError("the solver rejected the step")


class SlowGemmBackend(NumpyBackend):
    """numpy:cpu whose GEMM-only reference claims 100 s per epoch: every epoch is 'faster than its own
    matrix products', the impossible figure the timing flags must catch."""

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.impl = "slowgemm"

    def gemm_seconds(self, shapes, repeats):
        return 100.0


class HungryBackend(NumpyBackend):
    """numpy:cpu whose first step runs out of memory."""

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.impl = "hungry"

    def train_batch(self, idx):
        raise MemoryError("Unable to allocate 74.5 GiB for an array")


class InterruptingBackend(NumpyBackend):
    """numpy:cpu whose first step is interrupted (Ctrl-C before the first epoch)."""

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.impl = "interrupting"

    def train_batch(self, idx):
        raise KeyboardInterrupt
