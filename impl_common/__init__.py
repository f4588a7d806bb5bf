"""What both MLP implementations agree on before any arithmetic: the architecture (``impl_common.arch``).

It sits below ``impl_numpy`` and ``impl_torch`` (both import it) and imports
neither of them, nor the harness.
"""

from impl_common.arch import ACTIVATIONS, Arch, layer_widths, residual_dims_ok, residual_example

__all__ = ["ACTIVATIONS", "Arch", "layer_widths", "residual_dims_ok", "residual_example"]
