"""The course modules checked one by one: cases, the user's run, torch's, finite differences, side effects.

Every module (and SoftMax followed by CrossEntropy, the course's loss path)
is a :class:`LayerSpec`: its cases (shapes down to batch 1, one feature, one
class, logits of magnitude 1e3 for the softmax, and one representative shape
a failure is shown at), how to run the user's forward and backward on a case
through the detected :class:`~bench.checks.interface.Interface`, the same
computation in float64 torch, the numerical gradients of the user's own
forward, and a probe for side effects. :func:`check_layer` turns a spec into
three :class:`CheckOutcome` rows: finite differences, autograd (torch) and
side effects.

No probe sits where a correct implementation may legitimately be
non-differentiable or clipped: activation inputs stay 2e-3 away from the kink
at 0, and the cross-entropy's finite difference is not taken where a
probability lies within the step of 0 or 1 (at C = 1 it is exactly 1, the edge
of ``np.clip(x, eps, 1)``): those cases are compared with torch only.

Names: S samples, M input features, N output features, C classes; ``d<q>``
is dL/d<q>; ``dout`` is the random upstream gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.checks.gradcheck import (
    AUTOGRAD_TOL,
    FD_STEP,
    FD_TOL,
    REPEAT_TOL,
    Case,
    CheckOutcome,
    Issue,
    UserCodeError,
    as_array,
    as_scalar,
    as_value,
    call,
    compare,
    numerical_vjp,
    rel_error,
)
from bench.checks.interface import Interface, labels_as

LARGE = 1e3  # the logit magnitude at which an unshifted exp overflows (e^1000 = inf) or underflows
COMPOSITE = "SoftMax → CrossEntropy"
KINK_GAP = 2e-3  # activation inputs stay this far from 0


@dataclass
class LayerSpec:
    """How to check one module; every callable gets the interface and one case."""

    name: str
    cases: Callable[[np.random.Generator, Interface], list[Case]]
    run: Callable[[Interface, Case], dict[str, np.ndarray]]        # the user's forward and backward
    reference: Callable[[Interface, Case], dict[str, np.ndarray]]  # the same in float64 torch
    numerical: Callable[[Interface, Case], dict[str, np.ndarray]]  # finite differences of the user's forward
    probe: Callable[[Interface, Case], CheckOutcome] | None = None  # side effects, on the representative case


def check_layer(spec: LayerSpec, iface: Interface, rng: np.random.Generator) -> list[CheckOutcome]:
    """The finite-difference, autograd and (when the spec has a probe) side-effect rows of ``spec``."""
    cases = spec.cases(rng, iface)
    fd = CheckOutcome(spec.name, "finite differences", FD_TOL)
    ag = CheckOutcome(spec.name, "autograd (torch)", AUTOGRAD_TOL)
    for case in cases:
        ref = spec.reference(iface, case)
        try:
            user = spec.run(iface, case)
        except UserCodeError as exc:
            fd.errors.append((case, exc))
            ag.errors.append((case, exc))
            continue
        ag.comparisons += [compare(case, q, user[q], ref[q]) for q in ref]
        try:
            num = spec.numerical(iface, case)
        except UserCodeError as exc:
            fd.errors.append((case, exc))
            continue
        fd.comparisons += [compare(case, q, user[q], num[q]) for q in num]
    outcomes = [fd, ag]
    if spec.probe is not None:
        outcomes.append(spec.probe(iface, next(c for c in cases if c.representative)))
    return outcomes


def specs(iface: Interface) -> list[LayerSpec]:
    """The specs of every module ``iface`` has, in the order they are checked."""
    acts = [_activation_spec(name) for name in iface.activations]
    return [_LINEAR, *acts, _SOFTMAX, _CE, _COMPOSITE_SPEC]


# ---------------------------------------------------------------- LinearModule


def _linear_cases(rng: np.random.Generator, iface: Interface) -> list[Case]:
    cases = []
    for s, m, n in [(1, 1, 1), (1, 4, 3), (5, 1, 2), (3, 6, 1), (4, 3, 3), (8, 6, 4)]:
        cases.append(Case(f"S={s}, M={m}, N={n}", {
            "x": rng.normal(size=(s, m)),                          # (S, M)
            "weight": rng.normal(size=(n, m)) / np.sqrt(m),        # (N, M)
            "bias": rng.normal(size=n) * 0.5,                      # (N,)
            "dout": rng.normal(size=(s, n)),                       # (S, N)
        }, representative=(s, m, n) == (8, 6, 4)))
    for case in cases:
        case.data["user_weight"] = iface.user_weight(case.data["weight"])
    return cases


def _new_linear(iface: Interface, d: dict) -> Any:
    n, m = d["weight"].shape
    lin = iface.linear(m, n)
    iface.set_linear(lin, d["weight"], d["bias"])
    return lin


def _linear_run(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    lin = _new_linear(iface, c.data)
    out = as_array("forward", call("forward", lin.forward, c.data["x"].copy()))
    dx = as_array("backward", call("backward", lin.backward, c.data["dout"].copy()))
    dw, db = iface.grads(lin)
    return {"output": out, "dL/dx": dx, "dL/dW": dw, "dL/db": db}


def _linear_reference(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    x, w, b = (_leaf(c.data[k]) for k in ("x", "weight", "bias"))
    out = x @ w.T + b                                             # Y = X W^T + b, (S, N)
    out.backward(torch.from_numpy(c.data["dout"]))
    return {"output": _np(out), "dL/dx": _np(x.grad), "dL/dW": iface.user_weight(_np(w.grad)),
            "dL/db": _np(b.grad)}


def _linear_numerical(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    lin = _new_linear(iface, d)
    x = d["x"].copy()
    f = lambda: call("forward", lin.forward, x.copy())  # noqa: E731 - reads x and the params in place
    return {"dL/dx": numerical_vjp(f, x, d["dout"]),
            "dL/dW": numerical_vjp(f, lin.params["weight"], d["dout"]),
            "dL/db": numerical_vjp(f, lin.params["bias"], d["dout"]).reshape(-1)}


def _linear_probe(iface: Interface, c: Case) -> CheckOutcome:
    return probe_side_effects("LinearModule", c, lambda: _new_linear(iface, c.data), {"x": c.data["x"]},
                              {"dout": c.data["dout"]}, iface.grads)


_LINEAR = LayerSpec("LinearModule", _linear_cases, _linear_run, _linear_reference, _linear_numerical,
                    _linear_probe)


# ---------------------------------------------------------------- ELUModule, ReLUModule


def _activation_spec(name: str) -> LayerSpec:
    """ELUModule (alpha 1 and 0.5 when it takes an alpha) or ReLUModule, inputs away from the kink."""
    module = {"elu": "ELUModule", "relu": "ReLUModule"}[name]

    def cases(rng: np.random.Generator, iface: Interface) -> list[Case]:
        out = []
        for s, n, alpha in [(1, 1, 1.0), (1, 5, 1.0), (6, 1, 1.0), (4, 6, 0.5), (8, 6, 1.0)]:
            alpha = alpha if name == "elu" and iface.elu_alpha else 1.0
            x = rng.normal(size=(s, n)) * 2
            x = np.where(np.abs(x) < KINK_GAP, x + np.copysign(2 * KINK_GAP, x), x)  # no step across 0
            label = f"S={s}, N={n}" + (f", alpha={alpha:g}" if name == "elu" else "")
            out.append(Case(label, {"x": x, "alpha": alpha, "dout": rng.normal(size=(s, n))},
                            representative=(s, n) == (8, 6)))
        return out

    def run(iface: Interface, c: Case) -> dict[str, np.ndarray]:
        act = iface.activation(name, c.data["alpha"])
        out = as_array("forward", call("forward", act.forward, c.data["x"].copy()))
        dx = as_array("backward", call("backward", act.backward, c.data["dout"].copy()))
        return {"output": out, "dL/dx": dx}

    def reference(iface: Interface, c: Case) -> dict[str, np.ndarray]:
        x = _leaf(c.data["x"])
        out = F.elu(x, alpha=c.data["alpha"]) if name == "elu" else F.relu(x)
        out.backward(torch.from_numpy(c.data["dout"]))
        return {"output": _np(out), "dL/dx": _np(x.grad)}

    def numerical(iface: Interface, c: Case) -> dict[str, np.ndarray]:
        act = iface.activation(name, c.data["alpha"])
        x = c.data["x"].copy()
        return {"dL/dx": numerical_vjp(lambda: call("forward", act.forward, x.copy()), x, c.data["dout"])}

    def probe(iface: Interface, c: Case) -> CheckOutcome:
        return probe_side_effects(module, c, lambda: iface.activation(name, c.data["alpha"]),
                                  {"x": c.data["x"]}, {"dout": c.data["dout"]})

    return LayerSpec(module, cases, run, reference, numerical, probe)


# ---------------------------------------------------------------- SoftMaxModule


def _logit_cases(rng: np.random.Generator, small: list[tuple[int, int]],
                 large: list[tuple[int, int]]) -> list[Case]:
    """Logits ~ N(0, 1.5²), the last of ``small`` the representative shape; then the large ones: each
    row shifted by +1e3 or -1e3 (an unshifted exp overflows at +1e3 and underflows at -1e3)."""
    cases = [Case(f"S={s}, C={c}", {"x": rng.normal(size=(s, c)) * 1.5}, representative=(s, c) == small[-1])
             for s, c in small]
    for s, c in large:
        offsets = LARGE * np.where(np.arange(s) % 2 == 0, 1.0, -1.0)[:, None]  # (S, 1)
        cases.append(Case(f"S={s}, C={c}, logits ±{LARGE:g}",
                          {"x": offsets + rng.normal(size=(s, c))}, large=True))
    for case in cases:
        s, c = case.data["x"].shape
        case.data["dout"] = rng.normal(size=(s, c))
    return cases


def _softmax_cases(rng: np.random.Generator, iface: Interface) -> list[Case]:
    return _logit_cases(rng, [(1, 1), (1, 4), (5, 1), (4, 6), (8, 10)], [(4, 5), (2, 1)])


def _softmax_run(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    sm = iface.new("SoftMaxModule")
    out = as_array("forward", call("forward", sm.forward, c.data["x"].copy()))
    dx = as_array("backward", call("backward", sm.backward, c.data["dout"].copy()))
    return {"output": out, "dL/dx": dx}


def _softmax_reference(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    x = _leaf(c.data["x"])
    out = torch.softmax(x, dim=1)
    out.backward(torch.from_numpy(c.data["dout"]))
    return {"output": _np(out), "dL/dx": _np(x.grad)}


def _softmax_numerical(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    sm = iface.new("SoftMaxModule")
    x = c.data["x"].copy()
    return {"dL/dx": numerical_vjp(lambda: call("forward", sm.forward, x.copy()), x, c.data["dout"])}


def _softmax_probe(iface: Interface, c: Case) -> CheckOutcome:
    return probe_side_effects("SoftMaxModule", c, lambda: iface.new("SoftMaxModule"),
                              {"x": c.data["x"]}, {"dout": c.data["dout"]})


_SOFTMAX = LayerSpec("SoftMaxModule", _softmax_cases, _softmax_run, _softmax_reference, _softmax_numerical,
                     _softmax_probe)


# ---------------------------------------------------------------- CrossEntropyModule


def _ce_cases(rng: np.random.Generator, iface: Interface) -> list[Case]:
    """Probabilities of softmaxed N(0, 1.5²) logits; in some batches the largest class C - 1 is
    missing (``top`` False), where a one-hot width taken from the labels comes out too narrow."""
    cases = []
    for s, c, top in [(1, 1, True), (1, 4, False), (5, 1, True), (6, 3, True), (4, 5, False),
                      (8, 10, True)]:
        y = rng.integers(0, c if top else c - 1, size=s)
        y[0] = c - 1 if top else y[0]
        cases.append(Case(f"S={s}, C={c}", {"x": _softmax(rng.normal(size=(s, c)) * 1.5), "y": y,
                                           "y_user": labels_as(iface.labels, y, c), "top": top},
                          representative=(s, c) == (8, 10)))
    return cases


def _ce_run(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    ce = iface.new("CrossEntropyModule")
    loss = as_scalar("forward", call("forward", ce.forward, d["x"].copy(), d["y_user"].copy()))
    return {"loss": loss, "dL/dx": ce_backward(iface, d["x"], d["y_user"])}


def ce_backward(iface: Interface, x: np.ndarray, y_user: np.ndarray) -> np.ndarray:
    """``CrossEntropyModule().backward(x, y)`` on a new module, as the course's own tests call it.

    A backward that raises there but runs after a forward needs state only forward sets: that is
    the error (its message says so)."""
    try:
        ce = iface.new("CrossEntropyModule")
        return as_array("backward", call("backward", ce.backward, x.copy(), y_user.copy()))
    except UserCodeError as fresh:
        try:
            ce = iface.new("CrossEntropyModule")
            call("forward", ce.forward, x.copy(), y_user.copy())
            call("backward", ce.backward, x.copy(), y_user.copy())
        except UserCodeError:
            raise fresh from None
        raise UserCodeError("backward", f"needs state that only forward sets: on a new module it "
                            f"{fresh.message}, after a forward it runs; compute dL/dx from its "
                            "arguments x and y (the course's tests call backward alone)") from None


def _ce_reference(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    x = _leaf(c.data["x"])
    loss = -torch.log(x[torch.arange(x.shape[0]), torch.from_numpy(c.data["y"])]).mean()  # C1
    loss.backward()
    return {"loss": _np(loss), "dL/dx": _np(x.grad)}


def _ce_numerical(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    if not np.all((d["x"] > 2 * FD_STEP) & (d["x"] < 1 - 2 * FD_STEP)):
        return {}  # a step would leave (0, 1), where a clip is legitimately one-sided
    ce = iface.new("CrossEntropyModule")
    x = d["x"].copy()
    f = lambda: as_scalar("forward", call("forward", ce.forward, x.copy(), d["y_user"].copy()))  # noqa: E731
    return {"dL/dx": numerical_vjp(f, x, np.float64(1.0))}


def _ce_probe(iface: Interface, c: Case) -> CheckOutcome:
    args = {"x": c.data["x"], "y": c.data["y_user"]}
    return probe_side_effects("CrossEntropyModule", c, lambda: iface.new("CrossEntropyModule"), args, args)


_CE = LayerSpec("CrossEntropyModule", _ce_cases, _ce_run, _ce_reference, _ce_numerical, _ce_probe)


# ---------------------------------------------------------------- SoftMax followed by CrossEntropy


def _composite_cases(rng: np.random.Generator, iface: Interface) -> list[Case]:
    cases = _logit_cases(rng, [(1, 1), (3, 5), (6, 3), (8, 10)], [(4, 5), (1, 3)])
    for case in cases:
        s, c = case.data["x"].shape
        case.data["y"] = rng.integers(0, c, size=s)
        case.data["y_user"] = labels_as(iface.labels, case.data["y"], c)
    return cases


def _loss_path(iface: Interface, z: np.ndarray, y_user: np.ndarray) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The course's loss on logits ``z``: (SoftMaxModule, CrossEntropyModule, probabilities, loss)."""
    sm, ce = iface.new("SoftMaxModule"), iface.new("CrossEntropyModule")
    phase = "SoftMaxModule.forward"
    p = as_array(phase, call(phase, sm.forward, z.copy()))
    phase = "CrossEntropyModule.forward"
    return sm, ce, p, as_scalar(phase, call(phase, ce.forward, p.copy(), y_user.copy()))


