"""Backend names (``impl:device``), which of them this machine can run, and their factories.

The backends adapt a model to the harness's small interface (``api.py``), one
file each:

* ``numpy:cpu|cuda`` (``numpy_backend.py``): the from-scratch ``impl_numpy`` MLP,
  on NumPy or on CuPy;
* ``torch:<device>`` (``torch_backend.py``, with its training steps in
  ``torch_steps.py`` and device helpers in ``torch_device.py``): the
  ``impl_torch`` MLP;
* the opt-in peers, the MLPs users already have (the ``peers`` extra):
  ``sklearn:cpu`` (``sklearn_backend.py``: scikit-learn's ``MLPClassifier``,
  one ``partial_fit`` per epoch) and ``torch-dataloader:<device>``
  (``dataloader_backend.py``: the PyTorch backend fed by the classic
  torchvision ``Dataset`` + ``DataLoader`` pipeline). What cannot be made
  identical to the others, and how it is handled: docs/peers.md.

Each backend module provides ``available(device) -> (bool, reason)`` and a
backend class taking ``(config, device)``. Modules are imported only when a
backend of theirs is asked for, so a missing optional extra costs nothing
until it is needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from bench.backends.api import Backend
from bench.config import Config
from bench.errors import UserError


@dataclass(frozen=True)
class Impl:
    module: str        # where the backend class and available() live
    cls: str
    extra: str | None  # the pip extra that brings its dependencies, if any
    default: bool      # run by default when available


IMPLS: dict[str, Impl] = {
    "numpy": Impl("bench.backends.numpy_backend", "NumpyBackend", None, True),
    "torch": Impl("bench.backends.torch_backend", "TorchBackend", None, True),
    "sklearn": Impl("bench.backends.sklearn_backend", "SklearnBackend", "peers", False),
    "torch-dataloader": Impl("bench.backends.dataloader_backend", "DataLoaderBackend", "peers", False),
}
DEFAULT_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Chosen:
    name: str
    impl: str
    device: str
    make: Callable[[Config], Backend]


def _load(impl: str):
    spec = IMPLS[impl]
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        hint = f"; install the '{spec.extra}' extra: pip install '.[{spec.extra}]'" if spec.extra else ""
        raise UserError(f"backend {impl} cannot be imported ({exc}){hint}") from None


def parse_name(name: str) -> tuple[str, str]:
    impl, sep, device = name.strip().partition(":")
    if impl not in IMPLS:
        raise UserError(f"unknown backend {name!r} (allowed implementations: {', '.join(IMPLS)}; "
                        "write impl:device, e.g. numpy:cpu or torch:cuda)")
    if not sep or not device:
        raise UserError(f"backend {name!r} has no device (write impl:device, e.g. {impl}:cpu)")
    return impl, device


def resolve(names: list[str] | None, *, skip_unavailable: bool = False
            ) -> tuple[list[Chosen], list[tuple[str, str]]]:
    """The backends to run and the ones skipped as unavailable (name, reason).

    ``names=None`` picks every default backend this machine can run. A backend
    asked for by name that cannot run is a :class:`UserError`, unless
    ``skip_unavailable`` (then it is skipped; an empty choice is allowed too).
    """
    chosen: list[Chosen] = []
    skipped: list[tuple[str, str]] = []
    explicit = names is not None
    candidates = names if explicit else [f"{i}:{d}" for i, s in IMPLS.items() if s.default
                                         for d in DEFAULT_DEVICES]
    seen = set()
    for name in candidates:
        impl, device = parse_name(name)
        name = f"{impl}:{device}"
        if name in seen:
            raise UserError(f"backend {name} is listed twice")
        seen.add(name)
        module = _load(impl)
        ok, reason = module.available(device)
        if not ok:
            if explicit and not skip_unavailable:
                raise UserError(f"backend {name} is not available here: {reason}")
            skipped.append((name, reason))
            continue
        cls = getattr(module, IMPLS[impl].cls)
        chosen.append(Chosen(name, impl, device, lambda cfg, cls=cls, device=device: cls(cfg, device)))
    if not chosen and not skip_unavailable:
        raise UserError("no backend is available: " + "; ".join(f"{n}: {r}" for n, r in skipped))
    return chosen, skipped
