"""The interface a course implementation offers, detected from its code: constructors by signature,
layouts by shape, label formats by trying them.

The course changed its interface over the years (2019: ``LinearModule(in, out)``,
``ReLUModule``, one-hot labels; 2020: ``ELUModule()``; 2021: ``input_layer``,
ReLU, integer labels; 2022-2023: ``ELUModule()``; from 2024:
``ELUModule(alpha)``), and students store the weight as (out, in) or (in, out)
and the bias as (out,), (1, out) or (out, 1). Nothing is configured:
:func:`detect` reads the constructors' signatures, the parameter shapes of a
``LinearModule(4, 3)`` (in != out, so the two weight layouts cannot be
confused), and which label format ``CrossEntropyModule.forward`` takes. What
cannot be used (a constructor that takes other arguments, a parameter of
another shape) is a :class:`bench.errors.UserError`: one line, exit 2.

Values cross the interface in the project's own layout, weight (out, in) and
bias (out,): :meth:`Interface.set_linear` writes them in the student's layout,
:meth:`Interface.user_weight` turns a reference gradient into it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.checks.gradcheck import FD_TOL, UserCodeError, as_scalar, call, rel_error
from bench.checks.loader import CourseImpl
from bench.errors import UserError

PROBE_IN, PROBE_OUT = 4, 3  # in != out: the weight's layout shows in its shape
WEIGHT_LAYOUTS = {"(out, in)": lambda m, n: (n, m), "(in, out)": lambda m, n: (m, n)}
BIAS_LAYOUTS = {"(out,)": lambda n: (n,), "(1, out)": lambda n: (1, n), "(out, 1)": lambda n: (n, 1)}
LABEL_FORMATS = ("integer", "one-hot")


@dataclass
class Interface:
    """How to build and drive one implementation's modules."""

    impl: CourseImpl
    activations: tuple[str, ...]  # "elu" and/or "relu": the activation classes it has
    elu_alpha: bool               # ELUModule(alpha); False: ELUModule() (alpha = 1 only)
    input_layer: bool             # LinearModule(in, out, input_layer=...)
    weight: str                   # a key of WEIGHT_LAYOUTS
    bias: str                     # a key of BIAS_LAYOUTS
    labels: str                   # the label format the checks pass CrossEntropyModule
    label_note: str               # which formats work

    def linear(self, m: int, n: int, input_layer: bool = False) -> Any:
        kwargs = {"input_layer": input_layer} if self.input_layer else {}
        return call("constructor", self.impl.LinearModule, m, n, **kwargs)

    def activation(self, name: str, alpha: float = 1.0) -> Any:
        if name == "relu":
            return call("constructor", self.impl.ReLUModule)
        args = (alpha,) if self.elu_alpha else ()
        return call("constructor", self.impl.ELUModule, *args)

    def new(self, cls_name: str) -> Any:
        """``SoftMaxModule()`` or ``CrossEntropyModule()``."""
        return call("constructor", getattr(self.impl, cls_name))

    def user_weight(self, w: np.ndarray) -> np.ndarray:
        """A weight (or its gradient) of shape (out, in) in the student's layout."""
        return w if self.weight == "(out, in)" else w.T

    def set_linear(self, lin: Any, weight: np.ndarray, bias: np.ndarray, dtype: Any = np.float64) -> None:
        """Write ``weight`` (out, in) and ``bias`` (out,) into ``lin.params`` in the student's layout:
        in place when the array already has ``dtype`` (None: any float dtype), so that another name
        the student keeps for it sees the values; else as a new array of ``dtype`` (float64)."""
        n, m = weight.shape
        params = _params(lin, "params")
        for key, value, shape in (("weight", self.user_weight(weight), WEIGHT_LAYOUTS[self.weight](m, n)),
                                  ("bias", bias, BIAS_LAYOUTS[self.bias](n))):
            old = params.get(key)
            if tuple(np.shape(old)) != shape:
                raise UserCodeError("constructor", f"params['{key}'] of LinearModule({m}, {n}) has shape "
                                    f"{np.shape(old)}, expected {shape} ({getattr(self, key)})")
            if isinstance(old, np.ndarray) and old.flags.writeable and (
                    old.dtype == dtype or (dtype is None and old.dtype.kind == "f")):
                old[...] = value.reshape(shape)
            else:
                params[key] = np.array(value.reshape(shape), dtype=dtype or np.float64)

    def grads(self, lin: Any) -> tuple[np.ndarray, np.ndarray]:
        """``grads['weight']`` as the student left it, and ``grads['bias']`` as (out,) when it holds
        the out values in any of the bias layouts (a (1, out) gradient of an (out,) bias is fine)."""
        grads = _params(lin, "grads", "backward")
        if "weight" not in grads or "bias" not in grads:
            raise UserCodeError("backward", "left no grads['weight'] and grads['bias']")
        dw, db = (_array(grads[k]) for k in ("weight", "bias"))
        n = int(np.size(_params(lin, "params")["bias"]))
        return dw, db.reshape(n) if db.shape in [f(n) for f in BIAS_LAYOUTS.values()] else db

    def describe(self) -> str:
        lin = f"LinearModule(in, out{', input_layer' if self.input_layer else ''})"
        acts = []
        if "elu" in self.activations:
            acts.append("ELUModule(alpha)" if self.elu_alpha else "ELUModule()")
        if "relu" in self.activations:
            acts.append("ReLUModule()")
        return (f"{lin} with weight {self.weight} and bias {self.bias}; {', '.join(acts)}; "
                f"CrossEntropyModule labels: {self.label_note}")


