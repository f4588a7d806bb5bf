"""The JAX MLP (``impl_jax``) behind the harness's Backend interface, on ``jax:cpu`` or ``jax:cuda[:N]``.

Every function that runs on the device is compiled ahead of time in
:meth:`JaxBackend.init_model` (``jit(...).lower(...).compile()``, timed as
``compile_seconds`` and outside every clock): the training step, the
whole-epoch scan with ``jax_scan``, and the evaluation of each chunk shape.
No step compiles anything, so no epoch clock holds a compilation; a shape
that was not compiled is an error, not a silent recompile.

With ``Config.jax_scan`` the steps of an epoch are one ``lax.scan`` (one
dispatch per epoch, the counterpart of ``--cuda-graph``): ``train_batch``
only records the batch's rows and :meth:`JaxBackend.synchronize` (inside the
epoch clock, like a device sync) runs them. A run of any other length (the
warm-up) takes its steps one by one.

Needs the ``jax`` extra (``pip install '.[jax]'``: JAX on the CPU;
``jax[cuda12]`` for ``jax:cuda``). Without JAX the backend is listed and
skipped with that reason.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from bench.backends.api import StepRecords, check_state
from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config
from bench.data.dataset import EVALUATED, Dataset
from bench.errors import UserError
from bench.roofline import Gemm, time_products
from bench.threads import default_threads
from impl_common.arch import Arch

try:
    import jax
    import jax.numpy as jnp

    import impl_jax
except ImportError as exc:  # listed and skipped with this reason (bench.backends.resolve)
    jax = None
    MISSING = f"JAX is not installed ({exc}); pip install '.[jax]'"

PLATFORMS = {"cpu": "cpu", "cuda": "cuda"}  # our device name -> JAX's platform name
# every compiled function of this process, by what it depends on (JaxBackend._key): a second
# backend of the same settings and shapes (the next seed, a sweep point) compiles nothing
COMPILED: dict[tuple, Any] = {}


def _device(device: str):
    """The JAX device for "cpu", "cuda" or "cuda:N"; a UserError saying why when there is none."""
    kind, _, index = device.partition(":")
    if kind not in PLATFORMS or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UserError(f"jax:{device}: unknown device (allowed: cpu, cuda, cuda:N)")
    # NOTE: JAX takes 75 % of a GPU's memory when its CUDA client starts (at the first devices()
    # call), leaving torch:cuda and numpy:cuda in the same process short; allocate as needed
    # instead (a user's own setting wins)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        found = jax.devices(PLATFORMS[kind])
    except RuntimeError as exc:  # no such platform in this jaxlib (e.g. the CPU-only wheel)
        raise UserError(f"jax:{device}: JAX {jax.__version__} has no {kind} backend "
                        f"({str(exc).splitlines()[0]}); for CUDA: pip install 'jax[cuda12]'") from None
    if int(index or 0) >= len(found):
        raise UserError(f"jax:{device}: no such device (JAX sees {len(found)} {kind} device(s))")
    return found[int(index or 0)]


def available(device: str) -> tuple[bool, str]:
    """Whether JAX can run on ``device``, and a one-line reason (or what it runs on)."""
    if jax is None:
        return False, MISSING
    try:
        dev = _device(device)
    except UserError as exc:
        return False, str(exc)
    return True, f"jax:{device} runs JAX {jax.__version__} (XLA) on {dev.device_kind}"


class JaxBackend:
    """Parameters, momentum and data as JAX arrays on one device; see bench.backends.api.Backend."""

    impl = "jax"

    def __init__(self, config: Config, device: str = "cpu"):
        ok, reason = available(device)
        if not ok:
            raise UserError(reason)
        self.config, self.device, self.dev = config, device, _device(device)
        cores = default_threads()
        if self.dev.platform == "cpu" and config.threads is not None and config.threads < cores:
            # NOTE: XLA's CPU client starts one pool of as many threads as the process has cores,
            # and JAX offers no way to resize it afterwards
            raise UserError(f"jax:cpu runs XLA's thread pool on all {cores} cores and cannot be "
                            f"limited to threads={config.threads} (allowed with jax:cpu: {cores}, "
                            "or none)")
        self.dtype = np.dtype(config.dtype)
        self.opt = impl_jax.SGD(config.lr, config.momentum, config.weight_decay)
        self._train: tuple[Any, ...] = ()  # (images, labels[, shift, scale]): what a step gathers from
        self._splits: dict[str, tuple[Any, Any]] = {}  # the evaluated splits
        self._last: Any = None  # the output of the latest dispatch: what synchronize waits for
        self.compile_seconds = 0.0  # spent compiling for the current model (0: all was compiled before)
        self.params = self.velocity = None
        self._pending: list[np.ndarray] = []  # jax_scan: the rows of the steps not yet run
        self._losses: list[Any] = []
        self._corrects: list[Any] = []
        self._seen = 0

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        """To the device once: what training batches are gathered from (``Config.gather_from``: the
        normalised split, or the uint8 images and their normalisation rows), the val and test splits
        in the config dtype; every y as int32."""
        images, norm = data.train_source(self.dtype, self.config.gather_from == "uint8")
        with impl_jax.precision(self.dtype):
            def put(a, dtype):
                return jax.device_put(np.asarray(a, dtype=dtype), self.dev)
            self._train = (put(images, np.uint8 if norm else self.dtype), put(data.y_train, np.int32),
                           *(put(r, self.dtype) for r in norm or ()))
            self._splits = {name: (put(data.split(name)[0], self.dtype), put(data.split(name)[1], np.int32))
                            for name in EVALUATED}
        self._rows = impl_jax.take_rows if norm is None else normalised_rows
        self.arch = Arch(data.n_features, tuple(self.config.hidden_dims), data.n_classes,
                         self.config.activation, self.config.alpha, self.config.residual)

    def init_model(self, seed: int) -> None:
        """Weights from ``jax.random.key(seed)``, zero momentum; every function compiled (timed) that
        this process has not compiled yet."""
        if not self._train:
            raise RuntimeError("JaxBackend.init_model: call load_data first")
        with impl_jax.precision(self.dtype), jax.default_device(self.dev):
            self.params = impl_jax.init_params(self.arch, jax.random.key(seed), self.dtype)
            self.velocity = impl_jax.zero_velocity(self.params, self.opt)
            self.compile_seconds = 0.0
            self._compile_all()
        self._reset_records()

    def _compile_all(self) -> None:
        """The step (and the epoch's scan) and the gather for this batch size, the evaluation for
        every chunk shape."""
        batch, n_train = self.config.batch_size, len(self._train[1])
        self._train_step = self._executable("step", np.zeros(batch, dtype=np.int32))
        self._gather = self._executable("gather", np.zeros(batch, dtype=np.int32))
        self._epoch_steps = n_train // batch
        if self.config.jax_scan:
            self._train_scan = self._executable("scan", np.zeros((self._epoch_steps, batch), np.int32))
        chunk = self.config.eval_batch_size
        for x, y in self._splits.values():
            for size in {min(chunk, len(y)), len(y) % chunk} - {0}:
                self._executable("eval", x, y, np.int32(0), size=size)

    def _executable(self, what: str, *args: Any, size: int = 0):
        """The compiled function ``what`` ("step", "scan", or "eval" of ``size`` rows) for these
        argument shapes, compiled (traced, lowered and compiled by XLA, all timed) the first time."""
        key = (what, size, self.dev, self.arch, self.opt, self.dtype, self._rows,
               *((np.shape(a), np.dtype(a.dtype)) for a in (*self._train, *args)))  # all it depends on
        if key not in COMPILED:
            t0 = time.perf_counter()
            if what == "eval":
                lowered = impl_jax.jit_evaluate(self.arch, size).lower(self.params, *args)
            elif what == "gather":
                lowered = jax.jit(self._rows).lower(self._train, *args)
            else:
                step = impl_jax.jit_train_step(self.arch, self.opt, scan=what == "scan", gather=self._rows)
                lowered = step.lower(self.params, self.velocity, self._train, *args)
            COMPILED[key] = lowered.compile()
            self.compile_seconds += time.perf_counter() - t0
        return COMPILED[key]

    def export_state(self) -> dict[str, np.ndarray]:
        """Host copies of the weights under the shared names."""
        self._run_pending()
        return {name: np.array(v) for name, v in self.params.items()}

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """The weights from ``state`` (names and shapes checked), zero momentum."""
        own = {name: v.shape for name, v in self.params.items()}
        check_state(own, state)
        self._run_pending()
        with impl_jax.precision(self.dtype):
            self.params = {n: jax.device_put(np.asarray(state[n], dtype=self.dtype), self.dev)
                           for n in own}
            self.velocity = impl_jax.zero_velocity(self.params, self.opt)

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> np.ndarray:
        # NOTE: the order stays on the host and each step passes its rows with the call (a
        # small copy, part of the call): slicing a device array is a dispatch of its own, several
        # times the cost of a small step (docs/jax.md)
        return np.ascontiguousarray(order, dtype=np.int32)

    def train_batch(self, idx: np.ndarray) -> None:
        """One step on rows ``idx`` (dispatched, not waited for); with jax_scan, recorded for the scan."""
        if self.config.jax_scan:
            self._pending.append(idx)
        else:
            self._step(idx)
        self._seen += len(idx)

    def gather(self, idx: np.ndarray) -> tuple[Any, Any]:
        """Training rows ``idx`` gathered on the device (uint8 rows normalised as gathered), as the
        step does inside its compiled function: (S, F), (S,); dispatched, not waited for."""
        with impl_jax.precision(self.dtype):
            self._last = self._gather(self._train, idx)
        return self._last

    def _step(self, idx: np.ndarray) -> None:
        with impl_jax.precision(self.dtype):
            self.params, self.velocity, loss, correct = self._train_step(
                self.params, self.velocity, self._train, idx)
        self._last = loss
        self._losses.append(loss)
        self._corrects.append(correct)

    def _run_pending(self) -> None:
        """jax_scan: run the recorded steps, as one scan when they are an epoch, else one by one."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        if len(pending) != self._epoch_steps:  # not an epoch (the warm-up): step by step
            for idx in pending:
                self._step(idx)
            return
        with impl_jax.precision(self.dtype):
            self.params, self.velocity, losses, correct = self._train_scan(
                self.params, self.velocity, self._train, np.stack(pending))  # rows (K, S)
        self._last = losses
        self._losses.append(losses)
        self._corrects.append(correct)

    def pop_step_records(self) -> StepRecords:
        """The steps since the last pop: one device-to-host copy of their losses and counts."""
        self._run_pending()
        with impl_jax.precision(self.dtype):
            losses, corrects = jax.device_get((self._losses, self._corrects))
        rec = StepRecords(losses=np.concatenate([np.ravel(v) for v in losses]).astype(np.float64)
                          if losses else np.zeros(0), correct=int(sum(np.sum(c) for c in corrects)),
                          seen=self._seen)
        self._reset_records()
        return rec

    def synchronize(self) -> None:
        """Run what jax_scan recorded, then wait for the device: for the latest dispatch's outputs,
        which JAX runs after every earlier one (see gemm_seconds)."""
        self._run_pending()
        jax.block_until_ready(self._last)

    def _reset_records(self) -> None:
        self._losses, self._corrects, self._seen = [], [], 0

    # ------------------------------------------------------------ evaluation

    def evaluate(self, split: str) -> tuple[float, float]:
        """(mean loss, accuracy) on ``split`` in chunks of eval_batch_size, each chunk sliced inside
        its compiled function (a slice outside would compile and dispatch one of its own)."""
        if split not in EVALUATED:
            raise ValueError(f"unknown split {split!r} (allowed: {', '.join(EVALUATED)})")
        self._run_pending()
        x, y = self._splits[split]
        n, chunk = len(y), self.config.eval_batch_size
        if n == 0:
            return math.nan, math.nan
        with impl_jax.precision(self.dtype):
            parts = [self._executable("eval", x, y, np.int32(s), size=min(chunk, n - s))(
                self.params, x, y, np.int32(s)) for s in range(0, n, chunk)]
            sums = np.array(jax.device_get(parts), dtype=np.float64)  # (chunks, 2): loss sum, correct
        return float(sums[:, 0].sum()) / n, int(sums[:, 1].sum()) / n

    # ------------------------------------------------------------ measurement

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        """Seconds for ``repeats`` rounds of the products alone, each a jitted ``jnp.dot``.

        A stored-transposed operand is transposed inside the jitted function,
        where XLA folds the transpose into the product, as in the step.
        """
        last: dict[object, Any] = {}  # the latest product of each shape: memory for one round only

        def matmul(a, b, c):
            (a, ta), (b, tb) = a, b
            last[c] = _dot(ta, tb)(a, b)

        def synchronize():
            # NOTE: JAX runs dispatched computations in order (tested on the CPU: every earlier
            # product is ready once a later computation is), so waiting for the last ones suffices
            jax.block_until_ready(list(last.values()))

        with impl_jax.precision(self.dtype):
            return time_products(shapes, repeats,
                                 operand=lambda a: (jax.device_put(a.astype(self.dtype), self.dev), False),
                                 transpose=lambda a: (a[0], True),
                                 empty=lambda shape: object(),  # a key naming the product
                                 matmul=matmul, synchronize=synchronize)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"impl": self.impl, "device": self.device, "device_name": self.dev.device_kind,
                "jax_version": jax.__version__, "dtype": c.dtype, "jax_scan": c.jax_scan,
                "threads": default_threads() if self.dev.platform == "cpu" else None,
                "compile_seconds": self.compile_seconds,
                "optimizer": "impl_jax.sgd under jax.jit, params and momentum donated"}

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory where the device reports it (CUDA); None on the CPU."""
        stats = self.dev.memory_stats() if self.dev.platform != "cpu" else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def normalised_rows(data: tuple[Any, ...], rows: Any) -> tuple[Any, Any]:
    """``gather_from = "uint8"``: rows of the uint8 images normalised as gathered, (x - shift) / scale
    in the dtype of the normalisation rows (bench.data.dataset.normalise_into's arithmetic, whose
    numbers are the normalised split's), and their labels: (S, F), (S,)."""
    images, labels, shift, scale = data
    x = images[rows].astype(shift.dtype) - shift                          # (S, F), uint8 -> float: exact
    # NOTE: XLA rewrites a division by a broadcast row as a product with its reciprocal, one
    # rounding more: 26 % of a batch's numbers then differed from the normalised split by an ulp.
    # The barrier keeps the division a division (tests/test_jax_backend.py, bit for bit)
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(scale, x.shape)), labels[rows]


_DOTS: dict[tuple[bool, bool], Any] = {}


def _dot(ta: bool, tb: bool):
    """``jnp.dot(op(a), op(b))`` under jit, op transposing a stored-transposed operand."""
    if (ta, tb) not in _DOTS:
        _DOTS[ta, tb] = jax.jit(lambda a, b: jnp.dot(a.T if ta else a, b.T if tb else b))
    return _DOTS[ta, tb]
