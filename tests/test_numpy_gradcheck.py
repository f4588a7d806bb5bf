"""Finite-difference checks of every NumPy module's backward pass, and of the whole MLP, in float64.

Each check is the vector-Jacobian form: with a random upstream gradient
``dout``, the numerical gradient of an input entry is
``sum((f(x + h) - f(x - h)) * dout) / 2h``, compared with ``backward(dout)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from impl_numpy.mlp import MLP
from impl_numpy.modules import (
    CrossEntropyModule,
    ELUModule,
    LinearModule,
    ReLUModule,
    ResidualBlock,
    SoftmaxCrossEntropyModule,
    SoftMaxModule,
    TanhModule,
)

H = 1e-6
TOL = 1e-6
SHAPES = [(1, 1, 1), (1, 4, 3), (5, 1, 2), (3, 6, 1), (4, 5, 7)]  # (S, M, N): batch 1 and width 1 included


def numerical_vjp(f, x, dout, h=H):
    """sum((f(x + h e_i) - f(x - h e_i)) * dout) / 2h for every entry i of x (x is perturbed in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.array(f(), dtype=np.float64, copy=True)
        x[i] = old - h
        minus = np.array(f(), dtype=np.float64, copy=True)
        x[i] = old
        grad[i] = np.sum((plus - minus) * dout) / (2 * h)
    return grad


def rel_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def assert_close(analytic, numeric, what):
    assert analytic.shape == numeric.shape, what
    err = rel_error(analytic, numeric)
    assert err <= TOL, f"{what}: relative error {err:.2e} > {TOL:g}"


@pytest.mark.parametrize("input_layer", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_gradients(shape, input_layer):
    s, m, n = shape
    rng = np.random.default_rng(1)
    layer = LinearModule(m, n, input_layer=input_layer, rng=rng)
    layer.params["bias"][:] = rng.standard_normal(n)
    x = rng.standard_normal((s, m))
    dout = rng.standard_normal((s, n))
    layer.forward(x)
    dx = layer.backward(dout)
    f = lambda: layer.forward(x)  # noqa: E731
    assert_close(dx, numerical_vjp(f, x, dout), "L3 dx")
    assert_close(layer.grads["weight"], numerical_vjp(f, layer.params["weight"], dout), "L1 dW")
    assert_close(layer.grads["bias"], numerical_vjp(f, layer.params["bias"], dout), "L2 db")


def test_linear_skips_input_gradient_but_fills_grads():
    rng = np.random.default_rng(2)
    layer = LinearModule(4, 3, input_layer=True, rng=rng)
    x, dout = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    layer.forward(x)
    assert layer.backward(dout, input_grad=False) is None
    np.testing.assert_allclose(layer.grads["weight"], dout.T @ x, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["bias"], dout.sum(axis=0), rtol=1e-14)


@pytest.mark.parametrize("make", [lambda: ELUModule(1.0), lambda: ELUModule(0.5), lambda: ELUModule(2.0),
                                  ReLUModule, TanhModule],
                         ids=["elu", "elu0.5", "elu2", "relu", "tanh"])
@pytest.mark.parametrize("shape", SHAPES)
def test_activation_gradients(make, shape):
    s, m, _ = shape
    rng = np.random.default_rng(3)
    module = make()
    x = rng.standard_normal((s, m)) * 2
    x[np.abs(x) < 1e-3] = 0.5  # keep clear of ReLU's kink
    dout = rng.standard_normal((s, m))
    x0 = x.copy()
    module.forward(x)
    np.testing.assert_array_equal(x, x0)  # forward leaves its input alone
    dx = module.backward(dout)
    assert_close(dx, numerical_vjp(lambda: module.forward(x), x, dout), f"A1 {module!r}")


def test_activation_values():
    x = np.array([[-3.0, -1e-9, 0.0, 2.0]])
    np.testing.assert_allclose(ELUModule(0.5).forward(x), [[0.5 * np.expm1(-3.0), 0.5 * np.expm1(-1e-9), 0, 2]],
                               rtol=1e-15)
    np.testing.assert_array_equal(ReLUModule().forward(x), [[0, 0, 0, 2]])
    np.testing.assert_allclose(TanhModule().forward(x), np.tanh(x), rtol=1e-15)
    # derivatives at 0 follow torch: ELU alpha (left branch), ReLU 0
    elu = ELUModule(0.5)
    elu.forward(x)
    np.testing.assert_allclose(elu.backward(np.ones_like(x)), [[0.5 * np.exp(-3.0), 0.5 * np.exp(-1e-9), 0.5, 1]],
                               rtol=1e-12)
    relu = ReLUModule()
    relu.forward(x)
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [[0, 0, 0, 1]])


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 2), (3, 7)])
def test_softmax_gradient(shape):
    rng = np.random.default_rng(4)
    module = SoftMaxModule()
    z = rng.standard_normal(shape) * 3
    dout = rng.standard_normal(shape)
    p = module.forward(z)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-14)
    dz = module.backward(dout)
    assert_close(dz, numerical_vjp(lambda: module.forward(z), z, dout), "S2")


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 2), (3, 7)])
def test_cross_entropy_gradient(shape):
    s, c = shape
    rng = np.random.default_rng(5)
    module = CrossEntropyModule()
    p = rng.uniform(0.1, 1.0, size=shape)
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, c, size=s)
    dx = module.backward(p, y)
    dout = rng.standard_normal()  # the loss is a scalar: a random scalar upstream gradient
    assert_close(dx * dout, numerical_vjp(lambda: module.forward(p, y), p, dout), "C2")
    np.testing.assert_allclose(module.forward(p, y), -np.mean(np.log(p[np.arange(s), y])), rtol=1e-15)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 2), (3, 7)])
