"""Name the mistake behind a wrong result: compare it with the values the known mistakes give.

A variant is the value a known mistake would give, computed from the case's
inputs, the correct (torch) values and, for a variant with a free constant
(a weight-decay factor), the constant fitted to the user's values: the
transposed weight gradient, the cross-entropy gradient without its
1/S or with its sign flipped, the fused softmax-cross-entropy gradient, a
softmax shifted by the wrong maximum, ... A wrong value *matches* a variant
when it is within 1e-6 of it and at least 1000 times closer to it than the
variant is to the correct value: then the mistake, not rounding, explains it.
Non-finite entries match only where the variant has the same ones (nan where
it has nan), so an overflow and an underflow are told apart.

A :class:`Stabiliser` (an eps inside a log, a clip of the probabilities, an
eps in the softmax's denominator) is no mistake: a deviation it explains, with
one eps fitted for all the cases, is a note while it stays under
``STABILISER_BOUND`` (:func:`mark_stabilisers`), and a failure above it.
Each diagnosis is one line naming the module and the mistake in words; it is
shown at the representative case when the mistake shows there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from bench.checks.gradcheck import STABILISER_BOUND, Case, CheckOutcome, Comparison, rel_error
from bench.checks.layers import COMPOSITE

MATCH_TOL = 1e-6     # a match is this close to the variant ...
MATCH_RATIO = 1e-3   # ... and 1000 times closer to it than the variant is to the correct value

Data = dict  # the case's inputs
Refs = dict  # the correct values of the case, by quantity
User = dict  # the user's values of the case, by quantity


@dataclass(frozen=True)
class Variant:
    """A known mistake: the quantity it affects, what it is in words, its value.

    ``value`` returns the array, or (array, constant) for a fitted variant, whose ``text`` then
    holds ``{}`` for the constant; or None where the variant does not apply to the case."""

    quantity: str
    text: str
    value: Callable[[Data, Refs, User], object]


@dataclass(frozen=True)
class Stabiliser:
    """A numerical stabiliser: the quantity it moves, its name (``{}`` for its eps), and the value
    the quantity takes with a given eps."""

    quantity: str
    text: str
    value: Callable[[Data, float], np.ndarray]


def _s(d: Data) -> int:
    return d["x"].shape[0]


def _onehot(d: Data) -> np.ndarray:
    return np.eye(d["x"].shape[1])[d["y"]]


def _softmax(z: np.ndarray, axis: int | None = 1, eps: float = 0.0) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / (e.sum(axis=axis, keepdims=True) + eps)


def _softmax_vjp(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return p * (g - (g * p).sum(axis=1, keepdims=True))


def _elu_dx(h_prime: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> Callable:
    """dout * h'(x) for a wrong derivative h'(x, y, alpha), y = ELU(x)."""
    def value(d: Data, r: Refs, u: User) -> np.ndarray:
        x, a = d["x"], d["alpha"]
        y = np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))
        return d["dout"] * h_prime(x, y, a)
    return value


def _weight_decay(d: Data, r: Refs, u: User):
    """r + lambda W with lambda fitted: an L2 term added to the module's gradient."""
    w, dw = d["user_weight"], u.get("dL/dW")
    if dw is None or dw.shape != w.shape or not np.any(w):
        return None
    lam = float(np.sum((dw - r["dL/dW"]) * w) / np.sum(w * w))
    return r["dL/dW"] + lam * w, lam


def _ce_dx(base: str, scale: str, sign: float) -> Callable:
    def value(d: Data, r: Refs, u: User) -> np.ndarray:
        t, s, c = _onehot(d), _s(d), d["x"].shape[1]
        g = -t / d["x"] if base == "exact" else d["x"] - t
        return sign * g / {"mean": s, "sum": 1, "all": s * c}[scale]
    return value


def _ce_loss(scale: str, sign: float) -> Callable:
    def value(d: Data, r: Refs, u: User) -> np.ndarray:
        s, c = _s(d), d["x"].shape[1]
        return np.asarray(sign * -np.log(d["x"][np.arange(s), d["y"]]).sum() / {"sum": 1, "all": s * c}[scale])
    return value


