"""A third-party backend, as a package outside this repository would ship it.

Its metadata registers it under the entry-point group ``mlpbench.backends``::

    [project.entry-points."mlpbench.backends"]
    example = "example_plugin:ExampleBackend"

and ``python -m bench.compare --backends example:cpu`` then trains it in the
harness loop. (Here: the project's NumPy model under another name.)
"""

from bench.backends.numpy_backend import NumpyBackend


def available(device: str) -> tuple[bool, str]:
    if device == "cpu":
        return True, "the example plugin runs on the CPU"
    return False, f"the example plugin runs on the CPU only, not {device}"


class ExampleBackend(NumpyBackend):
    impl = "example"
