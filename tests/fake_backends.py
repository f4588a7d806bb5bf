"""Backends for the harness tests: the NumPy backend with a learning rate that diverges, or is 1 % off."""

from __future__ import annotations

import dataclasses

import numpy as np

from bench.backends.api import StepRecords
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


class ScriptClock:
    """The fake clock of the scripted backends: only their steps move it."""

    now = 0.0

    def __call__(self) -> float:
        return ScriptClock.now


SCRIPT: dict[str, dict] = {}  # impl -> {"step": [s per step, per epoch], "gemm": [...], "acc": {seed: a}}


class ScriptedBackend:
    """A backend whose every figure is scripted: epoch k's steps each advance ScriptClock by
    SCRIPT[impl]["step"][k - 1] seconds, its k-th GEMM-only bracket takes SCRIPT[impl]["gemm"][k]
    seconds (bracket 0 before the first epoch), and its test accuracy is SCRIPT[impl]["acc"][seed]."""

    impl = "scripted"

    def __init__(self, config, device="cpu"):
        self.device, self.config = device, config
        self.script = SCRIPT[self.impl]
        self.brackets = self.n = 0
        self.seed = None

    def load_data(self, data):
        self.steps = len(data.y_train) // self.config.batch_size

    def init_model(self, seed):  # every run starts its script afresh
        self.seed, self.brackets = seed, 0

    def device_indices(self, order):
        return np.asarray(order)

    def train_batch(self, idx):
        steps = self.script["step"]
        ScriptClock.now += steps[min(max(self.brackets - 1, 0), len(steps) - 1)]
        self.n += 1

    def pop_step_records(self):
        n, self.n = self.n, 0
        return StepRecords(losses=np.full(n, 1.0), correct=n, seen=n * self.config.batch_size)

    def synchronize(self):
        pass

    def evaluate(self, split):
        return 1.0, self.script["acc"][self.seed] if split == "test" else 0.5

    def export_state(self):
        return {}

    def import_state(self, state):
        pass

    def gemm_seconds(self, shapes, repeats):
        if repeats < self.steps or self.config.hidden_dims == [8]:  # warm-up, or the fixed-cost model
            return 0.0
        gemm = self.script["gemm"]
        self.brackets += 1
        return gemm[min(self.brackets - 1, len(gemm) - 1)]

    def describe(self):
        return {"impl": self.impl, "device": self.device, "gemm_library": f"{self.impl} BLAS 1.0"}

    def peak_memory_bytes(self):
        return None


class CleanBackend(ScriptedBackend):
    impl = "clean"


class MixedBackend(ScriptedBackend):
    impl = "mixed"


class FlaggedBackend(ScriptedBackend):
    impl = "flagged"
