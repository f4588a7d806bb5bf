"""The user's whole MLP against torch autograd from the same weights: output, loss, every gradient.

The network is built small, ``MLP(7, [5, 4], 3)`` (with ``dtype=float64``
when its constructor takes a dtype), on a batch of 6. Its linear layers are
found among the object's attributes (lists, dicts and the user's own
objects, searched in order) and ordered by their shapes; their params are
overwritten from the seed and copied into a float64 torch network
``L0 -> ELU -> L1 -> ELU -> L2`` (the ELU alphas read from the user's
ELUModule instances). The loss and its gradient use the user's modules, as in
the course: ``probs = SoftMax(logits)`` when forward returns logits,
``L = CE(probs, y)``, ``dout = CE.backward``, ``dout = SoftMax.backward``
when needed, then ``MLP.backward(dout)``. Torch computes
``cross_entropy(logits, y)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.checks.gradcheck import (
    AUTOGRAD_TOL,
    Case,
    CheckOutcome,
    UserCodeError,
    as_array,
    as_scalar,
    call,
    compare,
)
from bench.checks.layers import labels_as, linear_grads, set_param
from bench.checks.loader import CourseImpl

N_INPUTS, N_HIDDEN, N_CLASSES, BATCH = 7, (5, 4), 3, 6
CHECKS = ("output", "loss", "grads", "dL/dx")


def check_network(impl: CourseImpl, rng: np.random.Generator,
                  labels: str) -> tuple[list[CheckOutcome], list[str]]:
    """The MLP rows (output, loss, parameter gradients, dL/dx vs torch) and notes on what was found."""
    widths = [N_INPUTS, *N_HIDDEN, N_CLASSES]
    case = Case(f"S={BATCH}, {' -> '.join(map(str, widths))}")
    rows = {k: CheckOutcome("MLP", f"{k} vs torch", AUTOGRAD_TOL) for k in CHECKS}
    notes: list[str] = []
    try:
        mlp = call("constructor", _construct(impl.MLP))
        linears = _ordered_linears(impl, mlp, widths)
        weights = [(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.5)
                   for i, o in zip(widths[:-1], widths[1:])]
        for lin, (w, b) in zip(linears, weights):
            set_param(lin, "weight", w, [w.shape])
            set_param(lin, "bias", b, [b.shape, (1, b.size)])
        alphas, note = _alphas(impl, mlp, len(linears) - 1)
        notes += [note] if note else []
        x = rng.normal(size=(BATCH, N_INPUTS))
        y = rng.integers(0, N_CLASSES, size=BATCH)
        case.data.update(x=x, y=y, weights=weights, alphas=alphas)
        user = _user_pass(impl, mlp, linears, x, labels_as(labels, y, N_CLASSES))
    except UserCodeError as exc:
        build = CheckOutcome("MLP", "build and run", AUTOGRAD_TOL, errors=[(case, exc)])
        return [build], notes
    probs = user["probs_output"]
    notes.append("MLP.forward returns " + (
        "probabilities (rows sum to 1): loss = CrossEntropyModule(output)" if probs
        else "logits: loss = CrossEntropyModule(SoftMaxModule(output))"))
    ref = _torch_pass(x, y, weights, alphas, probs)
    case.data["candidates"] = _output_candidates(x, weights, alphas, probs)
    rows["output"].comparisons.append(compare(case, "output", user["output"], ref["output"]))
    rows["loss"].comparisons.append(compare(case, "loss", user["loss"], ref["loss"]))
    for i, ((dw, db), (rw, rb)) in enumerate(zip(user["grads"], ref["grads"])):
        rows["grads"].comparisons += [compare(case, f"layer {i} dL/dW", dw, rw),
                                      compare(case, f"layer {i} dL/db", db, rb)]
    if user["dx"] is not None:
        rows["dL/dx"].comparisons.append(compare(case, "dL/dx", user["dx"], ref["dx"]))
    else:
        del rows["dL/dx"]
        notes.append("MLP.backward returns no dL/dx of shape (S, n_inputs): not compared")
    return list(rows.values()), notes


def _construct(cls: type) -> Callable[[], Any]:
    """``cls(7, [5, 4], 3)``, with ``dtype=np.float64`` when the constructor takes a dtype."""
    try:
        takes_dtype = "dtype" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_dtype = False
    kwargs = {"dtype": np.float64} if takes_dtype else {}
    return lambda: cls(N_INPUTS, list(N_HIDDEN), N_CLASSES, **kwargs)


def _user_pass(impl: CourseImpl, mlp: Any, linears: list[Any], x: np.ndarray, y_user: np.ndarray) -> dict:
    """The course's training step without the update: forward, loss, backward; the grads read back."""
    out = as_array("forward", call("forward", mlp.forward, x.copy()))
    if out.shape != (BATCH, N_CLASSES):
        raise UserCodeError("forward", f"returned shape {out.shape}, expected {(BATCH, N_CLASSES)}")
    probs_output = bool(np.all(np.isfinite(out)) and np.all(out >= 0)
                        and np.allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-8))
    sm = call("constructor", impl.SoftMaxModule)
    ce = call("constructor", impl.CrossEntropyModule)
    p = out if probs_output else as_array("SoftMax forward", call("SoftMax forward", sm.forward, out.copy()))
    phase = "CrossEntropy forward"
    loss = as_scalar(phase, call(phase, ce.forward, p.copy(), y_user.copy()))
    phase = "CrossEntropy backward"
    dout = as_array(phase, call(phase, ce.backward, p.copy(), y_user.copy()))
    if not probs_output:
        dout = as_array("SoftMax backward", call("SoftMax backward", sm.backward, dout))
    dx = call("backward", mlp.backward, dout)
    dx = np.array(dx, dtype=np.float64) if isinstance(dx, np.ndarray) and dx.shape == x.shape else None
    grads = [linear_grads(lin, lin_out) for lin, lin_out in zip(linears, [*N_HIDDEN, N_CLASSES])]
    return {"output": out, "probs_output": probs_output, "loss": loss, "grads": grads, "dx": dx}


