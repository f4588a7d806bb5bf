"""Name the usual mistake behind a wrong result: compare it with the known wrong variants.

A variant is the value a known mistake would give, computed from the case's
inputs and the correct (torch) values: the transposed weight gradient, the
bias gradient averaged or summed over the wrong axis, the cross-entropy
gradient without its 1/S, ELU's derivative taken on the wrong branch, ... A
wrong value *matches* a variant when it is at least 1000 times closer to the
variant than the variant is to the correct value (and within 1e-6): then the
mistake, not rounding, explains it. Each diagnosis is one line naming the
module and the mistake in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.checks.gradcheck import CheckOutcome, Comparison, rel_error
from bench.checks.layers import COMPOSITE, LARGE

MATCH_TOL = 1e-6     # a match is this close to the variant ...
MATCH_RATIO = 1e-3   # ... and 1000 times closer to it than the variant is to the correct value
EPSILONS = (1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-12, 1e-15)

Data = dict
Refs = dict


@dataclass(frozen=True)
class Variant:
    """A known mistake: which quantity it affects, what it is in words, and the value it gives."""

    quantity: str                                   # "dL/db", "output", ...
    text: str                                       # completes "<quantity> matches ..."
    value: Callable[[Data, Refs], np.ndarray | None]


def _s(d: Data) -> int:
    return d["x"].shape[0]


def _elu_dx(h_prime: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
            ) -> Callable[[Data, Refs], np.ndarray]:
    """dout * h'(x) for a wrong derivative h'(x, y, alpha), y = ELU(x)."""
    def value(d: Data, r: Refs) -> np.ndarray:
        x, a = d["x"], d["alpha"]
        y = np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))
        with np.errstate(all="ignore"):
            return d["dout"] * h_prime(x, y, a)
    return value


def _ce_eps_loss(eps: float) -> Callable[[Data, Refs], np.ndarray]:
    def value(d: Data, r: Refs) -> np.ndarray:
        x, y = d["x"], d["y"]
        return np.asarray(-np.log(x[np.arange(len(y)), y] + eps).mean())
    return value


def _ce_eps_grad(eps: float) -> Callable[[Data, Refs], np.ndarray]:
    def value(d: Data, r: Refs) -> np.ndarray:
        x, y = d["x"], d["y"]
        g = np.zeros_like(x)
        g[np.arange(len(y)), y] = -1.0 / (len(y) * (x[np.arange(len(y)), y] + eps))
        return g
    return value


def _softmax(z: np.ndarray, axis: int | None) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


_EPS_TEXT = ("log(x + eps) with eps = {:g}: a constant added inside the log (harmless in training, "
             "not the exact {})")

_NO_MEAN = "the gradient of the summed loss: the 1/S of the mean is missing (S times too large)"

VARIANTS: dict[str, list[Variant]] = {
    "LinearModule": [
        Variant("dL/dW", "the transposed gradient x^T dout, of shape (in, out), instead of dout^T x, "
                "of shape (out, in) like params['weight']", lambda d, r: r["dL/dW"].T),
        Variant("dL/dW", "the gradient averaged over the batch (divided by S) instead of summed",
                lambda d, r: r["dL/dW"] / _s(d)),
        Variant("dL/db", "the gradient averaged over the batch (divided by S) instead of summed",
                lambda d, r: r["dL/db"] / _s(d)),
        Variant("dL/db", "dout summed over the wrong axis (axis=1, one value per sample) instead of over "
                "the batch (axis=0)", lambda d, r: d["dout"].sum(axis=1)),
        Variant("dL/dx", "dout W^T instead of dout W", lambda d, r: d["dout"] @ d["weight"].T
                if d["weight"].shape[0] == d["weight"].shape[1] else None),
        Variant("output", "x W + b, the weight not transposed", lambda d, r: d["x"] @ d["weight"] + d["bias"]
                if d["weight"].shape[0] == d["weight"].shape[1] else None),
        Variant("output", "x W^T without the bias", lambda d, r: d["x"] @ d["weight"].T),
    ],
    "ELUModule": [
        Variant("dL/dx", "the derivative with its two branches swapped: y + alpha where x > 0 and 1 where "
                "x <= 0",
                _elu_dx(lambda x, y, a: np.where(x > 0, y + a, 1.0))),
        Variant("dL/dx", "the derivative 1 where x <= 0 too (the slope of the positive branch)",
                _elu_dx(lambda x, y, a: np.ones_like(x))),
        Variant("dL/dx", "the derivative exp(y) where x <= 0, instead of y + alpha (= alpha e^x)",
                _elu_dx(lambda x, y, a: np.where(x > 0, 1.0, np.exp(y)))),
        Variant("dL/dx", "the derivative e^x where x <= 0, without the factor alpha (alpha e^x)",
                _elu_dx(lambda x, y, a: np.where(x > 0, 1.0, np.exp(x)))),
        Variant("dL/dx", "the derivative y + 1 where x <= 0, instead of y + alpha",
                _elu_dx(lambda x, y, a: np.where(x > 0, 1.0, y + 1))),
        Variant("dL/dx", "the derivative y where x <= 0, instead of y + alpha",
                _elu_dx(lambda x, y, a: np.where(x > 0, 1.0, y))),
        Variant("dL/dx", "the derivative alpha where x <= 0, instead of y + alpha (= alpha e^x)",
                _elu_dx(lambda x, y, a: np.where(x > 0, 1.0, a))),
        Variant("dL/dx", "the derivative 0 where x <= 0, instead of y + alpha (= alpha e^x)",
                _elu_dx(lambda x, y, a: np.where(x > 0, 1.0, 0.0))),
        Variant("output", "ELU with alpha ignored (computed with alpha = 1)",
                lambda d, r: np.where(d["x"] > 0, d["x"], np.expm1(np.minimum(d["x"], 0)))),
        Variant("output", "alpha e^x where x <= 0, without the - 1",
                lambda d, r: np.where(d["x"] > 0, d["x"], d["alpha"] * np.exp(np.minimum(d["x"], 0)))),
    ],
    "SoftMaxModule": [
        Variant("output", "the softmax over the batch axis (axis=0, each column) instead of each row",
                lambda d, r: _softmax(d["x"], 0)),
        Variant("output", "the softmax over the whole array instead of each row",
                lambda d, r: _softmax(d["x"], None)),
        Variant("dL/dx", "only the diagonal of the Jacobian, dout * p * (1 - p), without the -p_i p_j terms",
                lambda d, r: d["dout"] * _softmax(d["x"], 1) * (1 - _softmax(d["x"], 1))),
        Variant("dL/dx", "p * (dout - sum(dout * p)) with the sum over the wrong axis (axis=0) instead of "
                "each row (axis=1)", lambda d, r: _softmax(d["x"], 1) * (
                    d["dout"] - (d["dout"] * _softmax(d["x"], 1)).sum(axis=0, keepdims=True))),
        Variant("dL/dx", "dout - sum(dout * p), without the final multiplication by p",
                lambda d, r: d["dout"] - (d["dout"] * _softmax(d["x"], 1)).sum(axis=1, keepdims=True)),
    ],
    "CrossEntropyModule": [
        Variant("dL/dx", _NO_MEAN, lambda d, r: r["dL/dx"] * _s(d)),
        Variant("dL/dx", "the gradient with the opposite sign", lambda d, r: -r["dL/dx"]),
        Variant("dL/dx", "the gradient of the mean over all S x C entries (divided by C too)",
                lambda d, r: r["dL/dx"] / d["x"].shape[1]),
        Variant("loss", "the summed loss instead of the mean over the batch (S times too large)",
                lambda d, r: r["loss"] * _s(d)),
        Variant("loss", "the loss with the opposite sign", lambda d, r: -r["loss"]),
        Variant("loss", "the mean over all S x C entries of -onehot * log(x) instead of the mean over the "
                "batch (divided by C too)", lambda d, r: r["loss"] / d["x"].shape[1]),
        *[Variant("loss", _EPS_TEXT.format(e, "loss"), _ce_eps_loss(e)) for e in EPSILONS],
        *[Variant("dL/dx", _EPS_TEXT.format(e, "gradient"), _ce_eps_grad(e)) for e in EPSILONS],
    ],
    COMPOSITE: [
        Variant("dL/dz", _NO_MEAN, lambda d, r: r["dL/dz"] * _s(d)),
        Variant("loss", "the summed loss instead of the mean over the batch (S times too large)",
                lambda d, r: r["loss"] * _s(d)),
    ],
    "MLP": [
        Variant("output", "an ELU applied after the last linear layer too (the course's MLP has none there)",
                lambda d, r: d["candidates"]["elu_after_last"]),
        Variant("output", "the network without the ELUs between the linear layers",
                lambda d, r: d["candidates"]["no_activation"]),
    ],
}

FORWARD_QUANTITIES = ("output", "loss")


def diagnose(outcomes: list[CheckOutcome]) -> list[str]:
    """One line per mistake found in one module's outcomes (finite differences, autograd, side effects)."""
    if not outcomes or all(o.passed for o in outcomes):
        return []
    module = outcomes[0].module
    lines = _exceptions(outcomes)
    reference = [o for o in outcomes if o.check.startswith("autograd")]
    comps = [c for o in reference for c in o.comparisons]
    tol = min((o.tol for o in reference), default=0.0)
    wrong = [c for c in comps if c.error > tol]
    refs = _refs_by_case(comps)
    forward_wrong = False
    overflow = _overflow(module, comps, wrong)
    if overflow:
        lines.append(overflow)
        forward_wrong = True
    for quantity in _quantities(wrong):
        group = [c for c in wrong if c.quantity == quantity]
        phase = "forward" if quantity in FORWARD_QUANTITIES else "backward"
        if overflow and all(c.case.large for c in group):
            continue
        line = _explain(module, phase, quantity, group, refs)
        if line is None and phase == "backward" and forward_wrong:
            continue  # a backward wrong where its forward is wrong follows from the forward
        lines.append(line or _unexplained(module, phase, quantity, group))
        forward_wrong = forward_wrong or phase == "forward"
    for o in outcomes:
        lines += [f"{module} {issue.text}" for issue in o.issues]
    if not lines:
        for o in outcomes:
            if not o.passed and o.worst() is not None:
                lines.append(_unexplained(module, o.check, o.worst().quantity, [o.worst()]))
                break
    return lines


