"""The MLP in JAX: pure functions of a parameter dict, differentiated by jax.grad, compiled by jax.jit.

The parameters are a dict under the shared names and shapes
(``impl_common.arch``): ``linears.{i}.weight`` (out, in) and
``linears.{i}.bias`` (out,), i = 0 for the input layer up to len(hidden_dims)
for the output layer, so weights move to and from the NumPy and PyTorch MLPs
as a plain copy. The loss and the accuracy are pure functions of
(params, batch); the training step is ``jax.value_and_grad`` of the loss plus
SGD (docs/derivations.md §7), and :func:`jit_train_step` compiles it with the
parameter and momentum buffers donated, so XLA updates them in place.

float64 needs JAX's 64-bit mode: every call that builds or runs float64
arrays goes inside :func:`precision`, which switches the mode for that block
only (``jax.enable_x64``), so it never leaks into other code in the process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from impl_common.arch import Arch, check_widths, init_std

Params = dict[str, jax.Array]

ACTIVATIONS: dict[str, Callable[[jax.Array, float], jax.Array]] = {
    "elu": lambda x, alpha: jax.nn.elu(x, alpha),  # x > 0: x, else alpha (e^x - 1); h'(0) = alpha
    "relu": lambda x, alpha: jax.nn.relu(x),        # h'(0) = 0, as in torch and impl_numpy
    "tanh": lambda x, alpha: jnp.tanh(x),
}


def precision(dtype: Any):
    """A context in which JAX's 64-bit mode is on exactly when ``dtype`` is float64 (off otherwise)."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


@dataclass(frozen=True)
class SGD:
    """torch.optim.SGD's update (dampening 0, no Nesterov): O1 d = g + lam theta, O2 v = mu v + d, O3."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


def init_params(arch: Arch, key: jax.Array, dtype: Any = jnp.float32) -> Params:
    """Weights ~ Normal(0, init_std(i)²) (Kaiming on fan-in; R2 in residual blocks), zero biases.

    One subkey of ``key`` per layer. Call inside :func:`precision` for float64.
    """
    check_widths(arch.n_inputs, arch.hidden_dims, arch.n_classes, arch.activation, arch.residual)
    widths, params = arch.widths, {}
    for i, k in enumerate(jax.random.split(key, arch.n_linears)):
        std = init_std(i, widths, arch.residual)
        params[f"linears.{i}.weight"] = std * jax.random.normal(k, (widths[i + 1], widths[i]), dtype)
        params[f"linears.{i}.bias"] = jnp.zeros(widths[i + 1], dtype)
    return params


def zero_velocity(params: Params, opt: SGD) -> Params:
    """SGD's momentum buffers, zero (``mu 0 + d = d``: the first step is torch's); empty without momentum."""
    return {k: jnp.zeros_like(v) for k, v in params.items()} if opt.momentum else {}


# ---------------------------------------------------------------- the model


def linear(params: Params, i: int, x: jax.Array) -> jax.Array:
    """Y = X Wᵀ + b with layer i's weight (out, in): (S, in) -> (S, out)."""
    return x @ params[f"linears.{i}.weight"].T + params[f"linears.{i}.bias"]


def forward(params: Params, x: jax.Array, arch: Arch) -> jax.Array:
    """x (S, n_inputs) -> logits (S, n_classes); plain, or residual blocks a + L(h(L(a))) (R)."""
    h = partial(ACTIVATIONS[arch.activation], alpha=arch.alpha)
    last = arch.n_linears - 1
    a = h(linear(params, 0, x))                                     # (S, hidden_dims[0])
    if arch.residual:
        for k in range(1, last, 2):
            a = a + linear(params, k + 1, h(linear(params, k, a)))  # R: x + f(x), (S, F)
    else:
        for i in range(1, last):
            a = h(linear(params, i, a))                             # (S, hidden_dims[i])
    return linear(params, last, a)                                  # (S, n_classes)


def cross_entropy(z: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy of softmax(z) (S, C) against labels y (S,), softmax and log fused."""
    z_y = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]     # (S,)
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - z_y)         # F1: L = mean_s logsumexp(z_s) - z_s,y_s


def loss_and_correct(params: Params, x: jax.Array, y: jax.Array, arch: Arch) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy, correct predictions) of the batch (x (S, n_inputs), y (S,) int)."""
    z = forward(params, x, arch)                       # (S, C)
    correct = jnp.sum(jnp.argmax(z, axis=1) == y)      # (), not differentiated
    return cross_entropy(z, y), correct


# ---------------------------------------------------------------- training


def sgd(params: Params, velocity: Params, grads: Params, opt: SGD) -> tuple[Params, Params]:
    """One SGD update of every parameter: the new (params, velocity)."""
    new_params, new_velocity = {}, {}
    for name, theta in params.items():
        d = grads[name] + opt.weight_decay * theta if opt.weight_decay else grads[name]  # O1
        if opt.momentum:
            d = new_velocity[name] = opt.momentum * velocity[name] + d                  # O2
        new_params[name] = theta - opt.lr * d                                           # O3
    return new_params, new_velocity


def take_rows(data: tuple[jax.Array, jax.Array], rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The batch (x_all[rows], y_all[rows]) of ``data`` = (x_all, y_all): (S, n_inputs), (S,)."""
    x_all, y_all = data
    return x_all[rows], y_all[rows]


def train_step(params: Params, velocity: Params, data: Any, rows: jax.Array, arch: Arch, opt: SGD,
               gather: Callable = take_rows) -> tuple[Params, Params, jax.Array, jax.Array]:
    """Gather the batch ``gather(data, rows)`` (rows (S,)), take the gradient of the loss and one
    SGD step. Returns (params, velocity, loss, correct)."""
    x, y = gather(data, rows)                                            # (S, n_inputs), (S,)
    (loss, correct), grads = jax.value_and_grad(loss_and_correct, has_aux=True)(params, x, y, arch)
    params, velocity = sgd(params, velocity, grads, opt)
    return params, velocity, loss, correct


def train_steps(params: Params, velocity: Params, data: Any, rows: jax.Array, arch: Arch, opt: SGD,
                gather: Callable = take_rows) -> tuple[Params, Params, jax.Array, jax.Array]:
    """:func:`train_step` on every row of ``rows`` (K, S) in turn, as one ``lax.scan``.

    Returns (params, velocity, losses (K,), correct (K,))."""
    def body(carry, batch_rows):
        p, v, loss, correct = train_step(*carry, data, batch_rows, arch, opt, gather)
        return (p, v), (loss, correct)

    (params, velocity), (losses, correct) = jax.lax.scan(body, (params, velocity), rows)
    return params, velocity, losses, correct


def jit_train_step(arch: Arch, opt: SGD, scan: bool = False, gather: Callable = take_rows):
    """:func:`train_step` (with ``scan``: :func:`train_steps`) under jax.jit, params and velocity donated."""
    return jax.jit(partial(train_steps if scan else train_step, arch=arch, opt=opt, gather=gather),
                   donate_argnums=(0, 1))


def jit_evaluate(arch: Arch, size: int):
    """(summed cross-entropy, correct) of rows start .. start + size of (x_all, y_all), under jax.jit:
    evaluation in chunks, sliced inside the compiled function."""
    def summed(params, x_all, y_all, start):
        x = jax.lax.dynamic_slice_in_dim(x_all, start, size)  # (size, n_inputs)
        y = jax.lax.dynamic_slice_in_dim(y_all, start, size)  # (size,)
        loss, correct = loss_and_correct(params, x, y, arch)
        return loss * size, correct
    return jax.jit(summed)