def _torch_pass(x: np.ndarray, y: np.ndarray, weights: list, alphas: list[float], probs: bool) -> dict:
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    params = [tuple(torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in wb) for wb in weights]
    h = xt
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b                                # Y = X W^T + b
        if i < len(params) - 1:
            h = F.elu(h, alpha=alphas[i])
    loss = F.cross_entropy(h, torch.from_numpy(y))
    loss.backward()
    out = torch.softmax(h, dim=1) if probs else h
    return {"output": out.detach().numpy().copy(), "loss": loss.detach().numpy().copy(),
            "dx": xt.grad.numpy(), "grads": [(w.grad.numpy(), b.grad.numpy()) for w, b in params]}


def _output_candidates(x: np.ndarray, weights: list, alphas: list[float],
                       probs: bool) -> dict[str, np.ndarray]:
    """Outputs of the usual wrong wirings, in the convention of the user's output."""
    def net(act_last: bool, act: bool = True) -> np.ndarray:
        h = x
        for i, (w, b) in enumerate(weights):
            h = h @ w.T + b
            if act and (i < len(weights) - 1 or act_last):
                a = alphas[min(i, len(alphas) - 1)] if alphas else 1.0
                h = np.where(h > 0, h, a * np.expm1(np.minimum(h, 0)))
        if probs:
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
        return h
    return {"elu_after_last": net(act_last=True), "no_activation": net(act_last=False, act=False)}


# ---------------------------------------------------------------- finding the layers


def _ordered_linears(impl: CourseImpl, mlp: Any, widths: list[int]) -> list[Any]:
    """The LinearModules of ``mlp``, ordered by the widths they map (in -> out), one per layer."""
    found = find_instances(mlp, lambda v: _is(v, impl.LinearModule), impl)
    shapes = [tuple(np.shape(getattr(lin, "params", {}).get("weight"))) if isinstance(
        getattr(lin, "params", None), dict) else None for lin in found]
    ordered = []
    for i, o in zip(widths[:-1], widths[1:]):
        k = next((k for k, s in enumerate(shapes) if s == (o, i) and found[k] not in ordered), None)
        if k is None:
            want = ", ".join(str((o, i)) for i, o in zip(widths[:-1], widths[1:]))
            built = f"MLP({widths[0]}, {list(widths[1:-1])}, {widths[-1]})"
            raise UserCodeError("constructor", f"{built}: found {len(found)} LinearModule(s) among its "
                                f"attributes, with params['weight'] shapes {shapes}; expected {want}")
        ordered.append(found[k])
    return ordered


def _alphas(impl: CourseImpl, mlp: Any, n: int) -> tuple[list[float], str]:
    """The alpha of each ELU between the linear layers, and a note when they had to be assumed."""
    elus = find_instances(mlp, lambda v: _is(v, impl.ELUModule), impl)
    alphas = [float(getattr(e, "alpha", 1.0)) for e in elus]
    if len(alphas) == n:
        return alphas, ""
    if alphas:
        return [alphas[0]] * n, f"found {len(alphas)} ELUModule(s) in the MLP for {n} hidden layers: " \
                                f"the torch network uses alpha={alphas[0]:g} throughout"
    return [1.0] * n, "found no ELUModule in the MLP: the torch network uses ELU(alpha=1) between its layers"


def find_instances(obj: Any, pred: Callable[[Any], bool], impl: CourseImpl, depth: int = 3) -> list[Any]:
    """Objects in ``obj``'s attributes for which ``pred`` holds, in attribute order, each once.

    Searched: lists, tuples and dict values, and the attributes of objects
    whose class the user's files define (a block of layers), ``depth`` deep.
    """
    own = {m.__name__ for m in (impl.modules, impl.mlp_module) if m is not None}
    found: list[Any] = []
    seen: set[int] = set()

    def visit(v: Any, d: int) -> None:
        if id(v) in seen or d < 0:
            return
        seen.add(id(v))
        if pred(v):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            for e in v:
                visit(e, d - 1)
        elif isinstance(v, dict):
            for e in v.values():
                visit(e, d - 1)
        elif type(v).__module__ in own and hasattr(v, "__dict__"):
            for e in vars(v).values():
                visit(e, d - 1)

    seen.add(id(obj))
    for value in getattr(obj, "__dict__", {}).values():
        visit(value, depth)
    return found


def _is(v: Any, cls: type) -> bool:
    return isinstance(v, cls) or type(v).__name__ == cls.__name__