_NO_MEAN = "the gradient of the summed loss: the 1/S of the mean is missing (S times too large)"
_FUSED = ("the fused softmax-cross-entropy gradient (x - onehot)/S{}{}: the gradient with respect to the "
          "logits, not dL/dx = -onehot/(S x) with respect to the probabilities x, so SoftMaxModule.backward "
          "applies the softmax's Jacobian a second time")
_SCALES = {"mean": "", "sum": " without its 1/S (S times too large)", "all": " divided by C too"}
_SHIFT = "subtract each row's maximum before exp (x - x.max(axis=1, keepdims=True))"


def _ce_dx_variants() -> list[Variant]:
    """Every sign and scale of the right and of the fused gradient, except the right one."""
    out = []
    for base in ("exact", "fused"):
        for scale, scale_text in _SCALES.items():
            for sign, sign_text in ((1.0, ""), (-1.0, ", with the opposite sign")):
                if (base, scale, sign) == ("exact", "mean", 1.0):
                    continue
                text = (_FUSED.format(scale_text, sign_text) if base == "fused"
                        else _NO_MEAN if (scale, sign) == ("sum", 1.0)
                        else f"the right gradient{scale_text}{sign_text}")
                out.append(Variant("dL/dx", text, _ce_dx(base, scale, sign)))
    return out


def _ce_loss_variants() -> list[Variant]:
    out = []
    for scale, scale_text in (("sum", "the summed loss instead of the mean over the batch (S times too large)"),
                              ("all", "the mean over all S x C entries of -onehot * log(x) instead of the "
                                      "mean over the batch (divided by C too)")):
        out.append(Variant("loss", scale_text, _ce_loss(scale, 1.0)))
        out.append(Variant("loss", scale_text + ", with the opposite sign", _ce_loss(scale, -1.0)))
    out.append(Variant("loss", "the loss with the opposite sign",
                       lambda d, r, u: -r["loss"]))
    return out


