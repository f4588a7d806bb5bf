"""Epoch time against GEMM-only time, interleaved in one process (a benchmark, not a test).

Run it as::

    python -m bench.epoch_ratio                    # numpy:cpu and torch:cpu, default config, 5 epochs
    python -m bench.epoch_ratio --epochs 9 --threads 1 --backends numpy:cpu

For every epoch and backend: one epoch of the config (its steps between two
device synchronisations, on synthetic data of the CIFAR-10 shape), then that
epoch's matrix products alone (``bench.roofline.step_gemms``, the same count)
with the backend's own library. Each epoch is divided by the mean of the
GEMM-only times just before and just after it (one more is taken before the
first epoch), so both sides see the same machine load even while it drifts:
the ratio a noisy shared machine can still measure. Prints each epoch and the
median ratio per backend, over all epochs and over the epochs whose GEMM-only
time was within ``NOMINAL_SLACK`` of the run's fastest (the machine at its
nominal speed; a neighbour's load slows the many short, synchronised
non-GEMM passes of a step more than the long products, so loaded epochs show
a higher ratio). Every Config flag is accepted.

Then, per backend, the **fixed cost of a step**: epochs of the same step
count and batch size on a model too small for its arithmetic to matter
(8 features -> [8] -> classes), the backends taking turns. What a step costs
there (dispatch, autograd, optimizer, Python) it also costs in the real
model, so ``1 + fixed / GEMM-only step`` is a floor under the ratio that no
tuning of the big products can remove.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.backends import resolve
from bench.config import Config, add_config_arguments, config_from_args
from bench.data import make_synthetic
from bench.errors import OneLineArgumentParser, run_cli
from bench.loop import timed_epoch
from bench.roofline import step_gemms
from bench.threads import default_threads, limit_threads

NOMINAL_SLACK = 0.15  # an epoch whose GEMM-only time is this much above the fastest ran on a loaded machine
FIXED_WIDTH = 8       # features and hidden width of the model whose steps are all overhead
FIXED_EPOCHS = 5


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m bench.epoch_ratio", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["--epochs", "5", *raw])  # this command's own default; a flag overrides it
    config = config_from_args(args)
    chosen, _ = resolve(config.backends or ["numpy:cpu", "torch:cpu"])
    n_train, batch = config.n_train, config.batch_size
    data = make_synthetic(n_train, 1000, 1000, seed=0, dtype=config.dtype)
    shapes = step_gemms(data.n_features, config.hidden_dims, data.n_classes, batch)
    steps = n_train // batch
    ratios: dict[str, list[float]] = {}
    gemm_times: dict[str, list[float]] = {}
    threads = config.threads or default_threads()
    with limit_threads(threads):
        backends = _ready_backends(chosen, config, data)
        for _, b in backends:
            b.gemm_seconds(shapes, max(1, steps // 10))  # warm-up
        before = {name: b.gemm_seconds(shapes, steps) for name, b in backends}
        print(f"{n_train} x {data.n_features} -> {config.hidden_dims} -> {data.n_classes}, batch {batch}, "
              f"{steps} steps, {threads} threads")
        for epoch in range(1, config.epochs + 1):
            for name, b in backends:
                epoch_s = timed_epoch(b, config.seeds[0], epoch, n_train, batch)
                b.pop_step_records()
                after = b.gemm_seconds(shapes, steps)
                gemm_s = (before[name] + after) / 2
                before[name] = after
                ratios.setdefault(name, []).append(epoch_s / gemm_s)
                gemm_times.setdefault(name, []).append(gemm_s)
                print(f"{name} epoch {epoch}: {epoch_s:.3f} s, GEMM-only {gemm_s:.3f} s (mean of "
                      f"before and after), ratio {epoch_s / gemm_s:.3f}", flush=True)
        fixed = _fixed_step_seconds(chosen, config)
    for name, r in ratios.items():
        print(f"{name}: median epoch/GEMM ratio {np.median(r):.3f} over {len(r)} epochs "
              f"(min {min(r):.3f}, max {max(r):.3f})")
    for name, r in ratios.items():
        nominal = nominal_epochs(gemm_times[name])
        print(f"{name}: median epoch/GEMM ratio {np.median([r[i] for i in nominal]):.3f} over the "
              f"{len(nominal)} epochs at nominal machine speed (GEMM-only within "
              f"{NOMINAL_SLACK:.0%} of its fastest)")
    for name, f in fixed.items():
        gemm_step = np.median(gemm_times[name]) / steps
        print(f"{name}: fixed cost of a step {f * 1e6:.0f} us ({FIXED_WIDTH}-feature, {FIXED_WIDTH}-wide "
              f"model, median of "
              f"{FIXED_EPOCHS} epochs) = {f / gemm_step:.3f} of a GEMM-only step: the ratio cannot go "
              f"below {1 + f / gemm_step:.3f}")
    return 0


def nominal_epochs(gemm_seconds: list[float]) -> list[int]:
    """Indices of the epochs whose GEMM-only time is within NOMINAL_SLACK of the fastest one."""
    fastest = min(gemm_seconds)
    return [i for i, g in enumerate(gemm_seconds) if g <= (1 + NOMINAL_SLACK) * fastest]


def _ready_backends(chosen, config: Config, data) -> list[tuple[str, Any]]:
    """(name, backend) for every chosen backend, its data loaded and its model drawn from the first seed."""
    backends = [(c.name, c.make(config)) for c in chosen]
    for _, b in backends:
        b.load_data(data)
        b.init_model(config.seeds[0])
    return backends


def _fixed_step_seconds(chosen, config: Config) -> dict[str, float]:
    """Median seconds per step of full-length epochs of a FIXED_WIDTH model, per backend, interleaved."""
    tiny = dataclasses.replace(config, hidden_dims=[FIXED_WIDTH], residual=False)
    data = make_synthetic(config.n_train, 10, 10, n_features=FIXED_WIDTH, seed=0, dtype=config.dtype)
    backends = _ready_backends(chosen, tiny, data)
    steps = config.n_train // config.batch_size
    times: dict[str, list[float]] = {}
    for epoch in range(FIXED_EPOCHS + 1):  # epoch 0 is a warm-up
        for name, b in backends:
            seconds = timed_epoch(b, config.seeds[0], epoch, config.n_train, config.batch_size)
            b.pop_step_records()
            if epoch > 0:
                times.setdefault(name, []).append(seconds / steps)
    return {name: float(np.median(t)) for name, t in times.items()}

if __name__ == "__main__":
    run_cli(main, prog="python -m bench.epoch_ratio")
