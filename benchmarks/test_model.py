"""The whole MLP 3072 -> H -> 10 (ELU) through each backend's own harness interface.

* ``train_step``: one ``Backend.train_batch(idx)`` on the same B rows with the
  same starting weights on every backend: gather the rows on the device,
  forward, fused loss, backward (no gradient for the input), SGD update; the
  loss stays on the device (the per-step records grow by one entry a call,
  as in an epoch). The weights move every call, as in training.
* ``eval_batch``: ``Backend.evaluate`` of a split of exactly B rows with
  ``eval_batch_size = B``: one forward, the loss and the accuracy, no
  gradients (torch under ``inference_mode``), ending with the host copy of
  the two numbers.

What the harness times per epoch and these do not: the per-epoch index copy
and the pop of the step records.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.config import Config
from bench.data.dataset import Dataset
from benchmarks import reference as ref
from benchmarks.inputs import N_CLASSES, N_INPUTS, SIZE_IDS, SIZES, BackendSpec, host_inputs

ACTIVATION = "elu"


def _backend(spec: BackendSpec, batch: int, hidden: int):
    """A harness backend holding B rows as every split and the shared starting weights."""
    inp = host_inputs(batch, hidden)
    config = Config(hidden_dims=[hidden], activation=ACTIVATION, batch_size=batch,
                    eval_batch_size=batch, dtype="float32", dataset="synthetic", train_subset=batch)
    if spec.impl == "numpy":
        from bench.backends.numpy_backend import NumpyBackend as cls
    elif spec.impl == "jax":
        from bench.backends.jax_backend import JaxBackend as cls
    else:
        from bench.backends.torch_backend import TorchBackend as cls
    backend = cls(config, spec.device)
    x, y = inp.x.copy(), inp.y.copy()
    backend.load_data(Dataset(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y,
                              fingerprint="benchmarks.inputs", official=False,
                              source="random float32 rows (benchmarks/inputs.py)"))
    backend.init_model(seed=0)
    backend.import_state(inp.state)  # the same weights on every backend, not two RNGs' draws
    backend.synchronize()
    return backend


def _shapes(batch: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {"x": (batch, N_INPUTS), "linears.0.weight": (hidden, N_INPUTS),
            "linears.1.weight": (N_CLASSES, hidden), "logits": (batch, N_CLASSES)}


@pytest.mark.parametrize("batch,hidden", SIZES, ids=SIZE_IDS)
def test_train_step(measure, backend: BackendSpec, batch: int, hidden: int) -> None:
    be = _backend(backend, batch, hidden)
    idx = be.device_indices(np.arange(batch))  # rows 0..B-1, on the device once

    def step() -> None:
        be.train_batch(idx)
        be.synchronize()  # JAX's step is asynchronous on the CPU too (a no-op for NumPy, torch:cpu)

    measure(step, backend, op="train_step", batch=batch, hidden=hidden, shapes=_shapes(batch, hidden),
            timed=f"{type(be).__name__}.train_batch and synchronize: gather, forward, loss, backward, "
                  f"SGD ({ACTIVATION}, lr {be.config.lr}, momentum {be.config.momentum})")
    losses = be.pop_step_records().losses
    # the first step starts from the shared weights: its loss is the reference's
    ref.assert_close(losses[0], ref.mlp_loss_acc(batch, hidden, ACTIVATION)[0], "first step's loss")
    assert np.isfinite(losses).all(), losses


@pytest.mark.parametrize("batch,hidden", SIZES, ids=SIZE_IDS)
def test_eval_batch(measure, backend: BackendSpec, batch: int, hidden: int) -> None:
    be = _backend(backend, batch, hidden)
    loss, acc = measure(lambda: be.evaluate("val"), backend, op="eval_batch", batch=batch,
                        hidden=hidden, shapes=_shapes(batch, hidden),
                        timed=f"{type(be).__name__}.evaluate of one batch: forward, loss, "
                              "accuracy, no grad")
    ref_loss, ref_acc = ref.mlp_loss_acc(batch, hidden, ACTIVATION)
    ref.assert_close(loss, ref_loss, "evaluation loss")
    assert abs(acc - ref_acc) <= 1 / batch, (acc, ref_acc)  # one near-tie argmax may flip in float32
