"""Hessian-vector products of the training loss, the exact Hessian of a small model, and Lanczos.

The loss is the mean cross-entropy of an MLP on one fixed batch (x, y), as a
function of the flat float64 parameter vector θ (d,) (``bench.theory.params``
order). Three ways to get at its Hessian H = ∇²L(θ), (d, d):

* :class:`TorchHVP`: ``H v`` by double backward in float64 (reverse over
  reverse): the gradient graph is built once at θ with ``create_graph=True``
  and every product is one more backward through it with ``v`` as the upstream
  gradient. Exact up to float64 rounding.
* :class:`NumpyFiniteDifferenceHVP`: ``H v ≈ (g(θ + εu) − g(θ − εu)) / 2ε · ‖v‖``
  with u = v/‖v‖ and g the NumPy MLP's analytic gradient in float64. The
  error is a truncation term ε²/6 · ∇³L[u, u, ·] plus a rounding term of about
  δ·G/ε, δ = 2.2e-16 the float64 unit roundoff and G the size of the summed
  per-example gradient terms (order 1 here); balancing the two gives
  ε ≈ (3δ)^(1/3) ≈ 1e-5, and an error near δ^(2/3) ≈ 4e-11 in each
  entry of ``H u``. ``DEFAULT_EPS`` is that value; the tests check a sweep.
* :func:`exact_hessian`: the full matrix by ``torch.func.hessian``
  (forward-over-reverse: a different autodiff route from :class:`TorchHVP`),
  only for small d (it holds d² float64 values).

:func:`lanczos` feeds any of the products to ``scipy.sparse.linalg.eigsh``
through a ``LinearOperator``: ``which="LA"`` gives the largest eigenvalues,
``which="SA"`` the most negative ones.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from bench.theory.params import flatten, numpy_loss_grads, numpy_model, torch_model
from impl_common.arch import Arch

DEFAULT_EPS = 1e-5  # central-difference step along a unit direction: ≈ (3 δ)^(1/3), see the module doc


class TorchHVP:
    """v (d,) -> H v (d,) at ``state`` on (x, y), by double backward in float64.

    Shapes: x (S, n_inputs), y (S,) int; v and the result (d,) float64 NumPy.
    """

    def __init__(self, arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
        self.arch = arch
        self.model = torch_model(arch, state, np.float64)
        names = [n for n, _ in self.model.named_parameters()]
        if names != arch.names():
            raise ValueError(f"TorchMLP parameter order {names} is not the state order {arch.names()}")
        self.params = list(self.model.parameters())
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64))       # (S, M)
        yt = torch.as_tensor(np.asarray(y, dtype=np.int64))         # (S,)
        self.loss = F.cross_entropy(self.model(xt), yt)            # F1, ()
        grads = torch.autograd.grad(self.loss, self.params, create_graph=True)
        self.grad = torch.cat([g.reshape(-1) for g in grads])      # ∇L(θ) with its graph, (d,)
        self.n = self.grad.numel()
        self.calls = 0

    def gradient(self) -> np.ndarray:
        """∇L(θ) (d,) float64."""
        return self.grad.detach().numpy().copy()

    def __call__(self, v: np.ndarray) -> np.ndarray:
        self.calls += 1
        vt = torch.as_tensor(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        # d(∇L · v)/dθ = H v: one backward through the gradient's graph, kept for the next v
        hv = torch.autograd.grad(self.grad, self.params, grad_outputs=vt, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()


class NumpyFiniteDifferenceHVP:
    """v (d,) -> H v (d,) by central differences of the NumPy MLP's analytic gradient, float64.

    Two gradient evaluations per product, at θ ± ε v/‖v‖ (see the module doc
    for the choice of ε).
    """

    def __init__(self, arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                 eps: float = DEFAULT_EPS):
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.arch, self.eps = arch, float(eps)
        self.model = numpy_model(arch, state, np.float64)
        self.theta = flatten(state, arch)                     # (d,) float64
        self.x = np.ascontiguousarray(x, dtype=np.float64)    # (S, M)
        self.y = np.asarray(y, dtype=np.int64)                # (S,)
        self.n = self.theta.size
        self.calls = 0

    def gradient(self, theta: np.ndarray | None = None) -> np.ndarray:
        """∇L at ``theta`` (default θ), (d,) float64."""
        theta = self.theta if theta is None else theta
        start = 0
        for name, p in self.model.named_parameters():
            p[...] = theta[start:start + p.size].reshape(p.shape)
            start += p.size
        _, grads = numpy_loss_grads(self.model, self.x, self.y)
        return np.concatenate([grads[n].ravel() for n in self.arch.names()])

    def __call__(self, v: np.ndarray) -> np.ndarray:
        self.calls += 1
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            return np.zeros_like(v)
        u = v / norm                                                      # unit direction, (d,)
        g_plus = self.gradient(self.theta + self.eps * u)                 # ∇L(θ + εu)
        g_minus = self.gradient(self.theta - self.eps * u)                # ∇L(θ − εu)
        return (g_plus - g_minus) * (norm / (2.0 * self.eps))            # H v ≈ ‖v‖ (g+ − g−) / 2ε


def exact_hessian(arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The full Hessian (d, d) float64 by ``torch.func.hessian`` (forward over reverse), symmetrised.

    Holds d² values: meant for models of a few thousand parameters at most.
    """
    model = torch_model(arch, state, np.float64)
    names, shapes = arch.names(), arch.shapes()
    sizes = [int(np.prod(shapes[n])) for n in names]
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.reshape(shapes[n]) for n, t in zip(names, torch.split(theta, sizes))}
        return F.cross_entropy(torch.func.functional_call(model, params, (xt,)), yt)  # F1

    theta = torch.as_tensor(flatten(state, arch))
    with warnings.catch_warnings():
        # NOTE: the first forward-mode call loads torch's own jit-scripted decompositions, which
        # warns that torch.jit.script is deprecated: torch's internals, not ours
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        h = torch.func.hessian(loss)(theta).detach().numpy()  # (d, d)
    return 0.5 * (h + h.T)


@dataclass
class Extremes:
    """Ritz values at one end of the spectrum and what it took to get them."""

    which: str            # "LA" (largest) or "SA" (most negative)
    values: np.ndarray    # (k,) ascending
    matvecs: int          # Hessian-vector products used
    seconds: float
    converged: bool       # False: ARPACK stopped at maxiter; values holds the converged ones


def lanczos(matvec, n: int, k: int, which: str, *, v0: np.ndarray, tol: float = 1e-8,
            maxiter: int | None = None, ncv: int | None = None) -> Extremes:
    """The ``k`` extreme eigenvalues of the symmetric operator ``matvec`` (d = ``n``) by implicitly
    restarted Lanczos (``scipy.sparse.linalg.eigsh``); ``v0`` (n,) is the starting vector."""
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' or 'SA', got {which!r}")
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for an operator of size {n}, got {k}")
    count = [0]

    def mv(v: np.ndarray) -> np.ndarray:
        count[0] += 1
        return matvec(np.asarray(v, dtype=np.float64).reshape(-1))

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    t0 = time.perf_counter()
    try:
        values = eigsh(op, k=k, which=which, v0=v0, tol=tol, maxiter=maxiter, ncv=ncv,
                       return_eigenvectors=False)
        converged = True
    except ArpackNoConvergence as exc:
        values, converged = exc.eigenvalues, False
    return Extremes(which=which, values=np.sort(np.asarray(values, dtype=np.float64)),
                    matvecs=count[0], seconds=time.perf_counter() - t0, converged=converged)
