"""The NumPy MLP and SGD against torch autograd and torch.optim.SGD, from copied weights, in float64.

The torch side is written here with torch.nn.functional only, so these tests
depend on nothing but torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ARCH_CASES
from impl_numpy import MLP, SGD
from impl_numpy.modules import SoftmaxCrossEntropyModule

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACT = {"elu": lambda v, alpha: F.elu(v, alpha), "relu": lambda v, alpha: F.relu(v),
       "tanh": lambda v, alpha: torch.tanh(v)}


def torch_mlp(state, x, y, hidden_dims, activation, alpha, residual):
    """logits, loss, {name: grad}, dx of the same network through torch autograd."""
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h = lambda v: ACT[activation](v, alpha)  # noqa: E731
    lin = lambda i, v: F.linear(v, p[f"linears.{i}.weight"], p[f"linears.{i}.bias"])  # noqa: E731
    n = len(hidden_dims)
    a = h(lin(0, xt))
    if residual:
        for k in range(1, n, 2):
            a = a + lin(k + 1, h(lin(k, a)))
    else:
        for i in range(1, n):
            a = h(lin(i, a))
    logits = lin(n, a)
    loss = F.cross_entropy(logits, torch.tensor(y))
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in p.items()}
    return logits.detach().numpy(), loss.item(), grads, xt.grad.numpy()




@pytest.mark.parametrize("activation, dims, residual, alpha", ARCH_CASES)
def test_forward_loss_and_grads_match_torch(activation, dims, residual, alpha):
    rng = np.random.default_rng(0)
    n_in, n_cls, s = 30, 7, 9
    model = MLP(n_in, dims, n_cls, activation, alpha=alpha, residual=residual, rng=rng, dtype=np.float64)
    state = model.state_dict()
    for k in state:
        if k.endswith("bias"):
            state[k] = rng.standard_normal(state[k].shape) * 0.3
    model.load_state_dict(state)
    x, y = rng.standard_normal((s, n_in)), rng.integers(0, n_cls, s)

    loss_fn = SoftmaxCrossEntropyModule()
    logits = model.forward(x).copy()
    loss = loss_fn.forward(logits, y)
    dx = model.backward(loss_fn.backward(logits, y))
    t_logits, t_loss, t_grads, t_dx = torch_mlp(state, x, y, dims, activation, alpha, residual)

    np.testing.assert_allclose(logits, t_logits, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss, t_loss, rtol=1e-10, atol=1e-12)
    for name, grad in model.named_grads():
        np.testing.assert_allclose(grad, t_grads[name], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 1e-3), (0.0, 0.0), (0.0, 1e-3), (0.9, 0.0)])
@pytest.mark.parametrize("as_dict", [False, True])
def test_sgd_matches_torch_over_20_steps(momentum, weight_decay, as_dict):
    rng = np.random.default_rng(1)
    shapes = [(6, 4), (6,), (3, 6), (3,), (1, 1)]
    params = [rng.standard_normal(s) for s in shapes]
    initial = [p.copy() for p in params]
    grads = [np.zeros(s) for s in shapes]
    t_params = [torch.tensor(p, requires_grad=True) for p in params]
    lr = 0.05
    if as_dict:
        opt = SGD({str(i): p for i, p in enumerate(params)}, {str(i): g for i, g in enumerate(grads)},
                  lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = SGD(params, grads, lr=lr, momentum=momentum, weight_decay=weight_decay)
    t_opt = torch.optim.SGD(t_params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(20):
        for g, tp in zip(grads, t_params):
            g[...] = rng.standard_normal(g.shape)
            tp.grad = torch.tensor(g)
        before = [g.copy() for g in grads]
        opt.step()
        t_opt.step()
        for g, b in zip(grads, before):
            np.testing.assert_array_equal(g, b)  # the optimizer never touches the grads
        for p, tp in zip(params, t_params):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not any(np.array_equal(p, p0) for p, p0 in zip(params, initial))


def test_sgd_reset_restarts_momentum_like_a_fresh_torch_optimizer():
    rng = np.random.default_rng(2)
    p = rng.standard_normal((3, 2))
    g = np.zeros_like(p)
    opt = SGD([p], [g], lr=0.1, momentum=0.9)
    for _ in range(3):
        g[...] = rng.standard_normal(g.shape)
        opt.step()
    opt.reset()
    tp = torch.tensor(p.copy(), requires_grad=True)
    t_opt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    for _ in range(3):
        g[...] = rng.standard_normal(g.shape)
        tp.grad = torch.tensor(g)
        opt.step()
        t_opt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12)


def test_sgd_float32_in_place():
    p = np.ones((4, 3), dtype=np.float32)
    g = np.full((4, 3), 2.0, dtype=np.float32)
    ident = id(p)
    SGD([p], [g], lr=0.25).step()
    assert id(p) == ident and p.dtype == np.float32
    np.testing.assert_array_equal(p, 0.5)


def test_sgd_bad_arguments():
    p, g = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError, match="momentum must be in"):
        SGD([p], [g], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        SGD([p], [g], lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="shape"):
        SGD([p], [np.zeros(4)], lr=0.1)
    with pytest.raises(ValueError, match="1 params but 2 grads"):
        SGD([p], [g, g], lr=0.1)
