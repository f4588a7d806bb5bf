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
until it is needed; ``--list-backends`` imports none of the built-in ones (it
checks their packages are installed and that a GPU is present) and so lists
in well under a second.

**One loader, whatever a backend does.** A backend whose module raises on
import (any exception, ``SystemExit`` too), whose ``available()`` raises,
answers anything but ``(bool, str)`` or does not answer within
``AVAILABLE_TIMEOUT_S`` is *unavailable* with that reason: one row of the
listing, one "skipped" line, or, when asked for by name, one line and exit 2
before any work. A constructor that raises anything but a
:class:`~bench.errors.UserError` (a bad option: one line, exit 2) is recorded
as that backend's ``failed`` run and the others go on (:meth:`Chosen.build`).

**Plugins.** Beside the built-in ones, the registry reads the Python entry
points of the group ``mlpbench.backends``: an entry ``name = "pkg.module:Class"``
in a third-party package's metadata adds the backend ``name:<device>``, its
module providing ``available(device)`` (or the class a static
``available``) and the class the Backend interface. A plugin never replaces
a built-in name; it is opt-in (never run by default), and its import runs
under the same time limit as ``available()``.

**Code nobody here wrote runs apart.** Plugins and ``course:PATH`` are
probed, built and trained in a process of their own (``isolated.py``), so
what their code does (exits, crashes, hangs, replaces NumPy) costs their
run alone.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.backends import isolated
from bench.backends.api import Backend
from bench.config import Config
from bench.errors import UserError, did_you_mean, shorten

AVAILABLE_TIMEOUT_S = 10.0  # seconds a backend's available() (and a plugin's import) may take
UNTRUSTED_STAGE_S = 600.0  # seconds a course or plugin backend may take to build, or for a run's stage


@dataclass(frozen=True)
class Impl:
    module: str        # where the backend class and available() live
    cls: str
    extra: str | None  # the pip extra that brings its dependencies, if any
    default: bool      # run by default when available
    what: str = ""     # one line for the listing
    requires: tuple[str, ...] = ()      # packages it imports, on every device
    gpu_requires: tuple[str, ...] = ()  # and on a GPU
    devices: tuple[str, ...] = ()       # the only devices it runs on (empty: any)

    @property
    def policy(self) -> str:
        """Whether it runs by default, or why it is opt-in."""
        if self.default:
            return "runs by default"
        return {"peers": "opt-in: a peer (docs/peers.md)", PLUGIN: "opt-in: a plugin"}.get(
            self.extra, "opt-in")


DEFAULT_DEVICES = ("cpu", "cuda")
DEVICE_ALIASES = {"gpu": "cuda", "nvidia": "cuda"}  # what people write for the NVIDIA GPU
ENTRY_POINT_GROUP = "mlpbench.backends"
PLUGIN = "plugin"  # the ``extra`` of an Impl found through an entry point
IMPLS: dict[str, Impl] = {
    "numpy": Impl("bench.backends.numpy_backend", "NumpyBackend", None, True,
                  "the from-scratch NumPy MLP (impl_numpy), on CUDA through CuPy",
                  ("numpy",), ("cupy",)),
    "torch": Impl("bench.backends.torch_backend", "TorchBackend", None, True,
                  "the PyTorch MLP (impl_torch)", ("torch",)),
    "jax": Impl("bench.backends.jax_backend", "JaxBackend", "jax", True,
                "the JAX MLP (impl_jax), compiled by XLA", ("jax",)),
    "sklearn": Impl("bench.backends.sklearn_backend", "SklearnBackend", "peers", False,
                    "scikit-learn's MLPClassifier", ("sklearn",), devices=("cpu",)),
    "torch-dataloader": Impl("bench.backends.dataloader_backend", "DataLoaderBackend", "peers", False,
                             "the PyTorch MLP fed by torchvision's Dataset + DataLoader",
                             ("torch", "torchvision", "PIL")),
    "course": Impl("bench.backends.course_backend", "CourseBackend", None, False),
}
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")  # NVIDIA, WSL, ROCm
_BROKEN: dict[str, str] = {}  # module -> why it cannot be used (a hung import is never retried)


