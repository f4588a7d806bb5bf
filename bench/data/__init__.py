"""CIFAR-10 for every backend, NumPy only (this package never imports torch).

``load_dataset()`` finds, verifies, decodes (or reuses the decoded cache),
splits and normalises CIFAR-10; ``make_synthetic()`` makes a learnable
stand-in of any size. ``python -m bench.data`` prints a summary of the copy
in use. See :mod:`bench.data.loader` for where the data is looked for.
"""

from bench.data.dataset import Dataset
from bench.data.loader import default_cache_dir, default_data_dir, load_dataset
from bench.data.synthetic import make_synthetic

__all__ = ["Dataset", "default_cache_dir", "default_data_dir", "load_dataset", "make_synthetic"]
