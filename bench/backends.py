"""Backend names (``impl:device``), which of them this machine can run, and their factories.

Each implementation module provides ``available(device) -> (bool, reason)``
and a backend class taking ``(config, device)``. Modules are imported only
when a backend of theirs is asked for, so a missing optional extra costs
nothing until it is needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from bench.backend_api import Backend
from bench.config import Config
from bench.errors import UserError


@dataclass(frozen=True)
class Impl:
    module: str        # where the backend class and available() live
    cls: str
    extra: str | None  # the pip extra that brings its dependencies, if any
    default: bool      # run by default when available


IMPLS: dict[str, Impl] = {
    "numpy": Impl("impl_numpy.backend", "NumpyBackend", None, True),
    "torch": Impl("impl_torch.backend", "TorchBackend", None, True),
    "sklearn": Impl("bench.peers.sklearn_backend", "SklearnBackend", "peers", False),
    "torch-dataloader": Impl("bench.peers.dataloader_backend", "DataLoaderBackend", "peers", False),
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


def resolve(names: list[str] | None) -> tuple[list[Chosen], list[tuple[str, str]]]:
    """The backends to run and the default ones skipped as unavailable (name, reason).

    ``names=None`` picks every default backend this machine can run. A backend
    asked for by name that cannot run is a :class:`UserError`.
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
            if explicit:
                raise UserError(f"backend {name} is not available here: {reason}")
            skipped.append((name, reason))
            continue
        cls = getattr(module, IMPLS[impl].cls)
        chosen.append(Chosen(name, impl, device, lambda cfg, cls=cls, device=device: cls(cfg, device)))
    if not chosen:
        raise UserError("no backend is available: " + "; ".join(f"{n}: {r}" for n, r in skipped))
    return chosen, skipped