def test_fused_gradient(shape):
    s, c = shape
    rng = np.random.default_rng(6)
    module = SoftmaxCrossEntropyModule()
    z = rng.standard_normal(shape) * 3
    y = rng.integers(0, c, size=s)
    module.forward(z, y)
    dz = module.backward(z, y)
    dout = rng.standard_normal()
    assert_close(dz * dout, numerical_vjp(lambda: module.forward(z, y), z, dout), "F1")


@pytest.mark.parametrize("activation", ["elu", "relu", "tanh"])
@pytest.mark.parametrize("s, f, n", [(1, 1, 1), (1, 3, 2), (4, 1, 3), (3, 4, 1), (2, 5, 6)])
def test_residual_block_gradients(activation, s, f, n):
    rng = np.random.default_rng(7)
    block = ResidualBlock.build(f, n, activation, rng=rng)
    for lin in (block.linear1, block.linear2):
        lin.params["bias"][:] = rng.standard_normal(lin.out_features)
    x = rng.standard_normal((s, f))
    dout = rng.standard_normal((s, f))
    block.forward(x)
    dx = block.backward(dout)
    f_ = lambda: block.forward(x)  # noqa: E731
    assert_close(dx, numerical_vjp(f_, x, dout), "R1 dx")
    for name, lin in (("linear1", block.linear1), ("linear2", block.linear2)):
        for key in ("weight", "bias"):
            assert_close(lin.grads[key], numerical_vjp(f_, lin.params[key], dout), f"{name}.{key}")


MLP_CASES = [
    # (n_inputs, hidden_dims, n_classes, S, activation, residual)
    (5, [4, 3], 3, 4, "elu", False),
    (3, [1], 2, 1, "relu", False),       # batch of 1, width 1
    (4, [6], 4, 3, "tanh", False),
    (5, [4, 2, 4], 3, 3, "elu", True),
    (3, [1, 1, 1], 2, 1, "tanh", True),  # batch of 1, width 1, residual
    (4, [3, 5, 3, 1, 3], 5, 2, "relu", True),
]


@pytest.mark.parametrize("n_in, dims, n_cls, s, activation, residual", MLP_CASES)
def test_mlp_parameter_gradients(n_in, dims, n_cls, s, activation, residual):
    rng = np.random.default_rng(8)
    model = MLP(n_in, dims, n_cls, activation, alpha=0.7, residual=residual, rng=rng, dtype=np.float64)
    for _, p in model.named_parameters():
        if p.ndim == 1:
            p[:] = rng.standard_normal(p.shape) * 0.5
    x = rng.standard_normal((s, n_in))
    x[np.abs(x) < 1e-3] = 0.3
    y = rng.integers(0, n_cls, size=s)
    loss_fn = SoftmaxCrossEntropyModule()
    loss = lambda: loss_fn.forward(model.forward(x), y)  # noqa: E731
    logits = model.forward(x)
    loss_fn.forward(logits, y)
    dx = model.backward(loss_fn.backward(logits, y))
    for name, grad in model.named_grads():
        param = dict(model.named_parameters())[name]
        assert_close(grad, numerical_vjp(loss, param, 1.0), name)
    assert_close(dx, numerical_vjp(loss, x, 1.0), "dx")


def test_mlp_backward_overwrites_grads():
    """Two backward passes give the same grads (course semantics: grads are set, not accumulated)."""
    rng = np.random.default_rng(9)
    model = MLP(4, [3], 2, rng=rng, dtype=np.float64)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    model.forward(x)
    model.backward(dout)
    first = [g.copy() for g in model.grads()]
    model.backward(dout)
    for a, b in zip(first, model.grads()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_elu_fast_paths_match_the_definition(alpha, dtype):
    """The in-place ELU forms agree with where(x > 0, x, alpha expm1(x)) to 1 ulp, h' exactly."""
    x = np.concatenate([np.linspace(-30, 30, 2001), [-1e-30, -1e-8, -1e-4, 0.0, 1e-30, 1e-8, -np.inf, np.inf]])
    x = x.astype(dtype)[None, :]
    module = ELUModule(alpha)
    y = module.forward(x)
    with np.errstate(invalid="ignore"):
        reference = np.where(x > 0, x, dtype(alpha) * np.expm1(np.minimum(x, 0)))
    np.testing.assert_array_max_ulp(y, reference, maxulp=1)
    dx = module.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, np.where(y > 0, dtype(1), y + dtype(alpha)))
