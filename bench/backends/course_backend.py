"""A user's course-style NumPy MLP as a harness backend: ``course:PATH`` (a folder, a ``modules.py``, or a module name).

When the implementation has an ``MLP`` class (``mlp_numpy.py``), the student's
own MLP is trained: its constructor, its forward and its backward, the
course's loss on top (``SoftMaxModule`` when its forward returns logits, then
``CrossEntropyModule``). Otherwise, or when that MLP cannot run the config
(another activation or alpha, layers that cannot be found; a constructor
parameter named like ``alpha`` is given the config's), the network is
assembled from the student's modules, ``LinearModule`` and the activation in
turn, and the report says so and why (``describe()["note"]``). Either way it
trains in the harness's one loop on the same batches as every other backend
and, with ``--lockstep``, from the same initial weights.

Every interface the course had is detected from the code
(:mod:`bench.checks.interface`): ``ELUModule(alpha)``, ``ELUModule()``
(alpha 1 only) or ``ReLUModule()``; ``LinearModule`` with or without
``input_layer``; the weight as (out, in) or (in, out), moved in and out by a
transpose, never a reshape; the bias as (out,), (1, out) or (out, 1);
integer or one-hot labels. Before any work the constructor runs one forward
and backward of the student's code on a small batch: what the config asks
for and the code cannot do, or code that fails there, is one line (exit 2).
The SGD update is the project's (``impl_numpy.optim``, O1-O3) applied to the
student's parameters and gradients, so a difference measured is the student's
forward and backward and nothing else; ``clear_cache()`` runs after every
step when the student's grads accumulate and it resets them (the 2021 design).

Loading the implementation runs the user's code, in this process; ``python -m
bench.check PATH`` checks it module by module, in a process of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.backends.api import StepRecords
from bench.backends.gather import RowGather
from bench.backends.numpy_backend import NumpyBackend
from bench.checks.gradcheck import UserCodeError, call
from bench.checks.interface import Interface, detect, labels_as
from bench.checks.loader import load_course
from bench.checks.network import build_mlp, returns_probabilities
from bench.config import Config
from bench.data.dataset import EVALUATED, Dataset
from bench.errors import UserError
from bench.roofline import Gemm
from bench.threads import numpy_gemm_library
from impl_common.arch import init_std, layer_widths
from impl_numpy.optim import SGD

PROBE_INPUTS, PROBE_CLASSES, PROBE_BATCH = 6, 3, 4
NAMES = {"elu": "ELUModule", "relu": "ReLUModule"}


def available(device: str) -> tuple[bool, str]:
    """``device`` is the implementation's path or module name: can it be loaded?"""
    try:
        impl = load_course(device)
    except UserError as exc:
        return False, str(exc)
    return True, f"course:{device} trains {impl.describe()}"


@dataclass
class Net:
    """The network being trained: its forward and backward, its LinearModules in order, where from."""

    forward: Any
    backward: Any
    linears: list[Any]
    clear: list[Any] = field(default_factory=list)  # the clear_cache methods to call after a step
    note: str = ""


