"""One architecture, two implementations: models from a shared-name state, their gradients, flat vectors.

Everything here builds *fresh* models from a state (``{name: array}`` under
the shared names ``linears.{i}.weight`` (out, in) / ``linears.{i}.bias``
(out,)), so a measurement never disturbs a backend's own model or optimizer.
Flat parameter vectors follow the state order: ``linears.0.weight``,
``linears.0.bias``, ``linears.1.weight``, ... (each array raveled in C order,
which is also ``torch.Tensor.reshape(-1)`` order).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from impl_common.arch import Arch
from impl_numpy.mlp import MLP
from impl_numpy.modules import SoftmaxCrossEntropyModule
from impl_torch.model import TorchMLP

TORCH_DTYPES = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}


def numpy_model(arch: Arch, state: dict[str, np.ndarray], dtype=np.float32) -> MLP:
    """A NumPy MLP of ``arch`` holding ``state`` (cast to ``dtype``); fresh buffers per call."""
    model = MLP(arch.n_inputs, list(arch.hidden_dims), arch.n_classes, arch.activation,
                alpha=arch.alpha, residual=arch.residual, rng=np.random.default_rng(0), dtype=dtype)
    model.load_state_dict(state)
    return model


def initial_state(arch: Arch, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """The net's own init for ``seed`` (Kaiming; a residual net's blocks by R2), drawn by the NumPy MLP."""
    return MLP(arch.n_inputs, list(arch.hidden_dims), arch.n_classes, arch.activation, alpha=arch.alpha,
               residual=arch.residual, rng=np.random.default_rng(seed), dtype=np.dtype(dtype)).state_dict()


def torch_model(arch: Arch, state: dict[str, np.ndarray], dtype=np.float32) -> TorchMLP:
    """A CPU TorchMLP of ``arch`` holding ``state`` (cast to ``dtype``)."""
    model = TorchMLP(arch.n_inputs, list(arch.hidden_dims), arch.n_classes, arch.activation,
                     alpha=arch.alpha, residual=arch.residual,
                     generator=torch.Generator().manual_seed(0), dtype=TORCH_DTYPES[np.dtype(dtype)])
    model.import_state(state)
    return model


def numpy_loss_grads(model: MLP, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """(mean cross-entropy, {name: dL/dparam}) of ``model`` on one batch x (S, M), y (S,)."""
    loss_fn = SoftmaxCrossEntropyModule()
    logits = model.forward(x)                        # (S, C)
    loss = float(loss_fn.forward(logits, y))         # F1
    model.backward(loss_fn.backward(logits, y), input_grad=False)  # F1: dL/dz = (p - onehot(y)) / S
    grads = {name: g.copy() for name, g in model.named_grads()}
    model.clear_cache()
    return loss, grads


def torch_loss_grads(model: TorchMLP, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """(mean cross-entropy, {name: dL/dparam}) of ``model`` on one batch, by autograd."""
    dtype = next(model.parameters()).dtype
    xt = torch.as_tensor(np.ascontiguousarray(x)).to(dtype)  # (S, M)
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))     # (S,)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(xt), yt)                  # F1
    loss.backward()
    grads = {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def flatten(state: dict[str, np.ndarray], arch: Arch) -> np.ndarray:
    """The parameters as one float64 vector (d,) in state order."""
    return np.concatenate([np.asarray(state[n], dtype=np.float64).ravel() for n in arch.names()])


def unflatten(flat: np.ndarray, arch: Arch, dtype=np.float64) -> dict[str, np.ndarray]:
    """The inverse of :func:`flatten`: {name: array of its shape} (views of ``flat`` when dtypes agree)."""
    flat = np.asarray(flat, dtype=dtype)
    out, start = {}, 0
    for name, shape in arch.shapes().items():
        size = int(np.prod(shape))
        out[name] = flat[start:start + size].reshape(shape)
        start += size
    if start != flat.size:
        raise ValueError(f"a flat vector of {flat.size} values for {start} parameters")
    return out
