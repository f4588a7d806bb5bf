"""Where a step of jax:cpu and of numpy:cpu spends its time, and what XLA runs for it (docs/jax.md).

Run it as::

    taskset -c 0 python scripts/jax_profile.py [--rounds 5] [--hlo FILE]

Pinned to one core, every library runs one thread, so the process's CPU time
(``time.process_time``: all its threads) counts the work a piece did, however
loaded the machine is; wall time on a shared machine counts the waiting too.
Per step of the reference setup (3072 -> 128 -> 10, ELU, batch 128, float32,
synthetic data of the training size), for numpy:cpu, jax:cpu and jax:cpu with
jax_scan, in interleaved rounds (medians over rounds, and the range over rounds
of each ratio of two backends measured in the same round):

* ``step``: one epoch of ``Backend.train_batch`` calls and the synchronize, per step;
* ``GEMM``: the step's matrix products alone (``Backend.gemm_seconds``), per step;
* ``fixed``: a step of the 8-feature, 8-unit model of ``bench.timing``; for
  jax:cpu also with each step's rows sliced from a device array instead of
  the host order ``JaxBackend.device_indices`` keeps.

Then the compiled step's instructions: its fusions and its library products.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.backends.jax_backend import JaxBackend
from bench.backends.numpy_backend import NumpyBackend
from bench.config import Config
from bench.data import make_synthetic
from bench import io
from bench.run import epoch_order
from bench.roofline import step_gemms
from bench.timing import FIXED_WIDTH

N_TRAIN, BATCH = 45_000, 128
STEPS = N_TRAIN // BATCH


def cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def epoch(backend, k: int, on_device: bool = False) -> None:
    order = backend.device_indices(epoch_order(0, k, N_TRAIN))
    if on_device:
        import jax

        order = jax.device_put(order)
    for s in range(STEPS):
        backend.train_batch(order[s * BATCH:(s + 1) * BATCH])
    backend.synchronize()
    backend.pop_step_records()


def make(cls, n_features: int, hidden: int, **kw):
    data = make_synthetic(N_TRAIN, 100, 100, n_features=n_features, n_classes=10, seed=0)
    backend = cls(Config(hidden_dims=[hidden], dataset="synthetic", train_subset=N_TRAIN, **kw))
    backend.load_data(data)
    backend.init_model(0)
    epoch(backend, 0)  # warm
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hlo", help="also write the compiled step's HLO text here")
    args = parser.parse_args()
    print(f"cores {len(os.sched_getaffinity(0))}; per step, process CPU time, median of "
          f"{args.rounds} interleaved rounds")
    kinds = {"numpy:cpu": (NumpyBackend, {}), "jax:cpu": (JaxBackend, {}),
             "jax:cpu --jax-scan": (JaxBackend, {"jax_scan": True})}
    big = {name: make(cls, 3072, 128, **kw) for name, (cls, kw) in kinds.items()}
    tiny = {name: make(cls, FIXED_WIDTH, FIXED_WIDTH, **kw) for name, (cls, kw) in kinds.items()}
    gemms = step_gemms(3072, [128], 10, BATCH)
    times: dict[str, dict[str, list[float]]] = {n: {"step": [], "GEMM": [], "fixed": []} for n in kinds}
    device_rows: list[float] = []
    for r in range(args.rounds):
        for name in kinds:
            b = big[name]
            times[name]["step"].append(cpu(lambda: epoch(b, r + 1)) / STEPS)
            # the difference of two lengths leaves out the operands' set-up and the untimed round
            times[name]["GEMM"].append((cpu(lambda: b.gemm_seconds(gemms, 2 * STEPS))
                                        - cpu(lambda: b.gemm_seconds(gemms, STEPS))) / STEPS)
            times[name]["fixed"].append(cpu(lambda: epoch(tiny[name], r + 1)) / STEPS)
        device_rows.append(cpu(lambda: epoch(tiny["jax:cpu"], r + 1, on_device=True)) / STEPS)
    print(f"| backend | step us | GEMM-only us | step - GEMM us | fixed cost us |\n|---|---|---|---|---|")
    for name, t in times.items():
        step, gemm, fixed = (statistics.median(t[k]) * 1e6 for k in ("step", "GEMM", "fixed"))
        print(f"| {name} | {step:.0f} | {gemm:.0f} | {step - gemm:.0f} | {fixed:.0f} |")
    def paired(a: str, b: str, key: str, minus_gemm: bool = False) -> str:
        """The range over rounds of a's figure over b's, each round's pair measured together."""
        part = (lambda t, i: t["step"][i] - t["GEMM"][i]) if minus_gemm else (lambda t, i: t[key][i])
        r = [part(times[a], i) / part(times[b], i) for i in range(args.rounds)]
        return f"{min(r):.2f}-{max(r):.2f}"

    j, n, sc = "jax:cpu", "numpy:cpu", "jax:cpu --jax-scan"
    print(f"per round, {j} / {n}: step {paired(j, n, 'step')}, GEMM-only {paired(j, n, 'GEMM')}, "
          f"step - GEMM {paired(j, n, '', True)}, fixed {paired(j, n, 'fixed')}; "
          f"{sc} / {j}: step {paired(sc, j, 'step')}, fixed {paired(sc, j, 'fixed')}")
    print(f"jax:cpu fixed cost with the rows sliced on the device: "
          f"{statistics.median(device_rows) * 1e6:.0f} us")
    hlo = big["jax:cpu"]._train_step.as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    ops = Counter(m.group(1) for m in re.finditer(r"= \S+ (fusion|dot|custom-call|copy)\(", entry))
    fusions = Counter(m.group(1) for m in re.finditer(r"kind=(k\w+)", entry))
    print(f"compiled step: {dict(ops)} instructions at the top level; fusion kinds {dict(fusions)}; "
          f"{entry.count('__ynn_fusion')} of the fusions are YNNPACK products")
    if args.hlo:
        io.write_text(hlo, Path(args.hlo))  # atomic: a temporary file, then a rename


if __name__ == "__main__":
    main()
