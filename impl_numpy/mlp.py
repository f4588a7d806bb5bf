"""The multi-layer perceptron built from the modules, with the shared parameter names.

Plain network (hidden_dims [H1, ..., HL]):
    a_1 = h(L0(x)); a_i = h(L_{i-1}(a_{i-1})); logits = L_L(a_L).
Residual network (hidden_dims [F, N1, F, N2, F, ...]):
    a = h(L0(x)) (the stem, n_inputs -> F); then for each pair (N_k, F) a block
    a = a + L_{2k}(h(L_{2k-1}(a))) with L_{2k-1}: F -> N_k and L_{2k}: N_k -> F
    (no activation after the sum); logits = L_last(a).
Both have the same linear layers for the same hidden_dims, named like an
``nn.ModuleList`` called ``linears``: ``linears.{i}.weight`` (out, in) and
``linears.{i}.bias`` (out,), i = 0 .. len(hidden_dims).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from impl_common.arch import check_widths, init_std, layer_widths
from impl_numpy.modules import LinearModule, Module, ResidualBlock, make_activation
from impl_numpy.xp import get_namespace, to_numpy


class MLP:
    """Linear layers with an element-wise activation between them; outputs logits.

    Shape: x (S, n_inputs) -> logits (S, n_classes).
    ``rng`` draws the weights layer by layer, 0 .. L, weight then bias (zero):
    the same seed gives the same network. ``xp`` is the array module the
    parameters live in (numpy by default, or cupy).
    """

    def __init__(self, n_inputs: int, hidden_dims: Sequence[int], n_classes: int,
                 activation: str = "elu", *, alpha: float = 1.0, residual: bool = False,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, xp: Any = None):
        dims = [int(d) if isinstance(d, np.integer) else d for d in hidden_dims]
        check_widths(n_inputs, dims, n_classes, activation, residual)
        self.n_inputs, self.hidden_dims, self.n_classes = int(n_inputs), dims, int(n_classes)
        self.activation, self.alpha, self.residual = activation, float(alpha), bool(residual)
        self.dtype = np.dtype(dtype)
        self.xp = np if xp is None else xp
        rng = np.random.default_rng() if rng is None else rng

        widths = layer_widths(self.n_inputs, dims, self.n_classes)
        self.linears = [LinearModule(widths[i], widths[i + 1], input_layer=(i == 0), rng=rng,
                                     dtype=self.dtype, xp=self.xp, std=init_std(i, widths, residual))
                        for i in range(len(widths) - 1)]
        self.layers: list[Module] = [self.linears[0], make_activation(activation, alpha)]
        if residual:
            for k in range(1, len(dims), 2):  # blocks (L_{2k-1}, h, L_{2k}) for k = 1, 2, ...
                self.layers.append(ResidualBlock(self.linears[k], make_activation(activation, alpha),
                                                 self.linears[k + 1]))
        else:
            for lin in self.linears[1:-1]:
                self.layers += [lin, make_activation(activation, alpha)]
        self.layers.append(self.linears[-1])

    # ------------------------------------------------------------ compute

    def forward(self, x):
        """x (S, n_inputs) -> logits (S, n_classes); keeps what backward needs."""
        if not (get_namespace(x) is self.xp and getattr(x, "dtype", None) == self.dtype):
            x = self.xp.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout, input_grad: bool = True):
        """dout = dL/dlogits (S, n_classes) -> dL/dx (S, n_inputs); fills every grad.

        ``input_grad=False`` skips the input layer's L3 (training needs no
        dL/dx) and returns None.
        """
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        return self.layers[0].backward(dout, input_grad=input_grad)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.clear_cache()

    __call__ = forward

    # ------------------------------------------------------------ parameters

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """("linears.{i}.weight", (out, in)) and ("linears.{i}.bias", (out,)), i = 0 .. L."""
        for i, lin in enumerate(self.linears):
            yield f"linears.{i}.weight", lin.params["weight"]
            yield f"linears.{i}.bias", lin.params["bias"]

    def named_grads(self) -> Iterator[tuple[str, Any]]:
        """The grads in the order and under the names of :meth:`named_parameters`."""
        for i, lin in enumerate(self.linears):
            yield f"linears.{i}.weight", lin.grads["weight"]
            yield f"linears.{i}.bias", lin.grads["bias"]

    def parameters(self) -> list[Any]:
        return [p for _, p in self.named_parameters()]

    def grads(self) -> list[Any]:
        return [g for _, g in self.named_grads()]

    def zero_grad(self) -> None:
        for g in self.grads():
            g[...] = 0

    def num_parameters(self) -> int:
        return sum(int(p.size) for p in self.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of the parameters under the shared names."""
        return {name: to_numpy(p).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy ``state`` in (cast to the model dtype); names and shapes must match exactly."""
        own = dict(self.named_parameters())
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"state dict does not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
        for name, p in own.items():
            shape = tuple(getattr(state[name], "shape", ()))
            if shape != p.shape:
                raise ValueError(f"state dict entry {name} has shape {shape}, the model's is {p.shape}")
        for name, p in own.items():
            value = to_numpy(state[name]) if self.xp is np else state[name]
            p[...] = self.xp.asarray(value, dtype=p.dtype)

    # ------------------------------------------------------------ display

    def __repr__(self) -> str:
        dims = " -> ".join(str(w) for w in [self.n_inputs, *self.hidden_dims, self.n_classes])
        head = (f"MLP({dims}, activation={self.activation}"
                f"{f'(alpha={self.alpha:g})' if self.activation == 'elu' else ''}, "
                f"residual={self.residual}, dtype={self.dtype.name}, "
                f"parameters={self.num_parameters():,})")
        body = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"{head}\n{body}"
