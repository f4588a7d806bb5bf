"""The MLP in JAX (``jax.numpy`` + ``jax.grad`` + ``jax.jit``), the third column beside NumPy and PyTorch.

Nothing here imports the harness (``bench``); the harness adapts this package
in ``bench/backends/jax_backend.py``. Needs the ``jax`` extra.
"""

from impl_jax.model import (
    ACTIVATIONS,
    SGD,
    cross_entropy,
    forward,
    init_params,
    jit_evaluate,
    jit_train_step,
    linear,
    loss_and_correct,
    precision,
    take_rows,
    train_step,
    train_steps,
    zero_velocity,
)

__all__ = ["ACTIVATIONS", "SGD", "cross_entropy", "forward", "init_params", "jit_evaluate",
           "jit_train_step", "linear", "loss_and_correct", "precision", "take_rows", "train_step",
           "train_steps", "zero_velocity"]