class CourseBackend:
    """The user's MLP (or its modules composed into the config's MLP), trained step by step by the harness."""

    impl = "course"

    def __init__(self, config: Config, device: str):
        if config.residual:
            raise UserError(f"backend course:{device} has no residual blocks in the course interface; "
                            "drop --residual or leave it out")
        self.config, self.device = config, device
        self.course = load_course(device)
        self.iface: Interface = detect(self.course)
        acts = self.iface.activations
        if config.activation not in acts:
            raise UserError(f"backend course:{device} offers {' and '.join(NAMES[a] for a in acts)} only; "
                            f"--activation {config.activation} cannot run on it (use --activation {acts[0]})")
        if config.activation == "elu" and not self.iface.elu_alpha and config.alpha != 1.0:
            raise UserError(f"backend course:{device} has ELUModule() without alpha (alpha = 1); --alpha "
                            f"{config.alpha:g} cannot run on it (use --alpha 1)")
        self.dtype = np.dtype(config.dtype)
        self.probs, self.clear_each_step = False, False
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.net: Net | None = None
        self._losses: list[float] = []
        self._correct, self._seen = 0, 0
        try:
            self._probe()
        except UserCodeError as exc:
            raise UserError(f"backend course:{device}: {exc.phase} {exc.message} on a batch of "
                            f"{PROBE_BATCH} (python -m bench.check {device} checks every module)") from None

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        self.gather = RowGather(data, self.dtype, self.config.gather_from == "uint8")  # as numpy:cpu
        self._splits = {name: (np.ascontiguousarray(data.split(name)[0], dtype=self.dtype),
                               np.asarray(data.split(name)[1], dtype=np.int64)) for name in EVALUATED}
        self.n_features, self.n_classes = data.n_features, data.n_classes

    def init_model(self, seed: int) -> None:
        """The student's network, its weights drawn from ``seed`` (Kaiming, as the project's models)."""
        widths = layer_widths(self.n_features, self.config.hidden_dims, self.n_classes)
        self.net = self._build(widths)
        self._note = self.net.note
        self.import_state(_kaiming(widths, seed))
        self.softmax = self.iface.new("SoftMaxModule")
        self.loss = self.iface.new("CrossEntropyModule")
        self._reset_records()

    def export_state(self) -> dict[str, np.ndarray]:
        out = {}
        for i, lin in enumerate(self.net.linears):
            w = self.iface.user_weight(np.asarray(lin.params["weight"]))  # (out, in) either way
            out[f"linears.{i}.weight"] = w.astype(self.dtype)
            out[f"linears.{i}.bias"] = np.asarray(lin.params["bias"]).reshape(w.shape[0]).astype(self.dtype)
        return out

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """The weights into the user's ``params`` (in place, their layout and dtype kept), then a new SGD."""
        for i, lin in enumerate(self.net.linears):
            self.iface.set_linear(lin, np.asarray(state[f"linears.{i}.weight"], dtype=np.float64),
                                  np.asarray(state[f"linears.{i}.bias"], dtype=np.float64), dtype=None)
        params = [lin.params[k] for lin in self.net.linears for k in ("weight", "bias")]
        # NOTE: the gradients are copied into these buffers after every backward, so the
        # optimizer works whether the user's backward overwrites grads in place or rebinds them
        self._grads = [np.zeros_like(p) for p in params]
        self.optimizer = SGD(params, self._grads, lr=self.config.lr, momentum=self.config.momentum,
                             weight_decay=self.config.weight_decay)

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(order, dtype=np.intp)

    def train_batch(self, idx: np.ndarray) -> None:
        """The course step: forward, the loss, backward, then SGD on the student's params and grads."""
        x, y = self.gather(idx)                                                # (S, F), (S,)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out, loss = self._step(self.net, self.softmax, self.loss, x, y)
            for buf, g in zip(self._grads, _grads(self.net)):
                buf[...] = g
            self.optimizer.step()
            for clear in self.net.clear if self.clear_each_step else ():
                clear()
        self._losses.append(loss)
        self._correct += int((np.argmax(out, axis=1) == y).sum())
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
                out = np.asarray(self.net.forward(x[s:s + chunk]))
                p = out if self.probs else self.softmax.forward(out)
                target = labels_as(self.iface.labels, y[s:s + chunk], self.n_classes)
                total += float(self.loss.forward(p, target)) * len(out)
                correct += int((np.argmax(out, axis=1) == y[s:s + chunk]).sum())
        return total / len(y), correct / len(y)

    # ------------------------------------------------------------ measurement

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        """The NumPy backend's GEMM-only timing (NumPy's matmul, as the course code uses)."""
        return NumpyBackend(self.config, "cpu").gemm_seconds(shapes, repeats)

    def describe(self) -> dict[str, Any]:
        return {"impl": self.impl, "device": "cpu", "source": self.course.describe(),
                "interface": self.iface.describe(), "note": self._note, "dtype": self.dtype.name,
                "gemm_library": numpy_gemm_library() + ", if the code uses NumPy's matmul",
                "optimizer": "impl_numpy.optim.SGD on the user's params and grads"
                             + ("; clear_cache() after every step" if self.clear_each_step else "")}

    def peak_memory_bytes(self) -> int | None:
        return None

    # ------------------------------------------------------------ inside

    def _build(self, widths: list[int]) -> Net:
        """The student's MLP when it can run this config, else the net assembled from the modules."""
        act, alpha = self.config.activation, self.config.alpha
        why = "no MLP class beside modules.py"
        if self.course.MLP is not None:
            try:
                net = build_mlp(self.iface, widths, dtype=self.dtype, alpha=alpha if act == "elu" else None)
                why = ("" if net.activation == act and (act == "relu" or set(net.alphas) <= {alpha})
                       else f"its MLP builds {NAMES[net.activation]}s"
                            + (f" with alpha {net.alphas[0]:g}" if net.activation == "elu" else "")
                            + f", the config asks for {act}" + (f" with alpha {alpha:g}" if act == "elu" else ""))
            except UserCodeError as exc:
                why = f"its MLP cannot be used: {exc.phase} {exc.message}"
            if not why:
                clear = getattr(net.mlp, "clear_cache", None)
                return Net(net.mlp.forward, net.mlp.backward, net.linears, [clear] if callable(clear) else [],
                           "trains the student's own MLP class (its forward and backward) from "
                           f"{getattr(self.course.mlp_module, '__file__', 'its MLP module')}")
        layers, linears = [], []
        for i in range(len(widths) - 1):
            linears.append(self.iface.linear(widths[i], widths[i + 1], input_layer=i == 0))
            layers.append(linears[-1])
            if i < len(widths) - 2:
                layers.append(self.iface.activation(act, alpha))

        def forward(x: np.ndarray) -> np.ndarray:
            for layer in layers:
                x = _array(layer, "forward", layer.forward(x))
            return x

        def backward(dout: np.ndarray) -> None:
            for layer in reversed(layers):
                dout = _array(layer, "backward", layer.backward(dout))

        clear = [m.clear_cache for m in layers if callable(getattr(m, "clear_cache", None))]
        return Net(forward, backward, linears, clear, f"the network was assembled from the student's modules "
                   f"(Linear, {NAMES[act]}, ..., Linear), not the student's own MLP: {why}")

    def _step(self, net: Net, softmax: Any, loss_module: Any, x: np.ndarray, y: np.ndarray
              ) -> tuple[np.ndarray, float]:
        """Forward, the course's loss, backward; the output and the loss (the grads left in the modules)."""
        out = net.forward(x)
        p = out if self.probs else softmax.forward(out)                      # (S, C)
        target = labels_as(self.iface.labels, y, p.shape[1])
        loss = float(loss_module.forward(p, target))
        dout = loss_module.backward(p, target)
        net.backward(dout if self.probs else softmax.backward(dout))
        return out, loss

    def _probe(self) -> None:
        """One forward and backward of the student's code on a small batch, twice, nothing updated:
        that it runs and returns NumPy arrays of the right shapes, whether its MLP returns
        probabilities, and whether its grads accumulate (then clear_cache() must reset them)."""
        widths = layer_widths(PROBE_INPUTS, self.config.hidden_dims, PROBE_CLASSES)
        net = self._build(widths)
        self._note = net.note
        rng = np.random.default_rng(0)
        state = _kaiming(widths, 0)
        for i, lin in enumerate(net.linears):
            self.iface.set_linear(lin, state[f"linears.{i}.weight"], rng.normal(size=widths[i + 1]), dtype=None)
        x = rng.normal(size=(PROBE_BATCH, PROBE_INPUTS)).astype(self.dtype)
        y = np.arange(PROBE_BATCH) % PROBE_CLASSES
        out = call("forward", net.forward, x)
        if not isinstance(out, np.ndarray) or out.shape != (PROBE_BATCH, PROBE_CLASSES):
            raise UserCodeError("forward", f"returned {type(out).__name__} {np.shape(out)}, expected a NumPy "
                                f"array of shape {(PROBE_BATCH, PROBE_CLASSES)}")
        self.probs = returns_probabilities(out)
        modules = (self.iface.new("SoftMaxModule"), self.iface.new("CrossEntropyModule"))

        def grads() -> np.ndarray:
            call("train step", self._step, net, *modules, x, y)
            return _grads(net)[0].copy()

        first, second = grads(), grads()
        if np.any(first) and np.allclose(second, 2 * first) and net.clear:
            for clear in net.clear:
                call("clear_cache", clear)
            self.clear_each_step = bool(np.allclose(grads(), first))

    def _reset_records(self) -> None:
        self._losses, self._correct, self._seen = [], 0, 0


