"""Micro-benchmarks of every layer operation, NumPy next to PyTorch, with pytest-benchmark.

Run it as (the default ``pytest`` does not collect them: its testpaths is tests/)::

    pytest benchmarks                                   # timed, one table per op and size
    pytest benchmarks --benchmark-save=ops              # ... and saved under .benchmarks/
    pytest benchmarks --benchmark-compare               # ... compared with the last saved run
    python -m bench.op_ratios --run --out results/op_ratios   # save + ratio CSV + chart

Files: ``inputs`` (the grid, the shared inputs, how each backend receives
them), ``conftest`` (threads, machine info, the backend fixture, the timing
helper), ``test_layers`` (linear, activations, loss: forward and backward),
``test_model`` (one training step, evaluation of one batch), ``reference``
(float64 results every test checks its backend's output against).
"""
