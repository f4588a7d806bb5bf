"""A user's course-style NumPy MLP as a harness backend: ``course:PATH`` (a folder, a ``modules.py``, or a module name).

The network is composed from the user's own modules, the way the course
assignment does it: ``LinearModule(in, out, input_layer=...)`` and
``ELUModule(alpha)`` in turn for the hidden layers, a last ``LinearModule``,
then ``SoftMaxModule`` and ``CrossEntropyModule`` for the loss; backward goes
through the same modules in reverse. So it trains in the harness's one loop
on the same batches as every other backend and, with ``--lockstep``, from the
same initial weights (copied into ``params``). Only what the course interface
offers can be asked for: ELU hidden layers, no residual blocks (anything else
is a one-line error). The SGD update is the project's (``impl_numpy.optim``,
O1-O3) applied to the user's parameters and gradients, so a difference
measured is the user's forward and backward and nothing else.

Loading the implementation runs the user's code (``bench.checks.loader``);
``python -m bench.check PATH`` checks it module by module first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.backends.api import StepRecords
from bench.backends.gather import RowGather
from bench.checks.layers import detect_labels, labels_as
from bench.checks.loader import CourseImpl, load_course
from bench.config import Config
from bench.data.dataset import EVALUATED, Dataset
from bench.errors import UserError
from bench.roofline import Gemm, time_products
from impl_common.arch import init_std, layer_widths
from impl_numpy.optim import SGD


def available(device: str) -> tuple[bool, str]:
    """``device`` is the implementation's path or module name: can it be loaded?"""
    try:
        impl = load_course(device)
    except UserError as exc:
        return False, str(exc)
    return True, f"course:{device} trains {impl.describe()}"