VARIANTS: dict[str, list[Variant]] = {
    "LinearModule": [
        Variant("dL/dW", "the transposed gradient: grads['weight'] must have the shape and layout of "
                "params['weight']", lambda d, r, u: r["dL/dW"].T),
        Variant("dL/dW", "the gradient averaged over the batch (divided by S) instead of summed",
                lambda d, r, u: r["dL/dW"] / _s(d)),
        Variant("dL/dW", "the gradient plus {:.3g} times the weight: a weight-decay (L2) term added inside "
                "the module; its gradient is the loss's alone (weight decay belongs to the optimizer)",
                _weight_decay),
        Variant("dL/db", "the gradient averaged over the batch (divided by S) instead of summed",
                lambda d, r, u: r["dL/db"] / _s(d)),
        Variant("dL/db", "dout summed over the wrong axis (axis=1, one value per sample) instead of over "
                "the batch (axis=0)", lambda d, r, u: d["dout"].sum(axis=1)),
        Variant("dL/dx", "the weight in the wrong orientation: dout W^T instead of dout W for W (out, in)",
                lambda d, r, u: d["dout"] @ d["weight"].T if d["weight"].shape[0] == d["weight"].shape[1]
                else None),
        Variant("output", "the weight in the wrong orientation: x W + b instead of x W^T + b for W (out, in)",
                lambda d, r, u: d["x"] @ d["weight"] + d["bias"]
                if d["weight"].shape[0] == d["weight"].shape[1] else None),
        Variant("output", "x W^T without the bias", lambda d, r, u: d["x"] @ d["weight"].T),
    ],
    "ELUModule": [
        Variant("dL/dx", "the derivative with its two branches swapped: y + alpha where x > 0 and 1 where "
                "x <= 0", _elu_dx(lambda x, y, a: np.where(x > 0, y + a, 1.0))),
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
                lambda d, r, u: np.where(d["x"] > 0, d["x"], np.expm1(np.minimum(d["x"], 0)))),
        Variant("output", "alpha e^x where x <= 0, without the - 1",
                lambda d, r, u: np.where(d["x"] > 0, d["x"], d["alpha"] * np.exp(np.minimum(d["x"], 0)))),
    ],
    "ReLUModule": [
        Variant("dL/dx", "dout passed through unchanged (the derivative 1 where x <= 0 too)",
                lambda d, r, u: d["dout"]),
        Variant("dL/dx", "dout kept where dout > 0 instead of where x > 0",
                lambda d, r, u: np.where(d["dout"] > 0, d["dout"], 0.0)),
    ],
    "SoftMaxModule": [
        Variant("output", "the softmax without the max shift: exp overflows to inf at logits of +1000 "
                f"(inf/inf = nan) and underflows to 0 at -1000 (0/0 = nan); {_SHIFT}",
                lambda d, r, u: np.exp(d["x"]) / np.exp(d["x"]).sum(axis=1, keepdims=True)),
        Variant("output", "the softmax shifted by the maximum of the whole array (x.max()) instead of each "
                "row's: in a row far below that maximum every exp underflows to 0, and 0/0 = nan; " + _SHIFT,
                lambda d, r, u: (lambda e: e / e.sum(axis=1, keepdims=True))(np.exp(d["x"] - d["x"].max()))),
        Variant("output", "the softmax over the batch axis (axis=0, each column) instead of each row",
                lambda d, r, u: _softmax(d["x"], 0)),
        Variant("output", "the softmax over the whole array instead of each row",
                lambda d, r, u: _softmax(d["x"], None)),
        Variant("dL/dx", "only the diagonal of the Jacobian, dout * p * (1 - p), without the -p_i p_j terms",
                lambda d, r, u: d["dout"] * _softmax(d["x"]) * (1 - _softmax(d["x"]))),
        Variant("dL/dx", "p * (dout - sum(dout * p)) with the sum over the wrong axis (axis=0) instead of "
                "each row (axis=1)", lambda d, r, u: _softmax(d["x"]) * (
                    d["dout"] - (d["dout"] * _softmax(d["x"])).sum(axis=0, keepdims=True))),
        Variant("dL/dx", "dout - sum(dout * p), without the final multiplication by p",
                lambda d, r, u: d["dout"] - (d["dout"] * _softmax(d["x"])).sum(axis=1, keepdims=True)),
    ],
    "CrossEntropyModule": [
        *_ce_dx_variants(),
        *_ce_loss_variants(),
    ],
    COMPOSITE: [
        Variant("dL/dz", _NO_MEAN, lambda d, r, u: r["dL/dz"] * _s(d)),
        Variant("loss", "the summed loss instead of the mean over the batch (S times too large)",
                lambda d, r, u: r["loss"] * _s(d)),
    ],
    "MLP": [
        Variant("output", "the activation ({}) applied after the last linear layer too (the course's MLP has "
                "none there)",
                lambda d, r, u: (d["candidates"]["act_after_last"],
                                 {"elu": "ELU", "relu": "ReLU"}[d["activation"]])),
        Variant("output", "the network without the activations between the linear layers",
                lambda d, r, u: d["candidates"]["no_activation"]),
    ],
}

_LOG_EPS = "log(x + eps) with eps = {:.1e}"
_CLIP = "x clipped from below (np.clip(x, eps, 1)) with eps = {:.1e}"
_DENOMINATOR = "exp / (sum + eps) with eps = {:.1e}"


def _label_p(d: Data) -> np.ndarray:
    return d["x"][np.arange(_s(d)), d["y"]]


STABILISERS: dict[str, list[Stabiliser]] = {
    "SoftMaxModule": [
        Stabiliser("output", _DENOMINATOR, lambda d, eps: _softmax(d["x"], eps=eps)),
        Stabiliser("dL/dx", _DENOMINATOR, lambda d, eps: _softmax_vjp(_softmax(d["x"], eps=eps), d["dout"])),
    ],
    "CrossEntropyModule": [
        Stabiliser("loss", _LOG_EPS, lambda d, eps: np.asarray(-np.log(_label_p(d) + eps).mean())),
        Stabiliser("dL/dx", _LOG_EPS, lambda d, eps: -_onehot(d) / (_s(d) * (d["x"] + eps))),
        Stabiliser("loss", _CLIP, lambda d, eps: np.asarray(-np.log(np.maximum(_label_p(d), eps)).mean())),
        Stabiliser("dL/dx", _CLIP, lambda d, eps: -_onehot(d) / (_s(d) * np.maximum(d["x"], eps))),
    ],
}
# The loss path on logits x: the cross-entropy's stabilisers on their softmax, measured on the path
# itself when the module alone could not show them (say its backward failed on a new module).
STABILISERS[COMPOSITE] = [
    Stabiliser("dL/dz" if st.quantity == "dL/dx" else st.quantity, st.text,
               lambda d, eps, st=st: st.value({**d, "x": _softmax(d["x"])}, eps) if st.quantity == "loss"
               else _softmax_vjp(_softmax(d["x"]), st.value({**d, "x": _softmax(d["x"])}, eps)))
    for st in STABILISERS["CrossEntropyModule"]]

