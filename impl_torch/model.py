"""The MLP in idiomatic PyTorch: ``nn.Linear`` layers, activation modules, a plain or residual stack.

Parameters are named and shaped exactly as in the NumPy MLP (``impl_numpy``):
``linears.{i}.weight`` (out, in) and ``linears.{i}.bias`` (out,), i = 0 for
the input layer up to len(hidden_dims) for the output layer, so weights move
between the two as a plain copy (:meth:`TorchMLP.export_state` /
:meth:`TorchMLP.import_state`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from impl_common.arch import ACTIVATIONS, check_widths, init_std, layer_widths


def make_activation(name: str, alpha: float = 1.0) -> nn.Module:
    """The activation module for ``name`` ("elu" with ``alpha``, "relu", "tanh")."""
    if name == "elu":
        return nn.ELU(alpha=alpha)
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {name!r} (allowed: {', '.join(ACTIVATIONS)})")


class TorchMLP(nn.Module):
    """A multi-layer perceptron for flat inputs, plain or with residual blocks.

    Plain: ``a = h(L0(x))``, then ``a = h(Li(a))`` for every further hidden
    layer, ``logits = L_last(a)``.

    Residual (``residual=True``): ``hidden_dims`` must be [F, N1, F, N2, F, ...].
    The stem is ``a = h(L0(x))``; block k then computes
    ``a = a + L_{2k}(h(L_{2k-1}(a)))`` with L_{2k-1}: F -> N_k and L_{2k}: N_k -> F,
    no activation after the sum (docs/derivations.md §6); ``logits = L_last(a)``. The
    layers, names and shapes are those of the plain net with the same hidden_dims.

    Init (:meth:`reset_parameters`): Kaiming-normal on fan-in, ``N(0, 2/fan_in)``
    for every layer except the input layer, which gets ``N(0, 1/fan_in)`` (no
    ReLU gain on raw pixels); in a residual net the first layer of each of the
    K blocks gets ``N(0, 2/(K fan_in))`` and the last layer zero weights
    (``impl_common.arch.init_std``, docs/derivations.md R2); zero biases.
    Drawn layer by layer from ``generator``, never from the global RNG.

    Shape:
        input (S, n_inputs) -> logits (S, n_classes).
    """

    def __init__(self, n_inputs: int, hidden_dims: Sequence[int], n_classes: int,
                 activation: str = "elu", *, alpha: float = 1.0, residual: bool = False,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        super().__init__()
        hidden_dims = [int(d) for d in hidden_dims]
        check_widths(n_inputs, hidden_dims, n_classes, activation, residual)
        self.n_inputs, self.hidden_dims, self.n_classes = n_inputs, hidden_dims, n_classes
        self.activation, self.alpha, self.residual = activation, alpha, residual
        widths = layer_widths(n_inputs, hidden_dims, n_classes)
        # NOTE: skip_init builds the layers without nn.Linear's own (global-RNG) init;
        # reset_parameters below is the only init.
        self.linears = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, m_in, n_out, device=device, dtype=dtype)
            for m_in, n_out in zip(widths[:-1], widths[1:]))
        self.act = make_activation(activation, alpha)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw every weight from ``generator`` (a fresh OS-seeded one if None); zero biases.

        The draws happen on the generator's device and are then copied, so a
        CPU generator with a given seed gives the same weights on every device.
        """
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        widths = layer_widths(self.n_inputs, self.hidden_dims, self.n_classes)
        for i, lin in enumerate(self.linears):
            std = init_std(i, widths, self.residual)  # Kaiming; a residual block's layers: R2
            w = torch.empty(lin.weight.shape, dtype=lin.weight.dtype, device=generator.device)
            lin.weight.copy_(w.normal_(0.0, std, generator=generator))  # (out, in)
            lin.bias.zero_()                                              # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act
        a = h(self.linears[0](x))                                  # (S, hidden_dims[0])
        if self.residual:
            for k in range(1, len(self.linears) - 1, 2):
                a = a + self.linears[k + 1](h(self.linears[k](a)))  # R: x + f(x), (S, F)
        else:
            for lin in self.linears[1:-1]:
                a = h(lin(a))                                      # (S, hidden_dims[i])
        return self.linears[-1](a)                                 # (S, n_classes)

    def extra_repr(self) -> str:
        act = f"elu(alpha={self.alpha})" if self.activation == "elu" else self.activation
        return (f"{self.n_inputs} -> {self.hidden_dims} -> {self.n_classes}, {act}, "
                f"residual={self.residual}")

    # ------------------------------------------------------------ shared-name state

    def export_state(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter under the shared names (``state_dict`` order)."""
        return {name: t.detach().cpu().numpy().copy() for name, t in self.state_dict().items()}

    @torch.no_grad()
    def import_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters in place (their storage is kept, for graphs).

        Raises ValueError naming every missing, unexpected or wrongly shaped entry.
        """
        own = self.state_dict()
        problems = [f"missing {n}" for n in own if n not in state]
        problems += [f"unexpected {n}" for n in state if n not in own]
        problems += [f"{n} has shape {tuple(np.shape(state[n]))}, expected {tuple(t.shape)}"
                     for n, t in own.items() if n in state and tuple(np.shape(state[n])) != tuple(t.shape)]
        if problems:
            raise ValueError("import_state: " + "; ".join(problems))
        for name, t in own.items():
            t.copy_(torch.tensor(np.asarray(state[name])))  # torch.tensor copies: no read-only warning


def forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, correct predictions) of one batch; both 0-d tensors on the device.

    F.cross_entropy fuses log-softmax and NLL (docs/derivations.md F1): the loss is
    ``logsumexp(z) - z_y`` and its gradient ``(p - onehot(y)) / S``.
    """
    logits = model(x)                       # (S, n_classes)
    loss = F.cross_entropy(logits, y)       # F1, ()
    correct = (logits.argmax(1) == y).sum()  # (), int64, not differentiable
    return loss, correct