def _entry_points() -> list[tuple[str, Impl | None, str]]:
    """(name, its Impl or None, why it is ignored) for every entry point of ``mlpbench.backends``."""
    try:
        entries = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # noqa: BLE001 - broken metadata of some package: no plugins, not a crash
        return []
    found = []
    for ep in entries:
        module, _, cls = ep.value.partition(":")
        where = f"{ep.value} (package {getattr(ep.dist, 'name', None) or '?'})"
        if ep.name in IMPLS:
            found.append((ep.name, None, f"ignored: {where} has the name of a built-in backend"))
        elif not re.fullmatch(r"[\w.-]+", ep.name):  # a ':' would end the name in impl:device
            found.append((ep.name, None, f"ignored: {where} has a name that is not a backend's (allowed: "
                                         "letters, digits, '_', '.', '-')"))
        elif not (module.strip() and cls.strip()):
            found.append((ep.name, None, f"ignored: {where} names no class (allowed: module:Class)"))
        else:
            found.append((ep.name, Impl(module.strip(), cls.strip(), PLUGIN, False, where), ""))
    return found


def plugins() -> dict[str, Impl]:
    """The backends other packages register under the entry-point group ``mlpbench.backends``."""
    return {name: impl for name, impl, _ in _entry_points() if impl is not None}


def ignored_plugins() -> list[tuple[str, str]]:
    """(name, why) of the entry points of ``mlpbench.backends`` that are not used."""
    return [(name, why) for name, impl, why in _entry_points() if impl is None]


def implementations() -> dict[str, Impl]:
    """Every backend implementation: the built-in ones, then the plugins."""
    return {**IMPLS, **plugins()}


@dataclass(frozen=True)
class Chosen:
    name: str
    impl: str
    device: str
    make: Callable[[Config], Backend]
    apart: bool = False  # built in a process of its own (``isolated``), with its own copy of the data

    def build(self, config: Config) -> Backend:
        """The backend for ``config``, checking its options: a UserError (one line, exit 2) for an
        option it refuses; when its constructor fails otherwise, a :class:`Unbuilt` that raises that
        failure at its first use (the run path records it as that backend's ``failed`` run, once)."""
        try:
            with deadline(stage_limit(self.impl), f"building {self.name}"):
                return self.make(config)
        except UserError:
            raise
        except (Exception, SystemExit, StageTimeout) as exc:  # noqa: BLE001 - one backend's crash never ends the others
            return Unbuilt(self.impl, self.device, exc)


@dataclass
class Unbuilt:
    """A backend whose constructor failed: every call raises that failure (an ``Exception``, so that
    code that tries each backend in turn goes on)."""

    impl: str
    device: str
    failure: BaseException

    def __getattr__(self, name: str) -> Any:
        exc = self.failure
        if not isinstance(exc, Exception):  # SystemExit, StageTimeout
            exc = RuntimeError(shorten(f"{type(exc).__name__}: {exc}", 400))

        def fail(*args: Any) -> Any:
            raise exc

        return fail


def options_of(backend: Backend) -> dict[str, Any]:
    """A backend's ``describe()``, or what went wrong asking (a plugin's may raise or not be a dict)."""
    try:
        got = backend.describe()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - its run fails on its own if it is broken
        return {"describe_error": shorten(f"{type(exc).__name__}: {exc}", 200)}
    return got if isinstance(got, dict) else {"describe": shorten(repr(got), 200)}


def stage_limit(impl: str) -> float | None:
    """Seconds a backend of ``impl`` may take to build or for a run's stage: :data:`UNTRUSTED_STAGE_S`
    for code nobody here wrote (the course implementations, the plugins: in a process of their own)."""
    return UNTRUSTED_STAGE_S if impl not in IMPLS or isolated.is_isolated(impl, IMPLS[impl].extra) else None


class StageTimeout(BaseException):
    """Code run under :func:`deadline` went past its seconds: not an Exception, so that no ``except
    Exception`` between the wait and the deadline's owner swallows it."""


