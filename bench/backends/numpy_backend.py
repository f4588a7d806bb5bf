"""The NumPy MLP behind the harness's Backend interface (bench.backends.api), on NumPy or CuPy.

The harness owns the loop, the batch order and the clocks; this class holds
the data on its device, takes one SGD step on a batch of row indices, and
evaluates a split. ``numpy:cpu`` runs on NumPy; ``numpy:cuda[:N]`` runs the
same code on CuPy (``pip install '.[cuda]'``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from bench.backends.api import StepRecords
from bench.backends.gather import RowGather, chunked_evaluate, upload_splits
from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config
from bench.data.dataset import Dataset
from bench.errors import UserError
from bench.roofline import Gemm, time_products
from bench.threads import numpy_gemm_library
from impl_numpy.mlp import MLP
from impl_numpy.modules import SoftmaxCrossEntropyModule
from impl_numpy.optim import SGD
from impl_numpy.xp import namespace_version, synchronize, to_numpy

CUDA_HINT = "numpy:cuda needs CuPy: pip install '.[cuda]'"


def _cuda_index(device: str) -> int | None:
    """0 for "cuda", N for "cuda:N", None for anything else."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def available(device: str) -> tuple[bool, str]:
    """Whether the NumPy backend can run on ``device``, and a one-line reason (or what it runs on)."""
    if device == "cpu":
        return True, "numpy:cpu runs NumPy on the CPU"
    index = _cuda_index(device)
    if index is None:
        return False, f"numpy:{device}: unknown device (allowed: cpu, cuda, cuda:N)"
    try:
        import cupy
    except ImportError:
        return False, CUDA_HINT
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing
        return False, f"numpy:{device}: CuPy is installed but finds no CUDA device ({exc})"
    if index >= count:
        return False, f"numpy:{device}: no CUDA device {index} (CuPy sees {count})"
    return True, f"numpy:{device} runs CuPy on CUDA device {index}"


def _namespace(device: str) -> ModuleType:
    """numpy or cupy for ``device``; a UserError saying why when it cannot run there."""
    ok, reason = available(device)
    if not ok:
        raise UserError(reason)
    if device == "cpu":
        return np
    import cupy

    cupy.cuda.Device(_cuda_index(device)).use()
    return cupy


