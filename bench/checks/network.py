"""The user's whole MLP against torch autograd from the same weights: output, loss, every gradient.

The network is built small, ``MLP(7, [5, 4], 3)`` (with ``dtype=float64``
when its constructor takes a dtype), on a batch of 6 holding every class. Its
linear layers are found among the object's attributes (lists, dicts and the
user's own objects, searched in order) and ordered by their shapes (in the
student's weight layout); their params are overwritten from the seed and
copied into a float64 torch network ``L0 -> act -> L1 -> act -> L2``, the
activation the one the MLP holds (ELU with the alphas read from its
``ELUModule`` instances, or ReLU). The loss and its gradient use the user's
modules, as in the course: ``probs = SoftMax(logits)`` when forward returns
logits, ``L = CE(probs, y)``, ``dout = CE.backward``, ``dout =
SoftMax.backward`` when needed, then ``MLP.backward(dout)``. Torch computes
``cross_entropy(logits, y)``. ``course:PATH`` builds the student's MLP the
same way (:func:`build_mlp`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from bench.checks.interface import WEIGHT_LAYOUTS, Interface, labels_as

N_INPUTS, N_HIDDEN, N_CLASSES, BATCH = 7, (5, 4), 3, 6
CHECKS = ("output", "loss", "grads", "dL/dx")


@dataclass
class StudentMLP:
    """The user's MLP object, its LinearModules in layer order and the activation between them."""

    mlp: Any
    linears: list[Any]
    activation: str            # "elu" or "relu"
    alphas: list[float]        # the ELU alphas, one per hidden layer (1.0 for ReLU)
    note: str = ""             # what had to be assumed


def build_mlp(iface: Interface, widths: Sequence[int], dtype: Any = np.float64,
              alpha: float | None = None) -> StudentMLP:
    """``MLP(widths[0], widths[1:-1], widths[-1])`` and its layers; ``dtype=`` when it takes one, and
    ``alpha`` (when given) to each of its parameters named like ``alpha`` (``alpha``, ``elu_alpha``)."""
    cls = iface.impl.MLP
    try:
        names = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        names = []
    kwargs = {"dtype": dtype} if "dtype" in names else {}
    kwargs.update({name: alpha for name in names[3:] if alpha is not None and "alpha" in name.lower()})
    mlp = call("constructor", cls, widths[0], list(widths[1:-1]), widths[-1], **kwargs)
    linears = _ordered_linears(iface, mlp, widths)
    return StudentMLP(mlp, linears, *_activations(iface, mlp, len(linears) - 1))


def check_network(iface: Interface, rng: np.random.Generator) -> tuple[list[CheckOutcome], list[str]]:
    """The MLP rows (output, loss, parameter gradients, dL/dx vs torch) and notes on what was found."""
    widths = [N_INPUTS, *N_HIDDEN, N_CLASSES]
    case = Case(f"S={BATCH}, {' -> '.join(map(str, widths))}", representative=True)
    rows = {k: CheckOutcome("MLP", f"{k} vs torch", AUTOGRAD_TOL) for k in CHECKS}
    notes: list[str] = []
    try:
        net = build_mlp(iface, widths)
        weights = [(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.5)
                   for i, o in zip(widths[:-1], widths[1:])]
        for lin, (w, b) in zip(net.linears, weights):
            iface.set_linear(lin, w, b)
        notes += [net.note] if net.note else []
        x = rng.normal(size=(BATCH, N_INPUTS))
        y = rng.permutation(np.arange(BATCH) % N_CLASSES)  # every class present
        case.data.update(x=x, y=y, weights=weights, alphas=net.alphas, activation=net.activation)
        user = _user_pass(iface, net, x, labels_as(iface.labels, y, N_CLASSES))
    except UserCodeError as exc:
        build = CheckOutcome("MLP", "build and run", AUTOGRAD_TOL, errors=[(case, exc)])
        return [build], notes
    probs = user["probs_output"]
    notes.append("MLP.forward returns " + (
        "probabilities (rows sum to 1): loss = CrossEntropyModule(output)" if probs
        else "logits: loss = CrossEntropyModule(SoftMaxModule(output))"))
    ref = _torch_pass(x, y, weights, net, probs)
    case.data["candidates"] = _output_candidates(x, weights, net, probs)
    rows["output"].comparisons.append(compare(case, "output", user["output"], ref["output"]))
    rows["loss"].comparisons.append(compare(case, "loss", user["loss"], ref["loss"]))
    for i, ((dw, db), (rw, rb)) in enumerate(zip(user["grads"], ref["grads"])):
        rows["grads"].comparisons += [compare(case, f"layer {i} dL/dW", dw, iface.user_weight(rw)),
                                      compare(case, f"layer {i} dL/db", db, rb)]
    if user["dx"] is not None:
        rows["dL/dx"].comparisons.append(compare(case, "dL/dx", user["dx"], ref["dx"]))
    else:
        del rows["dL/dx"]
        notes.append("MLP.backward returns no dL/dx of shape (S, n_inputs): not compared")
    return list(rows.values()), notes


def returns_probabilities(out: np.ndarray) -> bool:
    """Whether an MLP's output rows are probabilities (it ends in a softmax) rather than logits."""
    return bool(np.all(np.isfinite(out)) and np.all(out >= 0)
                and np.allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-5 if out.dtype == np.float32 else 1e-8))


