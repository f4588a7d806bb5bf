"""Forward and backward of each layer: linear 3072 -> H, ELU/ReLU/Tanh on (B, H), softmax-CE on (B, 10).

Both sides time what their training step runs for that layer:

* NumPy: the ``impl_numpy.modules`` module, as the MLP runs it in training;
  a backward call reads the cache of a forward call made before the clock
  starts.
* JAX: the ``impl_jax`` function of the layer under ``jax.jit``, and for a
  backward the jitted ``jax.vjp`` of it on the stored input (XLA keeps only
  what the backward needs of the forward; inside the training step the
  forward's values are reused instead). Each call ends with
  ``block_until_ready``.
* PyTorch: the ops ``impl_torch`` uses (``F.linear`` as in ``nn.Linear``, the
  model's activation modules, ``F.cross_entropy``), with ``requires_grad`` on
  the operands that have it in training, so the forward records its autograd
  graph as in a training step. A backward call is
  ``torch.autograd.grad(out, inputs, dout, retain_graph=True)`` on a graph
  built once before the clock starts: autograd's engine and the backward
  kernels, exactly what ``loss.backward()`` runs for that node, and nothing
  of the forward; ``retain_graph`` keeps the saved tensors for the next call.
  The gradients are returned, not accumulated into ``.grad`` (NumPy's
  backward overwrites its grads too).

Each test then checks the last call's result against a float64 NumPy
reference (``benchmarks.reference``), so the untimed CI pass fails when a
benchmark computes the wrong thing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import impl_numpy.modules as npm
import impl_torch.model as tm
from benchmarks import reference as ref
from benchmarks.inputs import (BATCHES, N_CLASSES, N_INPUTS, SIZE_IDS, SIZES, BackendSpec,
                               host_inputs)

ACTS = ("elu", "relu", "tanh")
ALPHA = 1.0  # ELU alpha, the config default


def _jax():
    """jax and impl_jax, imported only where a JAX backend runs."""
    import jax

    import impl_jax

    return jax, impl_jax


def _jax_vjp(f):
    """``(primals..., dout) -> dL/d(primals)`` of ``f`` under jit."""
    jax, _ = _jax()
    return jax.jit(lambda *args: jax.vjp(f, *args[:-1])[1](args[-1]))


def _numpy_linear(spec: BackendSpec, inp) -> npm.LinearModule:
    """A hidden-style LinearModule 3072 -> H holding the shared weight and bias."""
    lin = npm.LinearModule(N_INPUTS, inp.hidden, rng=np.random.default_rng(0), dtype=np.float32,
                           xp=spec.xp)
    lin.params["weight"][...] = spec.array(inp.weight)  # (H, 3072)
    lin.params["bias"][...] = spec.array(inp.bias)      # (H,)
    return lin


# ---------------------------------------------------------------- linear


@pytest.mark.parametrize("batch,hidden", SIZES, ids=SIZE_IDS)
def test_linear_forward(measure, backend: BackendSpec, batch: int, hidden: int) -> None:
    inp = host_inputs(batch, hidden)
    if backend.impl == "numpy":
        lin, x = _numpy_linear(backend, inp), backend.array(inp.x)
        fn, timed = (lambda: lin.forward(x)), "LinearModule.forward (keeps x for backward)"
    elif backend.impl == "jax":
        jax, impl_jax = _jax()
        x, w, b = backend.jarray(inp.x), backend.jarray(inp.weight), backend.jarray(inp.bias)
        f = jax.jit(lambda x, w, b: impl_jax.linear({"linears.0.weight": w, "linears.0.bias": b}, 0, x))
        fn, timed = (lambda: f(x, w, b)), "impl_jax.linear under jit"
    else:
        x = backend.tensor(inp.x)  # the data: no gradient, as for the input layer
        w, b = backend.tensor(inp.weight, True), backend.tensor(inp.bias, True)
        fn, timed = (lambda: F.linear(x, w, b)), "F.linear, weight and bias requiring grad"
    out = measure(fn, backend, op="linear_fwd", batch=batch, hidden=hidden, timed=timed,
                  shapes={"x": (batch, N_INPUTS), "weight": (hidden, N_INPUTS), "out": (batch, hidden)})
    ref.assert_close(out, ref.linear(batch, hidden)[0], "linear output")


@pytest.mark.parametrize("batch,hidden", SIZES, ids=SIZE_IDS)
def test_linear_backward(measure, backend: BackendSpec, batch: int, hidden: int) -> None:
    """dX, dW and db: the backward of a hidden layer (the input layer skips dX; see train_step)."""
    inp = host_inputs(batch, hidden)
    if backend.impl == "numpy":
        lin, x, dout = _numpy_linear(backend, inp), backend.array(inp.x), backend.array(inp.dlin)
        lin.forward(x)
        fn, timed = (lambda: lin.backward(dout)), "LinearModule.backward: dX, dW, db"
    elif backend.impl == "jax":
        _, impl_jax = _jax()
        x, w, b = backend.jarray(inp.x), backend.jarray(inp.weight), backend.jarray(inp.bias)
        dout = backend.jarray(inp.dlin)
        f = _jax_vjp(lambda x, w, b: impl_jax.linear({"linears.0.weight": w, "linears.0.bias": b}, 0, x))
        fn, timed = (lambda: f(x, w, b, dout)), "jax.vjp of impl_jax.linear under jit: dX, dW, db"
    else:
        x = backend.tensor(inp.x, True)
        w, b = backend.tensor(inp.weight, True), backend.tensor(inp.bias, True)
        dout = backend.tensor(inp.dlin)
        out = F.linear(x, w, b)
        fn = lambda: torch.autograd.grad(out, (x, w, b), dout, retain_graph=True)  # noqa: E731
        timed = "torch.autograd.grad of F.linear w.r.t. x, weight, bias"
    out = measure(fn, backend, op="linear_bwd", batch=batch, hidden=hidden, timed=timed,
                  shapes={"x": (batch, N_INPUTS), "weight": (hidden, N_INPUTS), "dout": (batch, hidden)})
    dx = out if backend.impl == "numpy" else out[0]  # torch and jax: (dX, dW, db)
    ref.assert_close(dx, ref.linear(batch, hidden)[1], "dL/dX")


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("batch,hidden", SIZES, ids=SIZE_IDS)
def test_activation_forward(measure, backend: BackendSpec, batch: int, hidden: int, act: str) -> None:
    inp = host_inputs(batch, hidden)
    if backend.impl == "numpy":
        mod, h = npm.make_activation(act, ALPHA), backend.array(inp.h)
        fn, timed = (lambda: mod.forward(h)), f"{type(mod).__name__}.forward (keeps the output)"
    elif backend.impl == "jax":
        jax, impl_jax = _jax()
        f, h = jax.jit(lambda h: impl_jax.ACTIVATIONS[act](h, ALPHA)), backend.jarray(inp.h)
        fn, timed = (lambda: f(h)), f"impl_jax.ACTIVATIONS[{act!r}] under jit"
    else:
        mod, h = tm.make_activation(act, ALPHA), backend.tensor(inp.h, True)
        fn, timed = (lambda: mod(h)), f"nn.{type(mod).__name__} on an input requiring grad"
    out = measure(fn, backend, op=f"{act}_fwd", batch=batch, hidden=hidden, timed=timed,
                  shapes={"x": (batch, hidden)})
    ref.assert_close(out, ref.activation(act, batch, hidden)[0], f"{act} output")


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("batch,hidden", SIZES, ids=SIZE_IDS)
def test_activation_backward(measure, backend: BackendSpec, batch: int, hidden: int, act: str) -> None:
    inp = host_inputs(batch, hidden)
    if backend.impl == "numpy":
        mod = npm.make_activation(act, ALPHA)
        h, dout = backend.array(inp.h), backend.array(inp.dh)
        mod.forward(h)
        fn, timed = (lambda: mod.backward(dout)), f"{type(mod).__name__}.backward"
    elif backend.impl == "jax":
        _, impl_jax = _jax()
        f = _jax_vjp(lambda h: impl_jax.ACTIVATIONS[act](h, ALPHA))
        h, dout = backend.jarray(inp.h), backend.jarray(inp.dh)
        fn, timed = (lambda: f(h, dout)), f"jax.vjp of impl_jax.ACTIVATIONS[{act!r}] under jit"
    else:
        mod, h, dout = tm.make_activation(act, ALPHA), backend.tensor(inp.h, True), backend.tensor(inp.dh)
        out = mod(h)
        fn = lambda: torch.autograd.grad(out, h, dout, retain_graph=True)  # noqa: E731
        timed = f"torch.autograd.grad of nn.{type(mod).__name__} w.r.t. its input"
    out = measure(fn, backend, op=f"{act}_bwd", batch=batch, hidden=hidden, timed=timed,
                  shapes={"x": (batch, hidden), "dout": (batch, hidden)})
    dx = out if backend.impl == "numpy" else out[0]  # torch and jax: a 1-tuple
    ref.assert_close(dx, ref.activation(act, batch, hidden)[1], f"{act} dL/dx")


# ---------------------------------------------------------------- loss (depends on the batch only)


@pytest.mark.parametrize("batch", BATCHES, ids=[f"b{b}" for b in BATCHES])
def test_softmax_ce_forward(measure, backend: BackendSpec, batch: int) -> None:
    inp = host_inputs(batch, 128)  # the logits and labels do not depend on the hidden width
    if backend.impl == "numpy":
        loss, z, y = npm.SoftmaxCrossEntropyModule(), backend.array(inp.logits), backend.array(inp.y)
        fn, timed = (lambda: loss.forward(z, y)), "SoftmaxCrossEntropyModule.forward (mean loss, keeps p)"
    elif backend.impl == "jax":
        jax, impl_jax = _jax()
        f, z, y = jax.jit(impl_jax.cross_entropy), backend.jarray(inp.logits), backend.jarray(inp.y)
        fn, timed = (lambda: f(z, y)), "impl_jax.cross_entropy (mean) under jit"
    else:
        z, y = backend.tensor(inp.logits, True), backend.tensor(inp.y)
        fn, timed = (lambda: F.cross_entropy(z, y)), "F.cross_entropy (mean), logits requiring grad"
    out = measure(fn, backend, op="softmax_ce_fwd", batch=batch, hidden=None, timed=timed,
                  shapes={"logits": (batch, N_CLASSES), "y": (batch,)})
    ref.assert_close(out, ref.softmax_ce(batch)[0], "mean loss")


@pytest.mark.parametrize("batch", BATCHES, ids=[f"b{b}" for b in BATCHES])
def test_softmax_ce_backward(measure, backend: BackendSpec, batch: int) -> None:
    inp = host_inputs(batch, 128)
    if backend.impl == "numpy":
        loss, z, y = npm.SoftmaxCrossEntropyModule(), backend.array(inp.logits), backend.array(inp.y)
        loss.forward(z, y)  # backward reuses this softmax because z is the same array
        fn, timed = (lambda: loss.backward(z, y)), "SoftmaxCrossEntropyModule.backward: (p - onehot(y)) / B"
    elif backend.impl == "jax":
        jax, impl_jax = _jax()
        f, z, y = jax.jit(jax.grad(impl_jax.cross_entropy)), backend.jarray(inp.logits), backend.jarray(inp.y)
        fn, timed = (lambda: (f(z, y),)), "jax.grad of impl_jax.cross_entropy under jit"
    else:
        z, y = backend.tensor(inp.logits, True), backend.tensor(inp.y)
        out = F.cross_entropy(z, y)
        fn = lambda: torch.autograd.grad(out, z, retain_graph=True)  # noqa: E731
        timed = "torch.autograd.grad of F.cross_entropy w.r.t. the logits"
    out = measure(fn, backend, op="softmax_ce_bwd", batch=batch, hidden=None, timed=timed,
                  shapes={"logits": (batch, N_CLASSES), "y": (batch,)})
    dz = out if backend.impl == "numpy" else out[0]  # torch and jax: a 1-tuple
    ref.assert_close(dz, ref.softmax_ce(batch)[1], "dL/dlogits")
