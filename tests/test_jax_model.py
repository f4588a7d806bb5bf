"""impl_jax against impl_numpy from copied weights: forward, loss, every gradient and SGD steps.

float64 agrees to 1e-10 (the same arithmetic, differently ordered); float32
to 1e-5 on a batch (XLA's and OpenBLAS's products sum in different orders).
The 64-bit mode that float64 needs stays inside ``impl_jax.precision``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from conftest import ARCH_CASES  # noqa: E402
import impl_jax  # noqa: E402
from impl_common.arch import Arch  # noqa: E402
from impl_numpy import MLP, SGD  # noqa: E402
from impl_numpy.modules import SoftmaxCrossEntropyModule  # noqa: E402

TOL = {np.float64: 1e-10, np.float32: 1e-5}
N_IN, N_CLASSES, BATCH = 40, 7, 32


def _pair(activation, dims, residual, alpha, dtype, seed=0):
    """A NumPy MLP with random biases too, its state, the Arch, and a batch (x, y)."""
    rng = np.random.default_rng(seed)
    model = MLP(N_IN, dims, N_CLASSES, activation, alpha=alpha, residual=residual, rng=rng, dtype=dtype)
    state = model.state_dict()
    for name in state:
        if name.endswith("bias") or "weight" in name and not state[name].any():  # R2 zero weights too
            state[name] = (0.3 * rng.standard_normal(state[name].shape)).astype(dtype)
    model.load_state_dict(state)
    x = rng.standard_normal((BATCH, N_IN)).astype(dtype)
    y = rng.integers(0, N_CLASSES, BATCH)
    return model, state, Arch(N_IN, tuple(dims), N_CLASSES, activation, alpha, residual), x, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("activation, dims, residual, alpha", ARCH_CASES)
def test_loss_and_every_gradient_match_numpy(activation, dims, residual, alpha, dtype):
    model, state, arch, x, y = _pair(activation, dims, residual, alpha, dtype)
    loss_fn = SoftmaxCrossEntropyModule()
    logits = model.forward(x).copy()
    loss = loss_fn.forward(logits, y)
    model.backward(loss_fn.backward(logits, y))
    with impl_jax.precision(dtype):
        params = {k: jnp.asarray(v) for k, v in state.items()}
        j_logits = jax.jit(partial(impl_jax.forward, arch=arch))(params, jnp.asarray(x))
        value_and_grad = jax.value_and_grad(partial(impl_jax.loss_and_correct, arch=arch), has_aux=True)
        (j_loss, correct), grads = jax.jit(value_and_grad)(params, jnp.asarray(x), jnp.asarray(y))
        assert j_logits.dtype == dtype and grads["linears.0.weight"].dtype == dtype
    tol = TOL[dtype]
    np.testing.assert_allclose(np.asarray(j_logits), logits, rtol=tol, atol=tol)
    np.testing.assert_allclose(float(j_loss), loss, rtol=tol)
    assert int(correct) == int((logits.argmax(1) == y).sum())
    for name, grad in model.named_grads():
        scale = max(1.0, float(np.abs(grad).max()))
        np.testing.assert_allclose(np.asarray(grads[name]) / scale, grad / scale, rtol=tol, atol=tol,
                                   err_msg=name)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-3), (0.9, 1e-3)])
def test_jitted_sgd_steps_match_numpy_sgd_in_float64(momentum, weight_decay):
    """20 steps of the donated, jitted step against impl_numpy's MLP and SGD on the same batches."""
    model, state, arch, _, _ = _pair("elu", [16, 8, 16], True, 1.0, np.float64, seed=3)
    rng = np.random.default_rng(4)
    x_all, y_all = rng.standard_normal((200, N_IN)), rng.integers(0, N_CLASSES, 200)
    opt = SGD(model.parameters(), model.grads(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    loss_fn = SoftmaxCrossEntropyModule()
    j_opt = impl_jax.SGD(0.05, momentum, weight_decay)
    with impl_jax.precision(np.float64):
        step = impl_jax.jit_train_step(arch, j_opt)
        params = {k: jnp.asarray(v) for k, v in state.items()}
        velocity = impl_jax.zero_velocity(params, j_opt)
        xj, yj = jnp.asarray(x_all), jnp.asarray(y_all, dtype=jnp.int32)
        for k in range(20):
            rows = rng.permutation(200)[:BATCH]
            logits = model.forward(x_all[rows])
            loss = loss_fn.forward(logits, y_all[rows])
            model.backward(loss_fn.backward(logits, y_all[rows]), input_grad=False)
            opt.step()
            old = params["linears.0.weight"]
            params, velocity, j_loss, _ = step(params, velocity, (xj, yj), jnp.asarray(rows, jnp.int32))
            assert old.is_deleted()  # donated: XLA reused the buffer
            np.testing.assert_allclose(float(j_loss), loss, rtol=1e-10, err_msg=f"step {k}")
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(np.asarray(params[name]), value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_scan_of_steps_equals_the_steps_one_by_one():
    _, state, arch, _, _ = _pair("tanh", [16], False, 1.0, np.float64)
    rng = np.random.default_rng(5)
    x_all, y_all = jnp.asarray(rng.standard_normal((256, N_IN))), jnp.asarray(rng.integers(0, 7, 256))
    rows = rng.permutation(256).reshape(8, 32)
    opt = impl_jax.SGD(0.1, 0.9, 1e-4)
    with impl_jax.precision(np.float64):
        x_all, y_all = jnp.asarray(x_all, jnp.float64), jnp.asarray(y_all, jnp.int32)
        p = {k: jnp.asarray(v) for k, v in state.items()}
        p, v, losses, correct = impl_jax.jit_train_step(arch, opt, scan=True)(
            p, impl_jax.zero_velocity(p, opt), (x_all, y_all), jnp.asarray(rows, jnp.int32))
        q = {k: jnp.asarray(v) for k, v in state.items()}
        w, one_by_one = impl_jax.zero_velocity(q, opt), []
        step = impl_jax.jit_train_step(arch, opt)
        for r in rows:
            q, w, loss, _ = step(q, w, (x_all, y_all), jnp.asarray(r, jnp.int32))
            one_by_one.append(float(loss))
    assert losses.shape == (8,) and correct.shape == (8,)
    np.testing.assert_allclose(np.asarray(losses), one_by_one, rtol=1e-12)
    for name in state:
        np.testing.assert_allclose(np.asarray(p[name]), np.asarray(q[name]), rtol=1e-12, atol=1e-14)


def test_init_follows_the_shared_names_shapes_and_r2():
    arch = Arch(12, (8, 5, 8), 3, "elu", 1.0, True)
    params = impl_jax.init_params(arch, jax.random.key(0))
    assert {k: v.shape for k, v in params.items()} == arch.shapes()
    assert all(v.dtype == jnp.float32 for v in params.values())
    assert not np.asarray(params["linears.2.weight"]).any()  # a block's last layer starts at zero
    assert not any(np.asarray(params[f"linears.{i}.bias"]).any() for i in range(4))
    w0 = np.asarray(params["linears.0.weight"])
    assert 0.5 < w0.std() * np.sqrt(12) < 1.5  # N(0, 1/fan_in) for the input layer
    again = impl_jax.init_params(arch, jax.random.key(0))
    assert all(np.array_equal(params[k], again[k]) for k in params)
    with pytest.raises(ValueError, match="residual"):
        impl_jax.init_params(Arch(12, (8, 5), 3, residual=True), jax.random.key(0))


def test_float64_stays_inside_its_block():
    with impl_jax.precision(np.float64):
        assert jnp.asarray(1.0).dtype == jnp.float64
    assert not jax.config.jax_enable_x64
    assert jnp.asarray(1.0).dtype == jnp.float32
    with impl_jax.precision(np.float32):
        with pytest.warns(UserWarning, match="truncated to dtype float32"):
            assert jnp.zeros(2, dtype=np.float64).dtype == jnp.float32  # 32-bit even if asked