def _array(module: Any, method: str, value: Any) -> np.ndarray:
    """What a module of an assembled net returned, which the next one takes: a NumPy array."""
    if not isinstance(value, np.ndarray):
        raise UserCodeError(f"{type(module).__name__}.{method}", f"returned {type(value).__name__}, not a "
                            "NumPy array")
    return value


def _grads(net: Net) -> list[np.ndarray]:
    """Every parameter gradient, weight then bias per layer, in the shape of its parameter."""
    out = []
    for lin in net.linears:
        for key in ("weight", "bias"):
            g, p = lin.grads.get(key) if isinstance(getattr(lin, "grads", None), dict) else None, lin.params[key]
            if not isinstance(g, np.ndarray) or g.size != np.size(p) or (key == "weight" and g.shape != p.shape):
                raise UserCodeError("backward", f"left grads['{key}'] of shape {np.shape(g)} for params['{key}'] "
                                    f"of shape {np.shape(p)}")
            out.append(g.reshape(np.shape(p)))
    return out


def _kaiming(widths: list[int], seed: int) -> dict[str, np.ndarray]:
    """Weights (out, in) drawn from ``seed`` as the project's models draw them, biases zero."""
    rng = np.random.default_rng(seed)
    state = {}
    for i, (m, n) in enumerate(zip(widths[:-1], widths[1:])):
        state[f"linears.{i}.weight"] = rng.normal(0.0, init_std(i, widths), size=(n, m))
        state[f"linears.{i}.bias"] = np.zeros(n)
    return state
