"""The course modules checked one by one: cases, the user's run, torch's, finite differences, side effects.

Every module (and SoftMax followed by CrossEntropy, the course's loss path)
is a :class:`LayerSpec`: its cases (shapes down to batch 1, one feature, one
class, and logits of magnitude 1e3 for the softmax), how to run the user's
forward and backward on a case, the same computation in float64 torch, the
numerical gradients of the user's own forward, and a probe for side effects.
:func:`check_layer` turns a spec into three :class:`CheckOutcome` rows:
finite differences, autograd (torch) and side effects.

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
    FD_TOL,
    REPEAT_TOL,
    Case,
    CheckOutcome,
    Issue,
    UserCodeError,
    as_array,
    as_scalar,
    call,
    compare,
    numerical_vjp,
    rel_error,
)
from bench.checks.loader import CourseImpl

LARGE = 1e3  # the logit magnitude at which an unshifted exp overflows (e^1000 = inf)
LABEL_FORMATS = ("integer", "one-hot")
COMPOSITE = "SoftMax → CrossEntropy"


@dataclass
class LayerSpec:
    """How to check one module; every callable gets the implementation and one case."""

    name: str
    cases: Callable[[np.random.Generator, str], list[Case]]      # (rng, label format) -> cases
    run: Callable[[CourseImpl, Case], dict[str, np.ndarray]]     # the user's forward and backward
    reference: Callable[[Case], dict[str, np.ndarray]]           # the same in float64 torch
    numerical: Callable[[CourseImpl, Case], dict[str, np.ndarray]]  # finite differences of the user's forward
    probe: Callable[[CourseImpl, Case], CheckOutcome] | None = None  # side effects, on cases[probe_case]
    probe_case: int = -1


def check_layer(spec: LayerSpec, impl: CourseImpl, rng: np.random.Generator,
                labels: str) -> list[CheckOutcome]:
    """The finite-difference, autograd and (when the spec has a probe) side-effect rows of ``spec``."""
    cases = spec.cases(rng, labels)
    fd = CheckOutcome(spec.name, "finite differences", FD_TOL)
    ag = CheckOutcome(spec.name, "autograd (torch)", AUTOGRAD_TOL)
    for case in cases:
        ref = spec.reference(case)
        try:
            user = spec.run(impl, case)
        except UserCodeError as exc:
            fd.errors.append((case, exc))
            ag.errors.append((case, exc))
            continue
        ag.comparisons += [compare(case, q, user[q], ref[q]) for q in ref]
        try:
            num = spec.numerical(impl, case)
        except UserCodeError as exc:
            fd.errors.append((case, exc))
            continue
        fd.comparisons += [compare(case, q, user[q], num[q]) for q in num]
    outcomes = [fd, ag]
    if spec.probe is not None:
        outcomes.append(spec.probe(impl, cases[spec.probe_case]))
    return outcomes


def detect_labels(impl: CourseImpl, rng: np.random.Generator) -> str:
    """"integer" or "one-hot": the label format under which CrossEntropyModule.forward gives the loss.

    Integer labels are tried first; when neither format gives the right loss,
    the first format that runs at all is used (and the check then fails).
    """
    s, c = 4, 3
    x = _softmax(rng.normal(size=(s, c)))
    y = np.array([0, 2, 1, 2])
    ref = -np.log(x[np.arange(s), y]).mean()
    runs = []
    for fmt in LABEL_FORMATS:
        try:
            ce = call("constructor", impl.CrossEntropyModule)
            loss = as_scalar("forward", call("forward", ce.forward, x.copy(), labels_as(fmt, y, c)))
        except UserCodeError:
            continue
        if rel_error(loss, ref) <= FD_TOL:
            return fmt
        runs.append(fmt)
    return runs[0] if runs else LABEL_FORMATS[0]


# ---------------------------------------------------------------- LinearModule


def _linear_cases(rng: np.random.Generator, labels: str) -> list[Case]:
    cases = []
    for s, m, n in [(1, 1, 1), (1, 4, 3), (5, 1, 2), (3, 6, 1), (4, 3, 3), (4, 5, 7)]:
        cases.append(Case(f"S={s}, M={m}, N={n}", {
            "x": rng.normal(size=(s, m)),                          # (S, M)
            "weight": rng.normal(size=(n, m)) / np.sqrt(m),        # (N, M)
            "bias": rng.normal(size=n) * 0.5,                      # (N,)
            "dout": rng.normal(size=(s, n)),                       # (S, N)
        }))
    return cases


def new_linear(impl: CourseImpl, weight: np.ndarray, bias: np.ndarray) -> Any:
    """A user LinearModule(M, N) whose params are ``weight`` (N, M) and ``bias`` (N,)."""
    n, m = weight.shape
    lin = call("constructor", impl.LinearModule, m, n)
    set_param(lin, "weight", weight, [(n, m)], "(out, in) = ")
    set_param(lin, "bias", bias, [(n,), (1, n)], "(out,) = ")
    return lin


def set_param(module: Any, key: str, value: np.ndarray, shapes: list[tuple[int, ...]],
              names: str = "") -> None:
    """Write ``value`` into ``module.params[key]``: in place when it is a float64 array, so
    that any other name the user keeps for it sees the new values; else a float64 copy."""
    params = getattr(module, "params", None)
    if not isinstance(params, dict) or key not in params:
        raise UserCodeError("constructor", f"has no params['{key}'] (the course keeps the parameters "
                            "in a dict params with keys 'weight' and 'bias')")
    old = params[key]
    shape = tuple(np.shape(old))
    if shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise UserCodeError("constructor", f"params['{key}'] has shape {shape}, expected {names}{want}")
    if isinstance(old, np.ndarray) and old.dtype == np.float64 and old.flags.writeable:
        old[...] = value.reshape(shape)
    else:
        params[key] = value.reshape(shape).astype(np.float64)


def linear_grads(module: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Copies of ``grads['weight']`` and ``grads['bias']``; a bias gradient of shape (1, N) becomes (N,)."""
    grads = getattr(module, "grads", None)
    if not isinstance(grads, dict) or "weight" not in grads or "bias" not in grads:
        raise UserCodeError("backward", "left no grads['weight'] and grads['bias'] (a dict grads, "
                            "keys like params)")
    dw, db = as_array("backward", grads["weight"]), as_array("backward", grads["bias"])
    return dw, db.reshape(n) if db.shape == (1, n) else db