class NumpyBackend:
    """One SGD step per call on NumPy/CuPy arrays; see bench.backends.api.Backend."""

    impl = "numpy"

    def __init__(self, config: Config, device: str = "cpu"):
        self.config = config
        self.device = device
        self.xp = _namespace(device)
        self.dtype = np.dtype(config.dtype)
        self.model: MLP | None = None
        self.optimizer: SGD | None = None
        self._splits: dict[str, tuple[Any, Any]] = {}  # the evaluated splits, val and test
        self.gather: RowGather | None = None           # the training batches
        self._batch: dict[int, tuple[Any, Any]] = {}
        self._train_loss = SoftmaxCrossEntropyModule()
        self._eval_loss = SoftmaxCrossEntropyModule()
        self._losses: list[Any] = []
        self._correct: list[Any] = []
        self._seen = 0
        self._peak_bytes = 0

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        """Once onto the device: the training images to gather batches from (``RowGather``, as
        ``Config.gather_from`` says), and the val and test splits in the config dtype, C-contiguous."""
        xp = self.xp
        self.gather = RowGather(data, self.dtype, self.config.gather_from == "uint8", xp)
        self._splits = upload_splits(data, lambda x: xp.ascontiguousarray(xp.asarray(x, dtype=self.dtype)),
                                     lambda y: xp.ascontiguousarray(xp.asarray(y, dtype=np.int64)))
        if self.model is not None and self.model.n_inputs != data.n_features:
            raise ValueError(f"the model takes {self.model.n_inputs} features, the data has "
                             f"{data.n_features}; call init_model again")
        self._n_features, self._n_classes = data.n_features, data.n_classes
        self._batch.clear()
        self._note_memory()

    def init_model(self, seed: int) -> None:
        """A fresh MLP drawn from ``np.random.default_rng(seed)``, a fresh SGD, empty records."""
        cfg = self.config
        self.model = MLP(getattr(self, "_n_features", CIFAR10_N_FEATURES), cfg.hidden_dims,
                         getattr(self, "_n_classes", CIFAR10_N_CLASSES), cfg.activation,
                         alpha=cfg.alpha, residual=cfg.residual, rng=np.random.default_rng(seed),
                         dtype=self.dtype, xp=self.xp)
        self._new_optimizer()
        self._losses, self._correct, self._seen = [], [], 0

    def _new_optimizer(self) -> None:
        cfg = self.config
        self.optimizer = SGD(self.model.parameters(), self.model.grads(), lr=cfg.lr,
                             momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def export_state(self) -> dict[str, np.ndarray]:
        return self._require_model().state_dict()

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy the weights in (names and shapes checked) and reset the momentum."""
        self._require_model().load_state_dict(state)
        self._new_optimizer()

    def _require_model(self) -> MLP:
        if self.model is None:
            raise RuntimeError("call init_model(seed) first")
        return self.model

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> Any:
        return self.xp.ascontiguousarray(self.xp.asarray(order, dtype=np.intp))

    def _batch_buffers(self, size: int) -> tuple[Any, Any]:
        """Preallocated (argmax, hit) buffers for a batch of ``size`` rows."""
        bufs = self._batch.get(size)
        if bufs is None:
            xp = self.xp
            bufs = self._batch[size] = (xp.empty(size, dtype=np.intp), xp.empty(size, dtype=bool))
        return bufs

    def train_batch(self, idx: Any) -> None:
        """Gather the rows, forward, fused loss, backward (no input gradient), SGD step."""
        model, loss_fn, xp = self.model, self._train_loss, self.xp
        x, y = self.gather(idx)                          # (S, n_inputs), (S,)
        guess, hit = self._batch_buffers(idx.shape[0])
        # a diverging run must give nan/inf losses (the harness looks for them), not warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logits = model.forward(x)                            # (S, C)
            loss = loss_fn.forward(logits, y)                    # F1, scalar
            logits.argmax(axis=1, out=guess)
            correct = xp.count_nonzero(xp.equal(guess, y, out=hit))
            model.backward(loss_fn.backward(logits, y), input_grad=False)
            self.optimizer.step()
        self._losses.append(loss)  # stays on the device under CuPy
        self._correct.append(correct)
        self._seen += idx.shape[0]

    def pop_step_records(self) -> StepRecords:
        xp = self.xp
        if self._losses:
            losses = to_numpy(xp.stack([xp.asarray(v) for v in self._losses])).astype(np.float64)
            correct = int(to_numpy(xp.stack([xp.asarray(v) for v in self._correct])).sum())
        else:
            losses, correct = np.zeros(0, dtype=np.float64), 0
        records = StepRecords(losses=losses, correct=correct, seen=self._seen)
        self._losses, self._correct, self._seen = [], [], 0
        self._note_memory()
        return records

    def synchronize(self) -> None:
        synchronize(self.xp)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, split: str) -> tuple[float, float]:
        """(mean loss, accuracy) over ``split`` in chunks of eval_batch_size; nothing kept for backward."""
        model, xp = self._require_model(), self.xp

        def sums(xb: Any, yb: Any) -> tuple[float, int]:
            logits = model.forward(xb)
            loss, right = float(self._eval_loss.forward(logits, yb)) * xb.shape[0], (xp.argmax(logits, 1) == yb).sum()
            self._note_memory()
            return loss, int(right)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return chunked_evaluate(self._splits, split, self.config.eval_batch_size, sums)
        finally:
            model.clear_cache()
            self._eval_loss.clear_cache()

    # ------------------------------------------------------------ measurement

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        """Seconds for ``repeats`` rounds of the products alone with ``xp.matmul`` (bench.roofline)."""
        xp = self.xp
        return time_products(shapes, repeats, operand=lambda a: xp.asarray(a, dtype=self.dtype),
                             transpose=lambda a: a.T,
                             empty=lambda shape: xp.empty(shape, dtype=self.dtype),
                             matmul=lambda a, b, c: xp.matmul(a, b, out=c),
                             synchronize=lambda: synchronize(xp))

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        info: dict[str, Any] = {
            "impl": self.impl, "device": self.device, "dtype": self.dtype.name,
            "activation": cfg.activation, "alpha": cfg.alpha, "residual": cfg.residual,
            "array_module": namespace_version(self.xp),
            "loss": "fused softmax cross-entropy (logsumexp - z_y)",
        }
        if self.xp is np:
            info["gemm_library"] = numpy_gemm_library()
        else:
            runtime = self.xp.cuda.runtime
            props = runtime.getDeviceProperties(self.xp.cuda.Device().id)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cuda_runtime"] = runtime.runtimeGetVersion()
            info["gemm_library"] = f"cuBLAS (CUDA runtime {info['cuda_runtime']})"
        return info

    def _note_memory(self) -> None:
        if self.xp is not np:
            self._peak_bytes = max(self._peak_bytes, self.xp.get_default_memory_pool().total_bytes())

    def peak_memory_bytes(self) -> int | None:
        """None on the CPU; on CUDA the largest CuPy pool size seen at the record/evaluate points."""
        if self.xp is np:
            return None
        self._note_memory()
        return int(self._peak_bytes)

    def __repr__(self) -> str:
        return f"NumpyBackend(device={self.device!r}, model={self.model!r})"
