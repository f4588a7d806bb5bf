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

import numpy as np

WATCHED = {np: ("dot", "matmul", "einsum", "exp", "log", "tanh", "maximum", "mean", "sum", "argmax"),
           np.random: ("default_rng", "Generator", "PCG64", "SeedSequence", "seed", "RandomState")}
_ORIGINAL = {(m, name): getattr(m, name) for m, names in WATCHED.items() for name in names}


def replaced() -> list[str]:
    """The watched callables that are no longer the ones the harness started with (``numpy.dot``, ...)."""
    return [f"{m.__name__}.{name}" for (m, name), f in _ORIGINAL.items() if getattr(m, name, None) is not f]