FORWARD_QUANTITIES = ("output", "loss")


# ---------------------------------------------------------------- stabilisers


def mark_stabilisers(outcomes: list[CheckOutcome]) -> list[str]:
    """Mark every failing comparison a stabiliser explains; a note for each stabiliser within the bound.

    A stabiliser explains the autograd comparisons it matches with one eps for them all: the eps
    fitted to each failing array (the median of those fits), or, when no array shows it, to each
    failing loss, one number that any one-constant family fits, so two losses at least must agree.
    A finite-difference comparison is explained when its case's autograd comparisons are all right
    or explained, one at least explained (a stabiliser in the forward alone, or in the backward)."""
    if not outcomes:
        return []
    module = outcomes[0].module
    ag = next((o for o in outcomes if o.check.startswith("autograd")), None)
    fd = next((o for o in outcomes if o.check == "finite differences"), None)
    if ag is None:
        return []
    failing = [c for c in ag.comparisons if c.error > ag.tol]
    for template in dict.fromkeys(st.text for st in STABILISERS.get(module, [])):
        family = {st.quantity: st.value for st in STABILISERS[module] if st.text == template}
        mine = [c for c in failing if c.quantity in family and not c.stabiliser]
        fits = [e for c in mine if np.size(c.ref) > 1 for e in [_fit_eps(c, family[c.quantity])] if e]
        if not fits:
            fits = [e for c in mine if np.size(c.ref) == 1 for e in [_fit_eps(c, family[c.quantity])] if e]
            fits = fits if len(fits) >= 2 else []
        if not fits:
            continue
        eps = float(np.median(fits))
        for c in mine:
            if _matches(c.user, np.asarray(family[c.quantity](c.case.data, eps), dtype=np.float64), c.ref):
                c.stabiliser = template.format(eps)
    for c in (c for c in (fd.comparisons if fd else []) if c.error > fd.tol):
        same = [a for a in ag.comparisons if a.case is c.case]
        if any(a.stabiliser for a in same) and all(a.error <= ag.tol or a.stabiliser for a in same):
            c.stabiliser = next(a.stabiliser for a in same if a.stabiliser)
    notes = []
    comps = [c for o in outcomes for c in o.comparisons if c.stabiliser]
    for text in dict.fromkeys(c.stabiliser for c in comps):
        size = max(c.error for c in comps if c.stabiliser == text)
        if size <= STABILISER_BOUND:
            quantities = ", ".join(dict.fromkeys(c.quantity for c in comps if c.stabiliser == text))
            notes.append(f"{module}: {text}, a numerical stabiliser: it moves {quantities} from the exact "
                         f"value by up to {size:.2g} relative, under the bound {STABILISER_BOUND:g}: a note, "
                         "not a failure")
    return notes


def _fit_eps(c: Comparison, value: Callable[[Data, float], np.ndarray]) -> float | None:
    """The eps (1e-20 .. 0.1, on a log scale) with which the stabilised value comes closest to the
    user's, when it matches there; else None."""
    if c.user is None or not np.all(np.isfinite(c.user)):
        return None
    with np.errstate(all="ignore"):
        best = minimize_scalar(lambda t: rel_error(value(c.case.data, 10.0 ** t), c.user), bounds=(-20, -1),
                               method="bounded", options={"xatol": 1e-6})
        eps = 10.0 ** best.x
        return eps if _matches(c.user, np.asarray(value(c.case.data, eps), dtype=np.float64), c.ref) else None