@contextlib.contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[bool]:
    """Raise :class:`StageTimeout` in the block once ``seconds`` have passed (SIGALRM: in the main
    thread only; the block is the harness's own wait for a backend's process, ``isolated``). None: no
    limit. Yields whether it set the timer: inside another deadline it does not, and the outer one holds."""
    if (seconds is None or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield False
        return

    def fire(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise StageTimeout(f"{what} took longer than {seconds:g} s (code that never returns?)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Unavailable(Exception):
    """Why a backend cannot be used here (its module, its available(), or its answer)."""


def limited(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` in a daemon thread; :class:`Unavailable` when it raises (anything, ``SystemExit``
    too) or has not returned after ``AVAILABLE_TIMEOUT_S`` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - whatever it does is the backend's failure
            box["error"] = exc

    timeout = AVAILABLE_TIMEOUT_S
    thread = threading.Thread(target=target, name=f"mlpbench {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise Unavailable(f"{what} did not return within {timeout:g} s")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, Unavailable):
            raise exc
        raise Unavailable(f"{what} raised {shorten(f'{type(exc).__name__}: {exc}', 300)}")
    return box["value"]


def _import(impl: str, spec: Impl):
    """The backend's module; :class:`Unavailable` (with the extra to install, if any) when it fails."""
    if spec.module in _BROKEN:
        raise Unavailable(_BROKEN[spec.module])
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        hint = f"; install the '{spec.extra}' extra: pip install '.[{spec.extra}]'" if spec.extra else ""
        _BROKEN[spec.module] = f"cannot be imported ({shorten(str(exc), 400)}){hint}"
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        _BROKEN[spec.module] = f"import {spec.module} raised {shorten(f'{type(exc).__name__}: {exc}', 300)}"
    raise Unavailable(_BROKEN[spec.module])


def _answer(value: Any, what: str) -> tuple[bool, str]:
    """``value`` as (ok, reason); Unavailable unless it is a (bool, str) pair."""
    if (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], (bool, np.bool_))
            and isinstance(value[1], str)):
        return bool(value[0]), shorten(value[1], 300)
    raise Unavailable(f"{what} returned {shorten(repr(value), 80)}, not (bool, reason)")


def probe(impl: str, device: str, impls: dict[str, Impl]) -> tuple[Callable | None, str]:
    """(the backend's factory, reason) when ``impl:device`` can run here, else (None, why not). Code
    nobody here wrote is probed (its import and ``available()`` within twice ``AVAILABLE_TIMEOUT_S``),
    and built, in a process of its own (``isolated``)."""
    spec = impls[impl]
    if isolated.is_isolated(impl, spec.extra):
        ok, reason = isolated.probe(impl, spec.module, spec.cls, device, 2 * AVAILABLE_TIMEOUT_S)
        return (functools.partial(isolated.Isolated, impl, spec.module, spec.cls) if ok else None), reason
    try:
        module = _import(impl, spec)
        cls = getattr(module, spec.cls, None)
        if not isinstance(cls, type):
            return None, f"{spec.module} has no class {spec.cls}"
        check = getattr(module, "available", None) or getattr(cls, "available", None)
        if check is None:  # a backend without one is assumed to run
            return cls, ""
        what = f"{impl}: available({device!r})"
        try:
            ok, reason = limited(lambda: _answer(check(device), what), what)
        except Unavailable as exc:
            if "did not return" in str(exc):  # still running: never call it again in this process
                _BROKEN[spec.module] = str(exc)
            raise
    except Unavailable as exc:
        return None, str(exc)
    return (cls if ok else None), reason


def parse_name(name: str, impls: dict[str, Impl] | None = None) -> tuple[str, str]:
    impls = implementations() if impls is None else impls
    if not os.fsencode(name).decode("utf-8", "replace").isprintable():  # a newline breaks every table
        raise UserError(f"backend {name!r} holds a control character (allowed: printable characters)")
    impl, sep, device = name.strip().partition(":")
    if impl not in impls:
        raise UserError(f"unknown backend {name!r}{did_you_mean(impl, impls)} (allowed implementations: "
                        f"{', '.join(impls)}; write impl:device, e.g. numpy:cpu or torch:cuda)")
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
        same = f"course:{os.path.realpath(device)}" if impl == "course" and os.path.exists(device) else name
        if same in seen:  # course:dir and course:dir/ (or a link to it) are one implementation
            raise UserError(f"backend {name} is listed twice")
        seen.add(same)
        cls, reason = probe(impl, device, impls)
        if cls is None:
            if explicit and not skip_unavailable:
                raise UserError(f"backend {name} is not available here: {reason}"
                                + device_hint(impl, device))
            skipped.append((name, reason))
            continue
        chosen.append(Chosen(name, impl, device, lambda cfg, cls=cls, device=device: cls(cfg, device),
                             isolated.is_isolated(impl, impls[impl].extra)))
    if not chosen and not skip_unavailable:
        raise UserError("no backend is available: " + "; ".join(f"{n}: {r}" for n, r in skipped))
    return chosen, skipped


def device_hint(impl: str, device: str) -> str:
    """`` (did you mean torch:cuda?)`` for a device written the way people say it (``gpu``) or
    misspelled (``cdua``); empty for a device the harness knows, or nothing close."""
    kind, sep, index = device.partition(":")
    if impl == "course" or kind in DEFAULT_DEVICES:
        return ""
    close = difflib.get_close_matches(kind.lower(), DEFAULT_DEVICES, n=1, cutoff=0.6)
    guess = DEVICE_ALIASES.get(kind.lower()) or (close[0] if close else None)
    return f" (did you mean {impl}:{guess}{sep}{index}?)" if guess else ""
def gpu_present() -> bool:
    """Whether the system shows a GPU device node (cheap: nothing is imported)."""
    return any(Path(node).exists() for node in GPU_NODES)


def quick_probe(impl: str, device: str, impls: dict[str, Impl]) -> tuple[bool, str]:
    """Whether a backend can run here, importing nothing heavy: a built-in one on the CPU runs when
    its packages are installed, and on CUDA only where a GPU is present (then it is probed fully)."""
    spec = impls[impl]
    if spec.extra == PLUGIN:
        cls, reason = probe(impl, device, impls)
        return cls is not None, reason
    if spec.devices and device not in spec.devices:
        return False, f"runs on {', '.join(spec.devices)} only"
    needs = spec.requires + (spec.gpu_requires if device != "cpu" else ())
    missing = [m for m in needs if not _installed(m)]
    if missing:
        hint = f": pip install '.[{spec.extra or 'cuda'}]'" if spec.extra or device != "cpu" else ""
        return False, f"needs {', '.join(missing)}{hint}"
    if device == "cpu":
        return True, ""
    if not gpu_present():
        return False, "no GPU device or driver found on this machine"
    cls, reason = probe(impl, device, impls)
    return cls is not None, reason


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def listing() -> list[dict[str, str]]:
    """Every backend this installation knows, whether it can run here, and whether it runs by default
    (or why it is opt-in), with why not when it cannot.

    Built-in and plugin implementations on the CPU and on CUDA; ``course``
    takes a path instead of a device, so it is listed once as ``course:PATH``.
    """
    rows = []
    impls = implementations()
    for impl, spec in impls.items():
        origin = "plugin" if spec.extra == PLUGIN else "built-in"
        if impl == "course":
            rows.append({"backend": "course:PATH", "origin": origin, "runs here": "with a PATH",
                         "why / what": "opt-in: needs a PATH; a course-style NumPy implementation at "
                                       "PATH (a folder with modules.py, the file, or a module name); "
                                       "check it with python -m bench.check PATH"})
            continue
        for device in DEFAULT_DEVICES:
            ok, reason = quick_probe(impl, device, impls)
            why = f"{spec.policy}; {spec.what}" if ok else f"{spec.policy}; not here: {reason}"
            rows.append({"backend": f"{impl}:{device}", "origin": origin, "runs here": "yes" if ok else "no",
                         "why / what": shorten(why, 300)})
    rows += [{"backend": name, "origin": "plugin", "runs here": "no", "why / what": shorten(why, 300)}
             for name, why in ignored_plugins()]
    return rows
