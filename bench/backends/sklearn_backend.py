"""scikit-learn's ``MLPClassifier`` as a harness backend (``sklearn:cpu``), driven as far as it allows.

The harness loop (``bench.run``) calls :meth:`SklearnBackend.train_batch`
once per batch; scikit-learn cannot take one step from outside, so
``train_batch`` only records the batch's row indices, and
:meth:`SklearnBackend.synchronize` (inside the epoch clock, like a device
sync) gathers the epoch's rows in the harness's order and runs ONE
``partial_fit`` over them with ``shuffle=False`` and ``batch_size=B``: the
same batches, in the same order, as every other backend. What cannot be made
identical (init, the weight-decay mapping, the loss clipping) and how it is
handled: docs/peers.md.

Needs the ``peers`` extra; importing this module without scikit-learn raises
ImportError, which the registry turns into a one-line error naming the extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.neural_network import MLPClassifier

from bench.backends.api import StepRecords, check_state
from bench.backends.gather import RowGather
from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config
from bench.data.dataset import EVALUATED, Dataset
from bench.errors import UserError
from bench.roofline import Gemm
from bench.backends.numpy_backend import NumpyBackend
from impl_numpy.mlp import MLP

SKLEARN_ACTIVATIONS = ("relu", "tanh")  # of the suite's activations, the ones MLPClassifier has


def available(device: str) -> tuple[bool, str]:
    """scikit-learn runs on the CPU only."""
    if device == "cpu":
        return True, "scikit-learn on the CPU"
    return False, f"scikit-learn runs on the CPU only (ask for sklearn:cpu, not sklearn:{device})"


class ProbedMLPClassifier(MLPClassifier):
    """``MLPClassifier`` that also records every SGD step's batch loss and correct count.

    The harness records, for every backend, each step's mean batch loss and
    how many of the batch's forward-pass predictions were right.
    ``partial_fit`` keeps only the epoch mean (``loss_curve_``), so two
    private methods are wrapped to read each batch as it goes by:
    ``_forward_pass`` (its last activation is the batch's softmax) and
    ``_backprop`` (its ``y`` is the one-hot batch). The recorded loss is the
    mean ``-log p_y`` of that softmax (the data term alone, not clipped at
    scikit-learn's eps), the same quantity every other backend records.
    Nothing scikit-learn computes is changed; the probe adds an argmax and a
    log over (S, C) and (S,) per step.
    The wrappers rely only on ``_forward_pass(activations)`` and on the
    leading ``(X, y)`` and the return value of ``_backprop`` (scikit-learn
    1.7 added ``sample_weight`` after ``y``; ``*args`` takes either form);
    tested with scikit-learn 1.9.1. :func:`check_probe` fails loudly if a
    version drops them, and :meth:`SklearnBackend.synchronize` if a version
    stops calling them once per batch.
    """

    def _forward_pass(self, activations):
        activations = super()._forward_pass(activations)
        self.probe_probs_ = activations[-1]  # (S, C) softmax of the current batch
        return activations

    def _backprop(self, X, y, *args, **kwargs):
        loss, coef_grads, intercept_grads = super()._backprop(X, y, *args, **kwargs)
        probs = self.probe_probs_                         # (S, C)
        labels = y.argmax(axis=1)                         # (S,) from the one-hot (S, C) bool
        p_y = probs[np.arange(len(labels)), labels]       # (S,)
        # the harness's loss, mean -log p_y: scikit-learn's own batch loss clips p to
        # [eps, 1 - eps] (no sample above 15.9 in float32) and adds its L2 term; see docs/peers.md
        self.probe_losses_.append(float(-np.mean(np.log(np.maximum(p_y, np.finfo(p_y.dtype).tiny)))))
        self.probe_correct_ += int(np.count_nonzero(probs.argmax(axis=1) == labels))
        return loss, coef_grads, intercept_grads

    def reset_probe(self) -> None:
        self.probe_losses_: list[float] = []
        self.probe_correct_ = 0


def check_probe() -> str | None:
    """None if this scikit-learn has the two private methods the probe wraps, else why not."""
    missing = [m for m in ("_forward_pass", "_backprop") if not hasattr(MLPClassifier, m)]
    if missing:
        return (f"scikit-learn {sklearn.__version__}'s MLPClassifier has no {', '.join(missing)} "
                "(the per-step records need them; tested with scikit-learn 1.9.1)")
    return None


class SklearnBackend:
    """One ``MLPClassifier(solver="sgd")`` and the dataset as host arrays; see bench.backends.api.Backend."""

    impl = "sklearn"

    def __init__(self, config: Config, device: str = "cpu"):
        ok, reason = available(device)
        if not ok:
            raise UserError(f"backend sklearn:{device} is not available: {reason}")
        if config.activation not in SKLEARN_ACTIVATIONS:
            raise UserError(f"backend sklearn:cpu: scikit-learn's MLPClassifier has no "
                            f"{config.activation} activation; use --activation relu or "
                            f"--activation tanh (or leave sklearn:cpu out)")
        if config.residual:
            raise UserError("backend sklearn:cpu: scikit-learn's MLPClassifier has no residual "
                            "blocks; use --no-residual (or leave sklearn:cpu out)")
        problem = check_probe()
        if problem:
            raise UserError(f"backend sklearn:cpu: {problem}")
        self.config = config
        self.device = device
        self.dtype = np.dtype(config.dtype)
        # scikit-learn's coef gradient is (X^T delta + alpha W) / S, torch's g + weight_decay W
        # with g = X^T delta / S: alpha = weight_decay * S gives the same update of the weights.
        # NOTE: scikit-learn never decays the intercepts; torch.optim.SGD decays biases too.
        self.alpha = config.weight_decay * config.batch_size
        self.clf: ProbedMLPClassifier | None = None
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._epoch_x: np.ndarray | None = None  # (steps * S, n_inputs) the epoch's rows in order
        self._pending: list[np.ndarray] = []     # row indices of the batches not yet stepped on
        self._seen = 0
        self._n_features, self._n_classes = CIFAR10_N_FEATURES, CIFAR10_N_CLASSES
        # the GEMM-only reference: scikit-learn multiplies with NumPy's matmul, on NumPy's BLAS
        self._gemm = NumpyBackend(config, "cpu")

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        """The training images to gather from (``RowGather``); val and test as C-contiguous host
        arrays of the config dtype (float32 stays float32)."""
        if data.n_classes < 3:
            raise UserError(f"backend sklearn:cpu needs 3 or more classes (with {data.n_classes} "
                            "MLPClassifier has one logistic output, not a softmax)")
        self.gather = RowGather(data, self.dtype, self.config.gather_from == "uint8")  # as numpy:cpu
        self._splits = {name: (np.ascontiguousarray(data.split(name)[0], dtype=self.dtype),
                               np.ascontiguousarray(data.split(name)[1], dtype=np.int64))
                        for name in EVALUATED}
        self._n_features, self._n_classes = data.n_features, data.n_classes
        steps = len(data.y_train) // self.config.batch_size
        self._epoch_x = np.empty((max(steps, 1) * self.config.batch_size, data.n_features), self.dtype)
        self._epoch_x.fill(0)  # touch every page now, so the first epoch's clock pays no page faults

    def init_model(self, seed: int) -> None:
        """A fresh classifier holding the NumPy MLP's initial weights for ``seed``, momentum zero.

        scikit-learn allocates its weights in the first ``partial_fit`` (its own
        Glorot-uniform init, drawn from ``random_state``). That first call is
        made here on the first batch of training rows, then every weight is
        overwritten with the NumPy MLP's init for the same seed
        (Kaiming-normal on fan-in from ``np.random.default_rng(seed)``, zero
        biases) and the optimizer is dropped, so no trace of that step is left.
        """
        if not self._splits:
            raise RuntimeError("SklearnBackend.init_model: call load_data first")
        c = self.config
        self.clf = ProbedMLPClassifier(
            hidden_layer_sizes=tuple(c.hidden_dims), activation=c.activation, solver="sgd",
            alpha=self.alpha, batch_size=c.batch_size, learning_rate="constant",
            learning_rate_init=c.lr, momentum=c.momentum, nesterovs_momentum=False,
            shuffle=False, random_state=seed, early_stopping=False)
        self.clf.reset_probe()
        x, y = self.gather(np.arange(min(c.batch_size, len(self.gather.labels))))
        self.clf.partial_fit(x, y, classes=np.arange(self._n_classes))
        init = MLP(self._n_features, c.hidden_dims, self._n_classes, c.activation,
                   rng=np.random.default_rng(seed), dtype=self.dtype)
        self.import_state(init.state_dict())
        self._reset_records()

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> np.ndarray:
        """The epoch's order as a host int64 array (the data never leaves the host)."""
        return np.ascontiguousarray(order, dtype=np.int64)

    def train_batch(self, idx: np.ndarray) -> None:
        """Record the batch's rows; the step itself is taken in :meth:`synchronize`."""
        if idx.shape[0] != self.config.batch_size:
            raise ValueError(f"sklearn:cpu takes batches of exactly {self.config.batch_size} rows "
                             f"(partial_fit cuts them itself), got {idx.shape[0]}")
        self._pending.append(idx)

    def synchronize(self) -> None:
        """Step on every recorded batch: one ``partial_fit`` over their rows, in their order.

        With ``shuffle=False`` and ``batch_size=S``, ``partial_fit`` cuts the
        rows into exactly the recorded batches and takes one SGD step on each.
        Timed as part of the epoch: the gather of the rows (the other backends
        gather each batch inside their step) and scikit-learn's input
        validation.
        """
        if not self._pending:
            return
        rows = np.concatenate(self._pending)             # (steps * S,)
        x = self._epoch_x[:len(rows)]                    # (steps * S, n_inputs)
        for k, idx in enumerate(self._pending):
            self.gather(idx, x[k * len(idx):(k + 1) * len(idx)])
        y = self.gather.labels[rows]                     # (steps * S,)
        before = len(self.clf.probe_losses_)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self.clf.partial_fit(x, y)
        taken = len(self.clf.probe_losses_) - before
        if taken != len(self._pending):
            raise RuntimeError(f"partial_fit took {taken} steps for {len(self._pending)} batches")
        self._seen += len(rows)
        self._pending = []

    def pop_step_records(self) -> StepRecords:
        rec = StepRecords(losses=np.asarray(self.clf.probe_losses_, dtype=np.float64),
                          correct=self.clf.probe_correct_, seen=self._seen)
        self._reset_records()
        return rec

    def _reset_records(self) -> None:
        self.clf.reset_probe()
        self._pending = []
        self._seen = 0

    # ------------------------------------------------------------ evaluation and state

    def evaluate(self, split: str) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) from ``predict_proba``, in chunks of eval_batch_size.

        The loss is ``-log p_y`` of scikit-learn's softmax, floored at the
        dtype's smallest normal number (a sample adds at most 87.3 in float32),
        as the training records are; see docs/peers.md.
        """
        if split not in EVALUATED:
            raise ValueError(f"unknown split {split!r} (allowed: {', '.join(EVALUATED)})")
        x, y = self._splits[split]
        n, chunk = len(y), self.config.eval_batch_size
        if n == 0:
            return float("nan"), float("nan")
        loss_sum, correct = 0.0, 0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for s in range(0, n, chunk):
                p = self.clf.predict_proba(x[s:s + chunk])        # (C, n_classes) softmax
                yb = y[s:s + chunk]                               # (C,)
                p_y = np.maximum(p[np.arange(len(yb)), yb], np.finfo(p.dtype).tiny)  # (C,)
                loss_sum -= float(np.sum(np.log(p_y), dtype=np.float64))
                correct += int(np.count_nonzero(p.argmax(axis=1) == yb))
        return loss_sum / n, correct / n

    def export_state(self) -> dict[str, np.ndarray]:
        """``linears.{i}.weight`` = ``coefs_[i].T`` (out, in), ``linears.{i}.bias`` = ``intercepts_[i]``."""
        state = {}
        for i, (w, b) in enumerate(zip(self.clf.coefs_, self.clf.intercepts_)):
            state[f"linears.{i}.weight"] = w.T.copy()  # (out, in) from scikit-learn's (in, out)
            state[f"linears.{i}.bias"] = b.copy()       # (out,)
        return state

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy the weights in place (names and shapes checked) and drop the momentum.

        Deleting ``_optimizer`` makes the next ``partial_fit`` build a fresh
        ``SGDOptimizer`` with zero velocities, as a new torch optimizer would.
        """
        check_state({n: v.shape for n, v in self.export_state().items()}, state)
        for i, (w, b) in enumerate(zip(self.clf.coefs_, self.clf.intercepts_)):
            np.copyto(w, np.asarray(state[f"linears.{i}.weight"]).T, casting="unsafe")  # (in, out)
            np.copyto(b, np.asarray(state[f"linears.{i}.bias"]), casting="unsafe")      # (out,)
        self.clf.__dict__.pop("_optimizer", None)

    # ------------------------------------------------------------ measurement

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        """The NumPy backend's GEMM-only timing: scikit-learn's products are NumPy matmuls."""
        return self._gemm.gemm_seconds(shapes, repeats)

    def describe(self) -> dict[str, Any]:
        from bench.threads import numpy_gemm_library

        c = self.config
        return {"impl": self.impl, "device": self.device, "dtype": self.dtype.name,
                "sklearn_version": sklearn.__version__, "numpy_version": np.__version__,
                "estimator": "MLPClassifier(solver='sgd', learning_rate='constant', "
                             f"nesterovs_momentum=False, shuffle=False, alpha={self.alpha:g})",
                "activation": c.activation,
                "driving": "one partial_fit per epoch over the harness's batches, in order",
                "step_records": "per-step loss and correct count read by a probe on "
                                "MLPClassifier._forward_pass/_backprop",
                "init": "the NumPy MLP's Kaiming-normal init for the seed (copied in)",
                "gemm_library": numpy_gemm_library()}

    def peak_memory_bytes(self) -> int | None:
        return None

    def __repr__(self) -> str:
        return f"SklearnBackend(device={self.device!r}, clf={self.clf!r})"
