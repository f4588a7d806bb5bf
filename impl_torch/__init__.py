"""The MLP in idiomatic PyTorch, the yardstick for the NumPy one.

Nothing here imports the harness (``bench``); the harness adapts this package
in ``bench/backends/torch_backend.py`` (and its training steps in
``bench/backends/torch_steps.py``).
"""

from impl_torch.model import TorchMLP, forward_loss, make_activation

__all__ = ["TorchMLP", "forward_loss", "make_activation"]