def _linear_run(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    lin = new_linear(impl, d["weight"], d["bias"])
    out = as_array("forward", call("forward", lin.forward, d["x"].copy()))
    dx = as_array("backward", call("backward", lin.backward, d["dout"].copy()))
    dw, db = linear_grads(lin, d["weight"].shape[0])
    return {"output": out, "dL/dx": dx, "dL/dW": dw, "dL/db": db}


def _linear_reference(c: Case) -> dict[str, np.ndarray]:
    x, w, b = (_leaf(c.data[k]) for k in ("x", "weight", "bias"))
    out = x @ w.T + b                                             # Y = X W^T + b, (S, N)
    out.backward(torch.from_numpy(c.data["dout"]))
    return {"output": _np(out), "dL/dx": _np(x.grad), "dL/dW": _np(w.grad), "dL/db": _np(b.grad)}


def _linear_numerical(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    lin = new_linear(impl, d["weight"], d["bias"])
    x = d["x"].copy()
    f = lambda: call("forward", lin.forward, x.copy())  # noqa: E731 - reads x and the params in place
    n = d["weight"].shape[0]
    return {"dL/dx": numerical_vjp(f, x, d["dout"]),
            "dL/dW": numerical_vjp(f, lin.params["weight"], d["dout"]),
            "dL/db": numerical_vjp(f, lin.params["bias"], d["dout"]).reshape(n)}


def _linear_probe(impl: CourseImpl, c: Case) -> CheckOutcome:
    d = c.data
    n = d["weight"].shape[0]
    return probe_side_effects("LinearModule", c, lambda: new_linear(impl, d["weight"], d["bias"]),
                              {"x": d["x"]}, {"dout": d["dout"]}, lambda lin: linear_grads(lin, n))


# ---------------------------------------------------------------- ELUModule


def _elu_cases(rng: np.random.Generator, labels: str) -> list[Case]:
    cases = []
    for s, n, alpha in [(1, 1, 1.0), (1, 5, 1.0), (6, 1, 1.0), (5, 7, 1.0), (4, 6, 0.5)]:
        x = rng.normal(size=(s, n)) * 2
        x = np.where(np.abs(x) < 1e-3, x + np.copysign(2e-3, x), x)  # no step across the kink at 0
        cases.append(Case(f"S={s}, N={n}, alpha={alpha:g}",
                          {"x": x, "alpha": alpha, "dout": rng.normal(size=(s, n))}))
    return cases


def _elu_run(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    elu = call("constructor", impl.ELUModule, c.data["alpha"])
    out = as_array("forward", call("forward", elu.forward, c.data["x"].copy()))
    dx = as_array("backward", call("backward", elu.backward, c.data["dout"].copy()))
    return {"output": out, "dL/dx": dx}


def _elu_reference(c: Case) -> dict[str, np.ndarray]:
    x = _leaf(c.data["x"])
    out = F.elu(x, alpha=c.data["alpha"])
    out.backward(torch.from_numpy(c.data["dout"]))
    return {"output": _np(out), "dL/dx": _np(x.grad)}


def _elu_numerical(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    elu = call("constructor", impl.ELUModule, c.data["alpha"])
    x = c.data["x"].copy()
    return {"dL/dx": numerical_vjp(lambda: call("forward", elu.forward, x.copy()), x, c.data["dout"])}


def _elu_probe(impl: CourseImpl, c: Case) -> CheckOutcome:
    return probe_side_effects("ELUModule", c, lambda: call("constructor", impl.ELUModule, c.data["alpha"]),
                              {"x": c.data["x"]}, {"dout": c.data["dout"]})


# ---------------------------------------------------------------- SoftMaxModule


def _logit_cases(rng: np.random.Generator, small: list[tuple[int, int]],
                 large: list[tuple[int, int]]) -> list[Case]:
    """Logits ~ N(0, 1.5²), then the large ones: each row shifted by ±1e3 (exp overflows or underflows)."""
    cases = [Case(f"S={s}, C={c}", {"x": rng.normal(size=(s, c)) * 1.5}) for s, c in small]
    for s, c in large:
        offsets = LARGE * np.where(np.arange(s) % 2 == 0, 1.0, -1.0)[:, None]  # (S, 1)
        cases.append(Case(f"S={s}, C={c}, logits ±{LARGE:g}",
                          {"x": offsets + rng.normal(size=(s, c))}, large=True))
    for case in cases:
        s, c = case.data["x"].shape
        case.data["dout"] = rng.normal(size=(s, c))
    return cases


def _softmax_cases(rng: np.random.Generator, labels: str) -> list[Case]:
    return _logit_cases(rng, [(1, 1), (1, 4), (5, 1), (4, 6)], [(4, 5), (2, 1)])


def _softmax_run(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    sm = call("constructor", impl.SoftMaxModule)
    out = as_array("forward", call("forward", sm.forward, c.data["x"].copy()))
    dx = as_array("backward", call("backward", sm.backward, c.data["dout"].copy()))
    return {"output": out, "dL/dx": dx}


def _softmax_reference(c: Case) -> dict[str, np.ndarray]:
    x = _leaf(c.data["x"])
    out = torch.softmax(x, dim=1)
    out.backward(torch.from_numpy(c.data["dout"]))
    return {"output": _np(out), "dL/dx": _np(x.grad)}


def _softmax_numerical(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    sm = call("constructor", impl.SoftMaxModule)
    x = c.data["x"].copy()
    return {"dL/dx": numerical_vjp(lambda: call("forward", sm.forward, x.copy()), x, c.data["dout"])}


def _softmax_probe(impl: CourseImpl, c: Case) -> CheckOutcome:
    return probe_side_effects("SoftMaxModule", c, lambda: call("constructor", impl.SoftMaxModule),
                              {"x": c.data["x"]}, {"dout": c.data["dout"]})


# ---------------------------------------------------------------- CrossEntropyModule


def _ce_cases(rng: np.random.Generator, labels: str) -> list[Case]:
    cases = []
    for s, c in [(1, 1), (1, 4), (5, 1), (6, 3)]:
        y = rng.integers(0, c, size=s)
        cases.append(Case(f"S={s}, C={c}", {"x": _softmax(rng.normal(size=(s, c)) * 1.5), "y": y,
                                           "y_user": labels_as(labels, y, c)}))
    return cases


def _ce_run(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    ce = call("constructor", impl.CrossEntropyModule)
    loss = as_scalar("forward", call("forward", ce.forward, d["x"].copy(), d["y_user"].copy()))
    dx = as_array("backward", call("backward", ce.backward, d["x"].copy(), d["y_user"].copy()))
    return {"loss": loss, "dL/dx": dx}


def _ce_reference(c: Case) -> dict[str, np.ndarray]:
    x = _leaf(c.data["x"])
    loss = -torch.log(x[torch.arange(x.shape[0]), torch.from_numpy(c.data["y"])]).mean()  # C1
    loss.backward()
    return {"loss": _np(loss), "dL/dx": _np(x.grad)}


def _ce_numerical(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    ce = call("constructor", impl.CrossEntropyModule)
    x = d["x"].copy()
    f = lambda: as_scalar("forward", call("forward", ce.forward, x.copy(), d["y_user"].copy()))  # noqa: E731
    return {"dL/dx": numerical_vjp(f, x, np.float64(1.0))}


def _ce_probe(impl: CourseImpl, c: Case) -> CheckOutcome:
    d = c.data
    args = {"x": d["x"], "y": d["y_user"]}
    return probe_side_effects("CrossEntropyModule", c, lambda: call("constructor", impl.CrossEntropyModule),
                              args, args)


# ---------------------------------------------------------------- SoftMax followed by CrossEntropy


def _composite_cases(rng: np.random.Generator, labels: str) -> list[Case]:
    cases = _logit_cases(rng, [(1, 1), (3, 5), (6, 3)], [(4, 5), (1, 3)])
    for case in cases:
        s, c = case.data["x"].shape
        case.data["y"] = rng.integers(0, c, size=s)
        case.data["y_user"] = labels_as(labels, case.data["y"], c)
    return cases


def _composite_run(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    sm = call("constructor", impl.SoftMaxModule)
    ce = call("constructor", impl.CrossEntropyModule)
    p = as_array("SoftMax forward", call("SoftMax forward", sm.forward, d["x"].copy()))
    phase = "CrossEntropy forward"
    loss = as_scalar(phase, call(phase, ce.forward, p.copy(), d["y_user"].copy()))
    phase = "CrossEntropy backward"
    dp = as_array(phase, call(phase, ce.backward, p.copy(), d["y_user"].copy()))
    dz = as_array("SoftMax backward", call("SoftMax backward", sm.backward, dp))
    return {"loss": loss, "dL/dz": dz}


def _composite_reference(c: Case) -> dict[str, np.ndarray]:
    z = _leaf(c.data["x"])
    loss = F.cross_entropy(z, torch.from_numpy(c.data["y"]))
    loss.backward()
    return {"loss": _np(loss), "dL/dz": _np(z.grad)}


def _composite_numerical(impl: CourseImpl, c: Case) -> dict[str, np.ndarray]:
    d = c.data
    sm = call("constructor", impl.SoftMaxModule)
    ce = call("constructor", impl.CrossEntropyModule)
    z = d["x"].copy()

    def loss():
        p = as_array("SoftMax forward", call("SoftMax forward", sm.forward, z.copy()))
        phase = "CrossEntropy forward"
        return as_scalar(phase, call(phase, ce.forward, p, d["y_user"].copy()))

    return {"dL/dz": numerical_vjp(loss, z, np.float64(1.0))}


SPECS = [
    LayerSpec("LinearModule", _linear_cases, _linear_run, _linear_reference, _linear_numerical,
              _linear_probe),
    LayerSpec("ELUModule", _elu_cases, _elu_run, _elu_reference, _elu_numerical, _elu_probe, probe_case=3),
    LayerSpec("SoftMaxModule", _softmax_cases, _softmax_run, _softmax_reference, _softmax_numerical,
              _softmax_probe, probe_case=3),
    LayerSpec("CrossEntropyModule", _ce_cases, _ce_run, _ce_reference, _ce_numerical, _ce_probe),
    LayerSpec(COMPOSITE, _composite_cases, _composite_run, _composite_reference, _composite_numerical),
]


# ---------------------------------------------------------------- side effects


def probe_side_effects(module: str, case: Case, make: Callable[[], Any], forward_args: dict[str, np.ndarray],
                       backward_args: dict[str, np.ndarray],
                       grads: Callable[[Any], tuple[np.ndarray, ...]] | None = None) -> CheckOutcome:
    """Run forward then backward twice on one module with the same inputs.

    A failure: an argument changed in place (forward's x, backward's dout),
    or the second run's output, dx or grads differ from the first (grads that
    doubled were accumulated instead of overwritten).
    """
    out = CheckOutcome(module, "side effects", REPEAT_TOL)
    try:
        mod = make()
        runs = []
        for _ in range(2):
            fa = {k: v.copy() for k, v in forward_args.items()}
            y = as_array("forward", call("forward", mod.forward, *fa.values()))
            _changed(out, "forward", fa, forward_args)
            kept = {k: v.copy() for k, v in fa.items()}
            ba = {k: v.copy() for k, v in backward_args.items()}
            dx = as_array("backward", call("backward", mod.backward, *ba.values()))
            _changed(out, "backward", ba, backward_args)
            _changed(out, "backward", fa, kept, cached=True)
            runs.append([y, dx, *(grads(mod) if grads else ())])
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
    if doubled:
        what = " and ".join(doubled)
        out.issues.append(Issue(f"{what} doubled by a 2nd backward",
                                f"backward: accumulates the grads between calls ({what} doubled when "
                                "backward ran a second time on the same inputs): overwrite them (=) "
                                "instead of adding to them (+=)"))
    return out


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


def labels_as(fmt: str, y: np.ndarray, c: int) -> np.ndarray:
    """Integer labels (S,) or one-hot rows (S, C) as float64."""
    return y.copy() if fmt == "integer" else np.eye(c)[y]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _leaf(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()
