"""Whether something replaced the NumPy callables the harness relies on since it started.

A backend is imported and built in this process (a plugin, course code), so
its import or constructor can replace ``np.random.default_rng`` or ``np.dot``
under every other backend's runs. This module keeps the originals from the
harness's start (``bench.runner`` imports it before any backend);
:func:`replaced` names those that differ now. A run that finishes while one
is replaced is flagged (``bench.run``), and env.json and the report say so
(``bench.runner``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import impl_numpy.activations
import impl_numpy.modules
import impl_numpy.optim

# every public callable of numpy and numpy.random: impl_numpy and the harness use dozens (expm1,
# where, minimum, zeros, ...), and a list of a few let a replaced np.expm1 pass unflagged; and of the
# NumPy model's own modules, whose tables (ACTIVATIONS) course code could rewrite as well
MODULES = (np, np.random, np.linalg, impl_numpy.activations, impl_numpy.modules, impl_numpy.optim)


def snapshot(modules) -> dict[tuple[Any, str], Any]:
    """Every public callable of ``modules``, as it is now: :func:`changed` compares against it."""
    return {(m, n): getattr(m, n) for m in modules for n in dir(m)
            if not n.startswith("_") and callable(getattr(m, n, None))}


def changed(original: dict[tuple[Any, str], Any]) -> list[str]:
    """The callables of a :func:`snapshot` that are no longer the ones it took."""
    return [f"{m.__name__}.{name}" for (m, name), f in original.items() if getattr(m, name, None) is not f]


_ORIGINAL = snapshot(MODULES)
_TABLES = {(impl_numpy.activations, name): dict(getattr(impl_numpy.activations, name))
           for name in ("ACTIVATIONS", "DERIVATIVES")}


def replaced() -> list[str]:
    """The watched callables (and tables of them) that are no longer the ones the harness started with
    (``numpy.dot``, ``impl_numpy.activations.ACTIVATIONS``, ...)."""
    return changed(_ORIGINAL) + [f"{m.__name__}.{name}" for (m, name), table in _TABLES.items()
                                 if getattr(m, name, None) != table]