def carry_stabilisers(outcomes: list[CheckOutcome], texts: list[str]) -> list[str]:
    """A composition (the loss path, the MLP) inherits the stabilisers its modules were found to have:
    mark its comparisons beyond the tolerance and within the bound, and say so in a note."""
    marked = [c for o in outcomes for c in o.comparisons if o.tol < c.error <= STABILISER_BOUND]
    if not texts or not marked:
        return []
    text = "; ".join(dict.fromkeys(texts))
    for c in marked:
        c.stabiliser = text
    size = max(c.error for c in marked)
    return [f"{outcomes[0].module}: the stabilisers of its modules ({text}) move "
            f"{', '.join(dict.fromkeys(c.quantity for c in marked))} by up to {size:.2g} relative, under the "
            f"bound {STABILISER_BOUND:g}: a note, not a failure"]


# ---------------------------------------------------------------- diagnoses


def diagnose(outcomes: list[CheckOutcome]) -> list[str]:
    """One line per mistake found in one module's outcomes (finite differences, autograd, side effects)."""
    if not outcomes or all(o.passed for o in outcomes):
        return []
    module = outcomes[0].module
    top = _one_hot_width(module, outcomes)
    if top:
        return [top] + [f"{module} {i.text}" for o in outcomes for i in o.issues]
    lines = _exceptions(outcomes)
    reference = [o for o in outcomes if o.check.startswith("autograd")]
    comps = [c for o in reference for c in o.comparisons]
    wrong = [c for o in reference for c in o.wrong()]
    refs, users = _by_case(comps, "ref"), _by_case(comps, "user")
    forward_wrong = False
    for quantity in _quantities(wrong):
        group = [c for c in wrong if c.quantity == quantity]
        phase = "forward" if quantity in FORWARD_QUANTITIES else "backward"
        line = _explain(module, phase, quantity, group, refs, users)
        if line is None and phase == "backward" and forward_wrong:
            continue  # a backward wrong where its forward is wrong follows from the forward
        lines.append(line or _unexplained(module, phase, quantity, group))
        forward_wrong = forward_wrong or phase == "forward"
    for o in outcomes:
        lines += [f"{module} {issue.text}" for issue in o.issues]
    if not lines:
        for o in outcomes:
            if not o.passed and o.worst() is not None:
                lines.append(_unexplained(module, o.check, o.worst().quantity, o.wrong() or [o.worst()]))
                break
    return lines


def diagnose_network(rows: list[CheckOutcome]) -> list[str]:
    """Lines for an MLP that fails while every module passes: the modules are wired wrongly.

    (When a module fails, the network's failure follows from it and gets no line of its own.)
    """
    lines = _exceptions(rows)
    comps = [c for r in rows for c in r.comparisons]
    wrong = [c for r in rows for c in r.wrong()]
    if lines or not wrong:
        return lines
    output = [c for c in wrong if c.quantity == "output"]
    if output:
        return [_explain("MLP", "forward", "output", output, _by_case(comps, "ref"), _by_case(comps, "user"))
                or f"MLP forward: the output differs from torch ({_detail(output[0])}) while every module "
                "passes: check that MLP.forward chains Linear -> activation -> ... -> Linear in order"]
    worst = max(wrong, key=lambda c: c.error)
    return [f"MLP backward: {worst.quantity} differs from torch ({_detail(worst)}) while every module passes "
            "and the output is right: check that MLP.backward calls the modules in reverse order, passing "
            "each one's returned gradient to the next"]


# ---------------------------------------------------------------- matching


def _explain(module: str, phase: str, quantity: str, group: list[Comparison], refs: dict,
             users: dict) -> str | None:
    """The line for the variant that matches every wrong case of ``quantity`` (or most of them); a
    stabiliser found by :func:`mark_stabilisers` whose deviation is above the bound says so."""
    if all(c.stabiliser for c in group):
        shown = _shown(group)
        return (f"{module} {phase}: {_what(module, quantity)} matches {shown.stabiliser}, a numerical "
                f"stabiliser, but it moves {quantity} from the exact value by {shown.error:.2g} relative at "
                f"{shown.case.label}, above the bound {STABILISER_BOUND:g}")
    variants = [v for v in VARIANTS.get(module, []) if v.quantity == quantity]
    hits: dict[int, list[str]] = {}
    for comp in group:
        for k, v in enumerate(variants):
            const = _fitted(comp, v, refs, users)
            if const is not None:
                hits.setdefault(k, []).append(v.text.format(const) if "{" in v.text else v.text)
    if not hits:
        return None
    k = max(hits, key=lambda i: len(hits[i]))
    text, what = hits[k][0], _what(module, quantity)
    if len(hits[k]) == len(group):
        return f"{module} {phase}: {what} matches {text}"
    return f"{module} {phase}: {what} matches {text} in {len(hits[k])} of the {len(group)} cases where it is wrong"