def diagnose_network(rows: list[CheckOutcome]) -> list[str]:
    """Lines for an MLP that fails while every module passes: the modules are wired wrongly.

    (When a module fails, the network's failure follows from it and gets no line of its own.)
    """
    lines = _exceptions(rows)
    comps = [c for r in rows for c in r.comparisons]
    wrong = [c for r in rows for c in r.comparisons if c.error > r.tol]
    if lines or not wrong:
        return lines
    output = [c for c in wrong if c.quantity == "output"]
    if output:
        return [_explain("MLP", "forward", "output", output, _refs_by_case(comps)) or
                f"MLP forward: the output differs from torch ({_detail(output[0])}) while every module "
                "passes: check that MLP.forward chains Linear -> ELU -> ... -> Linear in order"]
    worst = max(wrong, key=lambda c: c.error)
    return [f"MLP backward: {worst.quantity} differs from torch ({_detail(worst)}) while every module passes "
            "and the output is right: check that MLP.backward calls the modules in reverse order, passing "
            "each one's returned gradient to the next"]


# ---------------------------------------------------------------- matching


def _explain(module: str, phase: str, quantity: str, group: list[Comparison], refs: dict) -> str | None:
    """The line for the variant that matches every wrong case of ``quantity`` (or most of them)."""
    variants = [v for v in VARIANTS.get(module, []) if v.quantity == quantity]
    hits = {v.text: 0 for v in variants}
    for comp in group:
        for v in variants:
            with np.errstate(all="ignore"):
                cand = v.value(comp.case.data, refs[id(comp.case)])
            if cand is not None and _matches(comp.user, np.asarray(cand, dtype=np.float64), comp.ref):
                hits[v.text] += 1
    best = max(hits, key=hits.get, default=None)
    if best is None or hits[best] == 0:
        return None
    what = _what(module, quantity)
    if hits[best] == len(group):
        return f"{module} {phase}: {what} matches {best}"
    return (f"{module} {phase}: {what} matches {best} in {hits[best]} of the {len(group)} cases where it "
            "is wrong")