def detect(impl: CourseImpl) -> Interface:
    """The interface of ``impl``; :class:`UserError` (one line) for one the course never had."""
    input_layer = _takes(impl.LinearModule, PROBE_IN, PROBE_OUT, input_layer=False)
    if not input_layer and not _takes(impl.LinearModule, PROBE_IN, PROBE_OUT):
        raise UserError(f"LinearModule{_signature(impl.LinearModule)} cannot be called as "
                        "LinearModule(in_features, out_features[, input_layer]), the course's constructor")
    lin = _build(impl.LinearModule, f"LinearModule({PROBE_IN}, {PROBE_OUT})", PROBE_IN, PROBE_OUT,
                 **({"input_layer": False} if input_layer else {}))
    weight = _layout(lin, "weight", {k: f(PROBE_IN, PROBE_OUT) for k, f in WEIGHT_LAYOUTS.items()})
    bias = _layout(lin, "bias", {k: f(PROBE_OUT) for k, f in BIAS_LAYOUTS.items()})
    activations, elu_alpha = [], False
    if impl.ELUModule is not None:
        elu_alpha = _takes(impl.ELUModule, 1.0)
        if not elu_alpha and not _takes(impl.ELUModule):
            raise UserError(f"ELUModule{_signature(impl.ELUModule)} cannot be called as ELUModule(alpha) "
                            "or ELUModule(), the course's constructors")
        _build(impl.ELUModule, "ELUModule", *((1.0,) if elu_alpha else ()))
        activations.append("elu")
    if impl.ReLUModule is not None:
        _build(impl.ReLUModule, "ReLUModule")
        activations.append("relu")
    for cls in (impl.SoftMaxModule, impl.CrossEntropyModule):
        _build(cls, cls.__name__)
    for cls in filter(None, (impl.LinearModule, impl.ELUModule, impl.ReLUModule, impl.SoftMaxModule)):
        _check_method(cls, "forward", ("x",))
        _check_method(cls, "backward", ("dout",))
    for method in ("forward", "backward"):
        _check_method(impl.CrossEntropyModule, method, ("x", "y"))
    return Interface(impl, tuple(activations), elu_alpha, input_layer, weight, bias, *_labels(impl))


def labels_as(fmt: str, y: np.ndarray, c: int) -> np.ndarray:
    """Integer labels (S,) or one-hot rows (S, C) as float64."""
    return y.copy() if fmt == "integer" else np.eye(c)[y]


# ---------------------------------------------------------------- inside


