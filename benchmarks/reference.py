"""Float64 NumPy results of every benchmarked op on the shared inputs, to check what each backend returned.

A benchmark that times the wrong computation (a transposed weight, a lost
bias, the wrong labels) still passes as a benchmark; these checks make the
one untimed CI pass (``--benchmark-disable``) catch it. Each result is
computed once per size and shared by all backends.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from benchmarks.inputs import host_inputs

RTOL, ATOL = 1e-4, 1e-5  # float32 results against float64, sums of up to 3072 terms


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _act(name: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h(x), h'(x)) of the activation ``name`` (ELU alpha 1)."""
    if name == "elu":
        return np.where(h > 0, h, np.expm1(np.minimum(h, 0))), np.where(h > 0, 1.0, np.exp(h))
    if name == "relu":
        return np.maximum(h, 0), (h > 0).astype(np.float64)
    t = np.tanh(h)
    return t, 1 - t * t


def _softmax_ce(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean cross-entropy, dL/dz) of logits z (B, C) and labels y (B,)."""
    zs = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(zs).sum(axis=1))
    rows = np.arange(len(y))
    p = np.exp(zs - lse[:, None])
    p[rows, y] -= 1
    return float((lse - zs[rows, y]).mean()), p / len(y)


@functools.lru_cache(maxsize=None)
def linear(batch: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """(X Wᵀ + b, dout W): the forward output (B, H) and dL/dX (B, 3072)."""
    inp = host_inputs(batch, hidden)
    w = _f64(inp.weight)
    return _f64(inp.x) @ w.T + _f64(inp.bias), _f64(inp.dlin) @ w


@functools.lru_cache(maxsize=None)
def activation(name: str, batch: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """(h(x), dout * h'(x)), both (B, H)."""
    inp = host_inputs(batch, hidden)
    out, deriv = _act(name, _f64(inp.h))
    return out, _f64(inp.dh) * deriv


@functools.lru_cache(maxsize=None)
def softmax_ce(batch: int) -> tuple[float, np.ndarray]:
    """(mean loss, dL/dlogits (B, 10)) of the shared logits and labels."""
    inp = host_inputs(batch, 128)
    return _softmax_ce(_f64(inp.logits), inp.y)


@functools.lru_cache(maxsize=None)
def mlp_loss_acc(batch: int, hidden: int, act: str) -> tuple[float, float]:
    """(mean loss, accuracy) of the MLP 3072 -> H -> 10 with the shared starting weights."""
    inp = host_inputs(batch, hidden)
    s = {k: _f64(v) for k, v in inp.state.items()}
    a, _ = _act(act, _f64(inp.x) @ s["linears.0.weight"].T + s["linears.0.bias"])
    logits = a @ s["linears.1.weight"].T + s["linears.1.bias"]  # (B, 10)
    loss, _ = _softmax_ce(logits, inp.y)
    return loss, float((logits.argmax(1) == inp.y).mean())


def to_host(a: Any) -> np.ndarray:
    """A host float64 array of a NumPy/CuPy array, a tensor or a number."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    elif hasattr(a, "get"):  # CuPy
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def assert_close(actual: Any, expected: Any, what: str) -> None:
    np.testing.assert_allclose(to_host(actual), expected, rtol=RTOL, atol=ATOL, err_msg=what)