def _matches(user: np.ndarray | None, cand: np.ndarray, ref: np.ndarray) -> bool:
    if user is None:
        return False
    if user.shape != cand.shape:
        if user.size != cand.size or np.squeeze(user).shape != np.squeeze(cand).shape:
            return False
        user, cand = np.squeeze(user), np.squeeze(cand)
    gap = rel_error(cand, ref) if cand.shape == np.shape(ref) else float("inf")
    close = rel_error(user, cand)
    return close <= MATCH_TOL and close <= MATCH_RATIO * gap


def _overflow(module: str, comps: list[Comparison], wrong: list[Comparison]) -> str | None:
    """The unshifted softmax: non-finite forward values at logits of 1e3, small logits fine."""
    if module not in ("SoftMaxModule", COMPOSITE):
        return None
    fwd = [c for c in wrong if c.quantity in FORWARD_QUANTITIES]
    small_ok = all(c.error <= 1e-6 for c in comps if not c.case.large and c.quantity in FORWARD_QUANTITIES)
    if fwd and small_ok and all(c.case.large and c.user is not None and not np.all(np.isfinite(c.user))
                                for c in fwd):
        what = "the output" if module == "SoftMaxModule" else "the loss"
        return (f"{module} forward: {what} is nan/inf at logits of magnitude {LARGE:g} while small logits "
                "are fine: exp overflows; subtract each row's maximum before exp (the softmax is unchanged)")
    return None