def _composite_run(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    sm, ce, p, loss = _loss_path(iface, c.data["x"], c.data["y_user"])  # one CE, as in a training step
    phase = "CrossEntropyModule.backward"
    dp = as_array(phase, call(phase, ce.backward, p.copy(), c.data["y_user"].copy()))
    dz = as_array("SoftMaxModule.backward", call("SoftMaxModule.backward", sm.backward, dp))
    return {"loss": loss, "dL/dz": dz}


def _composite_reference(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    z = _leaf(c.data["x"])
    loss = F.cross_entropy(z, torch.from_numpy(c.data["y"]))
    loss.backward()
    return {"loss": _np(loss), "dL/dz": _np(z.grad)}


def _composite_numerical(iface: Interface, c: Case) -> dict[str, np.ndarray]:
    z = c.data["x"].copy()
    return {"dL/dz": numerical_vjp(lambda: _loss_path(iface, z, c.data["y_user"])[3], z, np.float64(1.0))}


_COMPOSITE_SPEC = LayerSpec(COMPOSITE, _composite_cases, _composite_run, _composite_reference,
                            _composite_numerical)


# ---------------------------------------------------------------- side effects


def probe_side_effects(module: str, case: Case, make: Callable[[], Any], forward_args: dict[str, np.ndarray],
                       backward_args: dict[str, np.ndarray],
                       grads: Callable[[Any], tuple[np.ndarray, ...]] | None = None) -> CheckOutcome:
    """Run forward then backward twice on one module with the same inputs.

    A failure: an argument changed in place (forward's x, backward's dout),
    or the second run's output, dx or grads differ from the first (grads that
    doubled were accumulated instead of overwritten). Grads that accumulate
    but that ``clear_cache()`` resets are a note: the course's training loops
    call it after every step (so do ``course:PATH`` and the MLP check).
    """
    out = CheckOutcome(module, "side effects", REPEAT_TOL)
    try:
        runs = _twice(out, make, forward_args, backward_args, grads)
    except UserCodeError as exc:
        out.errors.append((case, exc))
        return out
    names = ["output", "dL/dx", "dL/dW", "dL/db"]
    doubled = []
    for name, first, second in zip(names, runs[0], runs[1]):
        comp = compare(case, f"{name} (2nd call)", second, first)
        out.comparisons.append(comp)
        if comp.error <= REPEAT_TOL:
            continue
        if name in ("dL/dW", "dL/db") and np.any(first != 0) and rel_error(second, 2 * first) <= REPEAT_TOL:
            doubled.append(f"grads['{'weight' if name == 'dL/dW' else 'bias'}']")
        else:
            phase = "forward" if name == "output" else "backward"
            detail = comp.note or f"relative difference {comp.error:.2g}"
            out.issues.append(Issue(f"{name} differs on a 2nd call",
                                    f"{phase}: a second forward and backward on the same inputs gave a "
                                    f"different {name} ({detail}): it keeps state between calls"))
    cleared = _cleared_runs(make, forward_args, backward_args, grads) if doubled and not out.issues else None
    if cleared is not None and all(np.shape(a) == np.shape(b) and rel_error(a, b) <= REPEAT_TOL
                                   for a, b in zip(cleared[1], runs[0])):
        out.comparisons = [compare(case, f"{n} (2nd call, after clear_cache)", b, a)
                           for n, a, b in zip(names, runs[0], cleared[1])]
        out.notes.append(f"{module}: backward adds to the grads (+=) and clear_cache() resets them: right "
                         "only when clear_cache() runs after every step (the check and course:PATH call it)")
    elif doubled:
        what = " and ".join(doubled)
        out.issues.append(Issue(f"{what} doubled by a 2nd backward",
                                f"backward: accumulates the grads between calls ({what} doubled when "
                                "backward ran a second time on the same inputs): overwrite them (=) "
                                "instead of adding to them (+=)"))
    return out


def _twice(out: CheckOutcome, make: Callable[[], Any], forward_args: dict, backward_args: dict,
           grads: Callable | None, clear: bool = False) -> list[list[np.ndarray]]:
    mod = make()
    runs = []
    for _ in range(2):
        fa = {k: v.copy() for k, v in forward_args.items()}
        y = as_value("forward", call("forward", mod.forward, *fa.values()))
        _changed(out, "forward", fa, forward_args)
        kept = {k: v.copy() for k, v in fa.items()}
        ba = {k: v.copy() for k, v in backward_args.items()}
        dx = as_array("backward", call("backward", mod.backward, *ba.values()))
        _changed(out, "backward", ba, backward_args)
        _changed(out, "backward", fa, kept, cached=True)
        runs.append([y, dx, *(grads(mod) if grads else ())])
        if clear:
            call("clear_cache", mod.clear_cache)
    return runs


def _cleared_runs(make, forward_args, backward_args, grads) -> list[list[np.ndarray]] | None:
    """The two runs again, with clear_cache() after each (None when that raises)."""
    try:
        return _twice(CheckOutcome("", "", 0), make, forward_args, backward_args, grads, clear=True)
    except (UserCodeError, AttributeError):
        return None


def _changed(out: CheckOutcome, phase: str, passed: dict[str, np.ndarray], original: dict[str, np.ndarray],
             cached: bool = False) -> None:
    """Record an Issue for each argument that no longer equals its original."""
    for name, arr in passed.items():
        if np.array_equal(arr, original[name], equal_nan=True):
            continue
        short = f"{name} changed by {phase}" + (" (as kept by forward)" if cached else "")
        if any(i.short == short for i in out.issues):
            continue
        if cached:
            text = (f"backward: changes {name}, the input forward kept, in place; work on a new array "
                    "(e.g. x = x.copy()) instead")
        else:
            text = (f"{phase}: changes its argument {name} in place ({name} differs after the call); "
                    f"compute a new array instead of writing into {name}")
        out.issues.append(Issue(short, text))


# ---------------------------------------------------------------- helpers


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _leaf(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()
