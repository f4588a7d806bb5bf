"""The MLP in idiomatic PyTorch (the yardstick), and its harness backend in ``impl_torch.backend``."""

from impl_torch.model import TorchMLP, forward_loss, make_activation

__all__ = ["TorchMLP", "forward_loss", "make_activation"]
