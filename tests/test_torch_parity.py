"""TorchMLP against the NumPy MLP from identical weights: forward, loss, gradients, and 20 SGD steps.

float64 agrees to 1e-10; float32 to 1e-5 on a batch (the two libraries sum
in different orders, so float32 cannot agree to the last bit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ARCH_CASES
from impl_numpy import MLP, SGD
from impl_numpy.modules import SoftmaxCrossEntropyModule
from impl_torch import TorchMLP

# dtype -> (rtol, atol) for values of order one
TOL = {np.float64: (1e-10, 1e-10), np.float32: (1e-5, 1e-5)}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
N_IN, N_CLASSES, BATCH = 40, 7, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(activation, dims, residual, alpha, dtype, seed=0):
    """A NumPy MLP with random biases too, and a TorchMLP holding the same weights."""
    rng = np.random.default_rng(seed)
    np_model = MLP(N_IN, dims, N_CLASSES, activation, alpha=alpha, residual=residual, rng=rng,
                   dtype=dtype)
    state = np_model.state_dict()
    for name in state:
        if name.endswith("bias"):  # non-zero biases, so L2 and the bias path are tested too
            state[name] = (0.3 * rng.standard_normal(state[name].shape)).astype(dtype)
    np_model.load_state_dict(state)
    t_model = TorchMLP(N_IN, dims, N_CLASSES, activation, alpha=alpha, residual=residual,
                       dtype=TORCH_DTYPE[dtype])
    t_model.import_state(state)
    return np_model, t_model, rng


def _batch(rng, dtype):
    return rng.standard_normal((BATCH, N_IN)).astype(dtype), rng.integers(0, N_CLASSES, BATCH)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("activation, dims, residual, alpha", ARCH_CASES)
def test_forward_loss_and_every_gradient_match_numpy(activation, dims, residual, alpha, dtype):
    np_model, t_model, rng = _pair(activation, dims, residual, alpha, dtype)
    x, y = _batch(rng, dtype)
    rtol, atol = TOL[dtype]

    loss_fn = SoftmaxCrossEntropyModule()
    logits = np_model.forward(x).copy()
    loss = loss_fn.forward(logits, y)
    np_model.backward(loss_fn.backward(logits, y), input_grad=False)

    t_logits = t_model(torch.from_numpy(x))
    t_loss = F.cross_entropy(t_logits, torch.from_numpy(y))
    t_loss.backward()

    np.testing.assert_allclose(t_logits.detach().numpy(), logits, rtol=rtol, atol=atol)
    np.testing.assert_allclose(t_loss.item(), loss, rtol=rtol, atol=atol)
    t_grads = {n: p.grad.numpy() for n, p in t_model.named_parameters()}
    np_grads = dict(np_model.named_grads())
    assert list(t_grads) == list(np_grads)
    for name, grad in np_grads.items():
        # gradients are ~1e-2 here: compare relative to the largest entry
        scale = max(float(np.abs(grad).max()), 1e-30)
        np.testing.assert_allclose(t_grads[name] / scale, grad / scale, rtol=rtol, atol=atol,
                                   err_msg=name)


def test_a_wrong_weight_breaks_parity():
    """The parity check can fail: one perturbed weight is caught."""
    np_model, t_model, rng = _pair("elu", [16], False, 1.0, np.float64)
    with torch.no_grad():
        t_model.linears[1].weight[0, 0] += 1e-6
    x, _ = _batch(rng, np.float64)
    diff = np.abs(t_model(torch.from_numpy(x)).detach().numpy() - np_model.forward(x)).max()
    assert diff > 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("activation, dims, residual", [("elu", [32], False), ("tanh", [16, 8, 16], True)])
def test_weights_agree_after_20_sgd_steps_with_momentum_and_weight_decay(activation, dims, residual, dtype):
    np_model, t_model, rng = _pair(activation, dims, residual, 1.0, dtype, seed=5)
    lr, mu, lam = 0.05, 0.9, 1e-3
    np_opt = SGD(np_model.parameters(), np_model.grads(), lr=lr, momentum=mu, weight_decay=lam)
    t_opt = torch.optim.SGD(t_model.parameters(), lr=lr, momentum=mu, weight_decay=lam, foreach=True)
    loss_fn = SoftmaxCrossEntropyModule()
    start = np_model.state_dict()
    for _ in range(20):
        x, y = _batch(rng, dtype)
        logits = np_model.forward(x)
        loss_fn.forward(logits, y)
        np_model.backward(loss_fn.backward(logits, y), input_grad=False)
        np_opt.step()
        t_opt.zero_grad(set_to_none=True)
        F.cross_entropy(t_model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        t_opt.step()
    # float32 rounding differences compound over 20 momentum steps: 1e-4 there
    rtol, atol = (1e-10, 1e-10) if dtype == np.float64 else (1e-4, 1e-4)
    t_state = t_model.export_state()
    for name, value in np_model.state_dict().items():
        assert np.abs(value - start[name]).max() > 1e-3, name  # the steps did move it
        np.testing.assert_allclose(t_state[name], value, rtol=rtol, atol=atol, err_msg=name)