def _labels(impl: CourseImpl) -> tuple[str, str]:
    """The format to check with and a note on which work: a format works when forward gives the
    right loss on a batch holding every class. Integers first (the course's tests pass them from
    2021); when neither gives the right loss, the first that runs (the check then fails)."""
    s, c = 5, 3
    z = np.random.default_rng(0).normal(size=(s, c))
    x = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([0, 2, 1, 2, 0])
    ref = -np.log(x[np.arange(s), y]).mean()
    right, ran, why = [], [], {}
    for fmt in LABEL_FORMATS:
        try:
            ce = call("constructor", impl.CrossEntropyModule)
            loss = as_scalar("forward", call("forward", ce.forward, x.copy(), labels_as(fmt, y, c)))
        except UserCodeError as exc:
            why[fmt] = exc.message
            continue
        ran.append(fmt)
        if rel_error(loss, ref) <= FD_TOL:
            right.append(fmt)
        else:
            why[fmt] = "gave another loss"
    if len(right) == 2:
        return "integer", "integer and one-hot"
    if right:
        other = next(f for f in LABEL_FORMATS if f not in right)
        return right[0], f"{right[0]} only ({other} labels: forward {why[other]})"
    return (ran or LABEL_FORMATS)[0], "neither format gives the right loss; checked with " \
                                      f"{(ran or LABEL_FORMATS)[0]} labels"


def _takes(cls: type, *args: Any, **kwargs: Any) -> bool:
    """Whether ``cls(*args, **kwargs)`` fits the constructor's signature (tried when it has none)."""
    try:
        inspect.signature(cls).bind(*args, **kwargs)
        return True
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): try it
        try:
            call("constructor", cls, *args, **kwargs)
            return True
        except UserCodeError:
            return False


def _check_method(cls: type, method: str, args: tuple[str, ...]) -> None:
    """``cls.method(*args)`` must fit the method's signature (the course calls it so)."""
    try:
        signature = inspect.signature(getattr(cls, method))
        signature.bind(None, *args)
    except ValueError:  # no signature to read
        return
    except TypeError:
        raise UserError(f"{cls.__name__}.{method}{signature} cannot be called as {method}({', '.join(args)}), "
                        "as the course calls it") from None


def _signature(cls: type) -> str:
    try:
        return str(inspect.signature(cls))
    except (TypeError, ValueError):
        return "(...)"


def _build(cls: type, shown: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return call("constructor", cls, *args, **kwargs)
    except UserCodeError as exc:
        raise UserError(f"{shown}{'' if '(' in shown else '(' + ', '.join(map(repr, args)) + ')'} "
                        f"{exc.message}") from None


def _layout(lin: Any, key: str, layouts: dict[str, tuple[int, ...]]) -> str:
    try:
        params = _params(lin, "params")
    except UserCodeError as exc:
        raise UserError(f"LinearModule({PROBE_IN}, {PROBE_OUT}) {exc.message}") from None
    if key not in params:
        raise UserError(f"LinearModule({PROBE_IN}, {PROBE_OUT}).params has no key '{key}' (its keys: "
                        f"{', '.join(map(repr, params)) or 'none'}; the course keeps the parameters as "
                        "params['weight'] and params['bias'])")
    shape = tuple(np.shape(params[key]))
    for name, want in layouts.items():
        if shape == want:
            return name
    allowed = " or ".join(f"{name} = {want}" for name, want in layouts.items())
    raise UserError(f"LinearModule({PROBE_IN}, {PROBE_OUT}).params['{key}'] has shape {shape} "
                    f"(allowed: {allowed})")


def _params(lin: Any, attr: str, phase: str = "constructor") -> dict:
    d = getattr(lin, attr, None)
    if not isinstance(d, dict):
        raise UserCodeError(phase, f"has no dict {attr} (the course keeps the parameters and their "
                            "gradients in dicts params and grads with keys 'weight' and 'bias')")
    return d


def _array(value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise UserCodeError("backward", f"left grads of type {type(value).__name__}, not NumPy arrays")
    return np.array(value, dtype=np.float64)