def _user_pass(iface: Interface, net: StudentMLP, x: np.ndarray, y_user: np.ndarray) -> dict:
    """The course's training step without the update: forward, loss, backward; the grads read back."""
    out = as_array("forward", call("forward", net.mlp.forward, x.copy()))
    if out.shape != (BATCH, N_CLASSES):
        raise UserCodeError("forward", f"returned shape {out.shape}, expected {(BATCH, N_CLASSES)}")
    probs_output = returns_probabilities(out)
    sm, ce = iface.new("SoftMaxModule"), iface.new("CrossEntropyModule")
    phase = "SoftMaxModule.forward"
    p = out if probs_output else as_array(phase, call(phase, sm.forward, out.copy()))
    phase = "CrossEntropyModule.forward"
    loss = as_scalar(phase, call(phase, ce.forward, p.copy(), y_user.copy()))
    phase = "CrossEntropyModule.backward"
    dout = as_array(phase, call(phase, ce.backward, p.copy(), y_user.copy()))
    if not probs_output:
        dout = as_array("SoftMaxModule.backward", call("SoftMaxModule.backward", sm.backward, dout))
    dx = call("backward", net.mlp.backward, dout)
    dx = np.array(dx, dtype=np.float64) if isinstance(dx, np.ndarray) and dx.shape == x.shape else None
    return {"output": out, "probs_output": probs_output, "loss": loss, "dx": dx,
            "grads": [iface.grads(lin) for lin in net.linears]}


def _act(h: Any, net: StudentMLP, i: int) -> Any:
    if net.activation == "relu":
        return F.relu(h) if isinstance(h, torch.Tensor) else np.maximum(h, 0)
    a = net.alphas[min(i, len(net.alphas) - 1)] if net.alphas else 1.0
    return F.elu(h, alpha=a) if isinstance(h, torch.Tensor) else np.where(h > 0, h, a * np.expm1(np.minimum(h, 0)))


def _torch_pass(x: np.ndarray, y: np.ndarray, weights: list, net: StudentMLP, probs: bool) -> dict:
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    params = [tuple(torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in wb) for wb in weights]
    h = xt
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b                                # Y = X W^T + b
        if i < len(params) - 1:
            h = _act(h, net, i)
    loss = F.cross_entropy(h, torch.from_numpy(y))
    loss.backward()
    out = torch.softmax(h, dim=1) if probs else h
    return {"output": out.detach().numpy().copy(), "loss": loss.detach().numpy().copy(),
            "dx": xt.grad.numpy(), "grads": [(w.grad.numpy(), b.grad.numpy()) for w, b in params]}


def _output_candidates(x: np.ndarray, weights: list, net: StudentMLP, probs: bool) -> dict[str, Any]:
    """Outputs of the usual wrong wirings, in the convention of the user's output."""
    def forward(act_last: bool, act: bool = True) -> np.ndarray:
        h = x
        for i, (w, b) in enumerate(weights):
            h = h @ w.T + b
            if act and (i < len(weights) - 1 or act_last):
                h = _act(h, net, i)
        if probs:
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
        return h
    return {"act_after_last": forward(act_last=True), "no_activation": forward(act_last=False, act=False)}


# ---------------------------------------------------------------- finding the layers


def _ordered_linears(iface: Interface, mlp: Any, widths: Sequence[int]) -> list[Any]:
    """The LinearModules of ``mlp``, ordered by the widths they map (in -> out), one per layer."""
    found = find_instances(mlp, lambda v: _is(v, iface.impl.LinearModule), iface)
    shapes = [tuple(np.shape(getattr(lin, "params", {}).get("weight"))) if isinstance(
        getattr(lin, "params", None), dict) else None for lin in found]
    layout = WEIGHT_LAYOUTS[iface.weight]
    ordered = []
    for i, o in zip(widths[:-1], widths[1:]):
        k = next((k for k, s in enumerate(shapes) if s == layout(i, o) and found[k] not in ordered), None)
        if k is None:
            want = ", ".join(str(layout(i, o)) for i, o in zip(widths[:-1], widths[1:]))
            built = f"MLP({widths[0]}, {list(widths[1:-1])}, {widths[-1]})"
            raise UserCodeError("constructor", f"{built}: found {len(found)} LinearModule(s) among its "
                                f"attributes, with params['weight'] shapes {shapes}; expected {want}")
        ordered.append(found[k])
    return ordered


def _activations(iface: Interface, mlp: Any, n: int) -> tuple[str, list[float], str]:
    """The activation between the linear layers, its alphas, and a note when they had to be assumed."""
    impl = iface.impl
    elus = find_instances(mlp, lambda v: impl.ELUModule is not None and _is(v, impl.ELUModule), iface)
    relus = find_instances(mlp, lambda v: impl.ReLUModule is not None and _is(v, impl.ReLUModule), iface)
    if relus and not elus:
        return "relu", [1.0] * n, ""
    alphas = [float(getattr(e, "alpha", 1.0)) for e in elus]
    if len(alphas) == n:
        return "elu", alphas, ""
    if alphas:
        return "elu", [alphas[0]] * n, (f"found {len(alphas)} ELUModule(s) in the MLP for {n} hidden layers: "
                                        f"the torch network uses alpha={alphas[0]:g} throughout")
    act = iface.activations[0]
    return act, [1.0] * n, (f"found no activation module in the MLP: the torch network uses "
                            f"{'ELU(alpha=1)' if act == 'elu' else 'ReLU'} between its layers")


def find_instances(obj: Any, pred: Callable[[Any], bool], iface: Interface, depth: int = 3) -> list[Any]:
    """Objects in ``obj``'s attributes for which ``pred`` holds, in attribute order, each once.

    Searched: lists, tuples and dict values, and the attributes of objects
    whose class the user's files define (a block of layers), ``depth`` deep.
    """
    own = {m.__name__ for m in (iface.impl.modules, iface.impl.mlp_module) if m is not None}
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