def _exceptions(outcomes: list[CheckOutcome]) -> list[str]:
    lines: list[str] = []
    for o in outcomes:
        for case, exc in o.errors:
            line = f"{o.module} {exc.phase}: {exc.message} ({case.label})"
            if not any(line.split(" (")[0] == seen.split(" (")[0] for seen in lines):
                lines.append(line)
    return lines


def _unexplained(module: str, phase: str, quantity: str, group: list[Comparison]) -> str:
    worst = max(group, key=lambda c: c.error)
    return (f"{module} {phase}: {_what(module, quantity)} is wrong ({_detail(worst)} at {worst.case.label}) "
            "and matches none of the known mistakes")


def _detail(c: Comparison) -> str:
    return c.note or f"relative error {c.error:.2g}"


def _what(module: str, quantity: str) -> str:
    if module == "LinearModule" and quantity in ("dL/dW", "dL/db"):
        return f"{quantity} (grads['{'weight' if quantity == 'dL/dW' else 'bias'}'])"
    return quantity


def _quantities(wrong: list[Comparison]) -> list[str]:
    """The wrong quantities, forward ones first, each once, in order of appearance."""
    names = list(dict.fromkeys(c.quantity for c in wrong))
    return sorted(names, key=lambda q: q not in FORWARD_QUANTITIES)


def _refs_by_case(comps: list[Comparison]) -> dict[int, dict[str, np.ndarray]]:
    refs: dict[int, dict[str, np.ndarray]] = {}
    for c in comps:
        refs.setdefault(id(c.case), {})[c.quantity] = c.ref
    return refs