class CourseBackend:
    """The user's modules composed into the config's MLP, trained step by step by the harness."""

    impl = "course"

    def __init__(self, config: Config, device: str):
        if config.activation != "elu":
            raise UserError(f"backend course:{device} offers ELUModule only; --activation "
                            f"{config.activation} cannot run on it (use --activation elu)")
        if config.residual:
            raise UserError(f"backend course:{device} has no residual blocks in the course interface; "
                            "drop --residual or leave it out")
        self.config, self.device = config, device
        self.course: CourseImpl = load_course(device)
        self.dtype = np.dtype(config.dtype)
        self.labels = detect_labels(self.course, np.random.default_rng(0))
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.layers: list[Any] = []
        self.linears: list[Any] = []
        self._losses: list[float] = []
        self._correct, self._seen = 0, 0

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        self.gather = RowGather(data, self.dtype, self.config.gather_from == "uint8")  # as numpy:cpu
        self._splits = {name: (np.ascontiguousarray(data.split(name)[0], dtype=self.dtype),
                               np.asarray(data.split(name)[1], dtype=np.int64)) for name in EVALUATED}
        self.n_features, self.n_classes = data.n_features, data.n_classes

    def init_model(self, seed: int) -> None:
        """The user's layers, their weights drawn from ``seed`` (Kaiming, as the project's models)."""
        c, course = self.config, self.course
        widths = layer_widths(self.n_features, c.hidden_dims, self.n_classes)
        self.linears, self.layers = [], []
        for i in range(len(widths) - 1):
            lin = _construct(course.LinearModule, widths[i], widths[i + 1], i == 0)
            self.linears.append(lin)
            self.layers.append(lin)
            if i < len(widths) - 2:
                self.layers.append(course.ELUModule(c.alpha))
        rng = np.random.default_rng(seed)
        state = {}
        for i, (m, n) in enumerate(zip(widths[:-1], widths[1:])):
            state[f"linears.{i}.weight"] = rng.normal(0.0, init_std(i, widths), size=(n, m))
            state[f"linears.{i}.bias"] = np.zeros(n)
        self.import_state(state)
        self.softmax, self.loss = course.SoftMaxModule(), course.CrossEntropyModule()
        self._reset_records()

    def export_state(self) -> dict[str, np.ndarray]:
        out = {}
        for i, lin in enumerate(self.linears):
            w = np.asarray(lin.params["weight"])
            out[f"linears.{i}.weight"] = w.astype(self.dtype).copy()
            out[f"linears.{i}.bias"] = np.asarray(lin.params["bias"]).reshape(w.shape[0]).astype(self.dtype)
        return out

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """The weights into the user's ``params`` (in place, their shapes and dtype kept), then a new SGD."""
        for i, lin in enumerate(self.linears):
            for key in ("weight", "bias"):
                old = lin.params[key]
                value = np.asarray(state[f"linears.{i}.{key}"]).reshape(np.shape(old))
                if isinstance(old, np.ndarray) and old.flags.writeable:
                    old[...] = value
                else:
                    lin.params[key] = np.array(value, dtype=self.dtype)
        # NOTE: the gradients are copied into these buffers after every backward, so the
        # optimizer works whether the user's backward overwrites grads in place or rebinds them
        self._grads = [np.zeros_like(np.asarray(lin.params[k])) for lin in self.linears
                       for k in ("weight", "bias")]
        self.optimizer = SGD([lin.params[k] for lin in self.linears for k in ("weight", "bias")],
                             self._grads, lr=self.config.lr, momentum=self.config.momentum,
                             weight_decay=self.config.weight_decay)

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(order, dtype=np.intp)

    def train_batch(self, idx: np.ndarray) -> None:
        """The course step: forward, SoftMax, CrossEntropy, backward in reverse, then SGD."""
        x, y = self.gather(idx)                                                # (S, F), (S,)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logits = self._forward(x)
            probs = self.softmax.forward(logits)                               # (S, C)
            target = labels_as(self.labels, y, self.n_classes)
            loss = float(self.loss.forward(probs, target))
            dout = self.softmax.backward(self.loss.backward(probs, target))    # dL/dlogits
            for layer in reversed(self.layers):
                dout = layer.backward(dout)
            for buf, (lin, key) in zip(self._grads, ((lin, k) for lin in self.linears
                                                     for k in ("weight", "bias"))):
                buf[...] = np.asarray(lin.grads[key]).reshape(buf.shape)
            self.optimizer.step()
        self._losses.append(loss)
        self._correct += int((np.argmax(logits, axis=1) == y).sum())
        self._seen += len(idx)

    def pop_step_records(self) -> StepRecords:
        rec = StepRecords(losses=np.array(self._losses, dtype=np.float64), correct=self._correct,
                          seen=self._seen)
        self._reset_records()
        return rec

    def synchronize(self) -> None:
        pass

    def evaluate(self, split: str) -> tuple[float, float]:
        x, y = self._splits[split]
        total, correct, chunk = 0.0, 0, self.config.eval_batch_size
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for s in range(0, len(y), chunk):
                logits = self._forward(x[s:s + chunk])
                probs = self.softmax.forward(logits)
                total += float(self.loss.forward(probs, labels_as(self.labels, y[s:s + chunk],
                                                                  self.n_classes))) * len(logits)
                correct += int((np.argmax(logits, axis=1) == y[s:s + chunk]).sum())
        return total / len(y), correct / len(y)

    # ------------------------------------------------------------ measurement

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        return time_products(shapes, repeats, operand=lambda a: np.asarray(a, dtype=self.dtype),
                             transpose=lambda a: a.T,
                             empty=lambda shape: np.empty(shape, dtype=self.dtype),
                             matmul=lambda a, b, c: np.matmul(a, b, out=c), synchronize=lambda: None)

    def describe(self) -> dict[str, Any]:
        return {"impl": self.impl, "device": "cpu", "source": self.course.describe(),
                "labels": self.labels, "dtype": self.dtype.name,
                "optimizer": "impl_numpy.optim.SGD on the user's params and grads"}

    def peak_memory_bytes(self) -> int | None:
        return None

    def _forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def _reset_records(self) -> None:
        self._losses, self._correct, self._seen = [], 0, 0


def _construct(cls: type, m: int, n: int, input_layer: bool) -> Any:
    """``LinearModule(m, n, input_layer=...)``, or ``LinearModule(m, n)`` where it takes no flag."""
    try:
        return cls(m, n, input_layer=input_layer)
    except TypeError:
        return cls(m, n)