def _fitted(comp: Comparison, v: Variant, refs: dict, users: dict) -> float | None:
    """Whether ``comp``'s user value matches variant ``v``: its fitted constant (0.0 for a variant
    without one), or None."""
    with np.errstate(all="ignore"):
        out = v.value(comp.case.data, refs[id(comp.case)], users[id(comp.case)])
    cand, const = out if isinstance(out, tuple) else (out, 0.0)
    if cand is not None and _matches(comp.user, np.asarray(cand, dtype=np.float64), comp.ref):
        return const
    return None


def _matches(user: np.ndarray | None, cand: np.ndarray, ref: np.ndarray) -> bool:
    if user is None:
        return False
    gap = _distance(cand, ref) if cand.shape == np.shape(ref) else float("inf")  # another shape: wrong
    if user.shape != cand.shape:
        if user.size != cand.size or np.squeeze(user).shape != np.squeeze(cand).shape:
            return False
        user, cand = np.squeeze(user), np.squeeze(cand)
    close = _distance(user, cand)
    return close <= MATCH_TOL and close <= MATCH_RATIO * gap


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """rel_error over the finite entries; inf unless both have the same nan and inf entries."""
    same = (np.array_equal(np.isnan(a), np.isnan(b))
            and np.array_equal(np.where(np.isinf(a), a, 0), np.where(np.isinf(b), b, 0)))
    finite = np.isfinite(a)
    return rel_error(a[finite], b[finite]) if same else float("inf")


def _one_hot_width(module: str, outcomes: list[CheckOutcome]) -> str | None:
    """Everything wrong lies in batches without the largest class while the batches with it pass:
    the one-hot matrix is as wide as the labels present, not as the classes."""
    bad = [(case, exc.message, exc.phase) for o in outcomes for case, exc in o.errors]
    bad += [(c.case, f"{c.quantity}: {_detail(c)}", "forward" if c.quantity in FORWARD_QUANTITIES
             else "backward") for o in outcomes for c in o.wrong()]
    cases = {id(c.case): c.case for o in outcomes for c in o.comparisons} | {id(c): c for c, _, _ in bad}
    if not bad or any("top" not in c.data for c in cases.values()):
        return None
    if any(c.data["top"] for c, _, _ in bad) or not any(c.data["top"] for c in cases.values()):
        return None
    case, detail, phase = max(bad, key=lambda b: b[0].data["x"].size)  # the largest such batch
    return (f"{module} {phase}: wrong only in batches that lack the largest class C - 1 ({detail}, at "
            f"{case.label}): the one-hot matrix is as wide as the labels present (e.g. np.eye(max(y) + 1)) "
            "instead of the number of classes, x.shape[1]")


def _exceptions(outcomes: list[CheckOutcome]) -> list[str]:
    """One line per distinct exception, shown at the representative case when it raised there."""
    found: dict[str, Case] = {}
    for o in outcomes:
        for case, exc in o.errors:
            where = f"{o.module}: {exc.phase}" if "." in exc.phase else f"{o.module} {exc.phase}:"
            key = f"{where} {exc.message}"
            if key not in found or case.representative:
                found[key] = case
    return [f"{key} ({case.label})" for key, case in found.items()]


def _shown(group: list[Comparison]) -> Comparison:
    """The comparison a line shows: at the representative case when it is there, else the worst."""
    typical = [c for c in group if c.case.representative]
    return max(typical or group, key=lambda c: c.error)


def _unexplained(module: str, phase: str, quantity: str, group: list[Comparison]) -> str:
    shown = _shown(group)
    return (f"{module} {phase}: {_what(module, quantity)} is wrong ({_detail(shown)} at {shown.case.label}) "
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


def _by_case(comps: list[Comparison], side: str) -> dict[int, dict[str, np.ndarray]]:
    """Per case (by id), the reference (``side="ref"``) or the user's values of every quantity."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for c in comps:
        out.setdefault(id(c.case), {})[c.quantity] = getattr(c, side)
    return out
