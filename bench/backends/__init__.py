"""Backend names (``impl:device``), which of them this machine can run, and their factories.

The backends adapt a model to the harness's small interface (``api.py``), one
file each:

* ``numpy:cpu|cuda`` (``numpy_backend.py``): the from-scratch ``impl_numpy`` MLP,
  on NumPy or on CuPy;
* ``torch:<device>`` (``torch_backend.py``, with its training steps in
  ``torch_steps.py`` and device helpers in ``torch_device.py``): the
  ``impl_torch`` MLP;
* ``jax:cpu|cuda`` (``jax_backend.py``): the ``impl_jax`` MLP, compiled by XLA
  (the ``jax`` extra; listed and skipped with the reason without JAX);
* the opt-in peers, the MLPs users already have (the ``peers`` extra):
  ``sklearn:cpu`` (``sklearn_backend.py``: scikit-learn's ``MLPClassifier``,
  one ``partial_fit`` per epoch) and ``torch-dataloader:<device>``
  (``dataloader_backend.py``: the PyTorch backend fed by the classic
  torchvision ``Dataset`` + ``DataLoader`` pipeline). What cannot be made
  identical to the others, and how it is handled: docs/peers.md.

* ``course:PATH`` (``course_backend.py``): a user's course-style NumPy
  implementation (a folder with ``modules.py``, the file itself, or a module
  name), trained by the same loop; ``python -m bench.check PATH`` checks it.

Each backend module provides ``available(device) -> (bool, reason)`` and a
backend class taking ``(config, device)``. Modules are imported only when a
backend of theirs is asked for, so a missing optional extra costs nothing
until it is needed.

**Plugins.** Beside the built-in ones, the registry reads the Python entry
points of the group ``mlpbench.backends``: an entry ``name = "pkg.module:Class"``
in a third-party package's metadata adds the backend ``name:<device>``, its
module providing ``available(device)`` (or the class a static
``available``) and the class the Backend interface. A plugin never replaces
a built-in name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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
    "jax": Impl("bench.backends.jax_backend", "JaxBackend", "jax", True),
    "sklearn": Impl("bench.backends.sklearn_backend", "SklearnBackend", "peers", False),
    "torch-dataloader": Impl("bench.backends.dataloader_backend", "DataLoaderBackend", "peers", False),
    "course": Impl("bench.backends.course_backend", "CourseBackend", None, False),
}
DEFAULT_DEVICES = ("cpu", "cuda")
ENTRY_POINT_GROUP = "mlpbench.backends"
PLUGIN = "plugin"  # the ``extra`` of an Impl found through an entry point


def plugins() -> dict[str, Impl]:
    """The backends other packages register under the entry-point group ``mlpbench.backends``."""
    found: dict[str, Impl] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module, _, cls = ep.value.partition(":")
        if ep.name not in IMPLS and module and cls:
            found[ep.name] = Impl(module.strip(), cls.strip(), PLUGIN, False)
    return found


def implementations() -> dict[str, Impl]:
    """Every backend implementation: the built-in ones, then the plugins."""
    return {**IMPLS, **plugins()}


@dataclass(frozen=True)
class Chosen:
    name: str
    impl: str
    device: str
    make: Callable[[Config], Backend]


def _load(impl: str, impls: dict[str, Impl]):
    spec = impls[impl]
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        hint = (f"; install the '{spec.extra}' extra: pip install '.[{spec.extra}]'"
                if spec.extra and spec.extra != PLUGIN else "")
        raise UserError(f"backend {impl} cannot be imported ({exc}){hint}") from None


def _available(module, cls: type, device: str) -> tuple[bool, str]:
    """The module's ``available(device)``, else the class's; a plugin without either is assumed to run."""
    check = getattr(module, "available", None) or getattr(cls, "available", None)
    return check(device) if check is not None else (True, "")


def parse_name(name: str, impls: dict[str, Impl] | None = None) -> tuple[str, str]:
    impls = implementations() if impls is None else impls
    impl, sep, device = name.strip().partition(":")
    if impl not in impls:
        raise UserError(f"unknown backend {name!r} (allowed implementations: {', '.join(impls)}; "
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
    impls = implementations()
    explicit = names is not None
    candidates = names if explicit else [f"{i}:{d}" for i, s in impls.items() if s.default
                                         for d in DEFAULT_DEVICES]
    seen = set()
    for name in candidates:
        impl, device = parse_name(name, impls)
        name = f"{impl}:{device}"
        if name in seen:
            raise UserError(f"backend {name} is listed twice")
        seen.add(name)
        module = _load(impl, impls)
        cls = getattr(module, impls[impl].cls, None)
        if cls is None:
            raise UserError(f"backend {impl}: {impls[impl].module} has no class {impls[impl].cls}")
        ok, reason = _available(module, cls, device)
        if not ok:
            if explicit and not skip_unavailable:
                raise UserError(f"backend {name} is not available here: {reason}")
            skipped.append((name, reason))
            continue
        chosen.append(Chosen(name, impl, device, lambda cfg, cls=cls, device=device: cls(cfg, device)))
    if not chosen and not skip_unavailable:
        raise UserError("no backend is available: " + "; ".join(f"{n}: {r}" for n, r in skipped))
    return chosen, skipped


def listing() -> list[dict[str, str]]:
    """Every backend this installation knows, with whether it can run here and why not.

    Built-in and plugin implementations on the CPU and on CUDA; ``course``
    takes a path instead of a device, so it is listed once as ``course:PATH``.
    """
    rows = []
    for impl, spec in implementations().items():
        origin = "plugin" if spec.extra == PLUGIN else "built-in"
        if impl == "course":
            rows.append({"backend": "course:PATH", "origin": origin, "runs here": "with a PATH",
                         "why / what": "a course-style NumPy implementation at PATH (a folder with "
                                       "modules.py, the file, or a module name); check it with "
                                       "python -m bench.check PATH"})
            continue
        for device in DEFAULT_DEVICES:
            name = f"{impl}:{device}"
            try:
                module = _load(impl, implementations())
                cls = getattr(module, spec.cls)
                ok, reason = _available(module, cls, device)
            except (UserError, AttributeError) as exc:
                ok, reason = False, str(exc)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the listing
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            rows.append({"backend": name, "origin": origin, "runs here": "yes" if ok else "no",
                         "why / what": reason or ("runs by default" if spec.default else "opt-in")})
    return rows
