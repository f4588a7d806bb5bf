"""A backend for the harness tests: the NumPy backend with a learning rate that makes it diverge."""

from __future__ import annotations

import dataclasses

from impl_numpy.backend import NumpyBackend, available  # noqa: F401 - available() is the registry hook


class DivergingBackend(NumpyBackend):
    """numpy:cpu with lr = 1e8, so its loss overflows within the first epoch."""

    def __init__(self, config, device="cpu"):
        super().__init__(dataclasses.replace(config, lr=1e8), device)
        self.impl = "diverging"
