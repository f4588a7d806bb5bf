"""One SGD step on a batch of row indices: eager, with a torch.compile'd forward, or as a CUDA graph.

Every variant returns ``(loss, correct)`` as 0-d device tensors and never
synchronises the device; the caller copies them into its records at once
(the graph and cudagraph-tree variants overwrite them on the next step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bench.errors import UserError
from impl_torch import forward_loss

ForwardFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


class EagerStep:
    """zero_grad, gather the batch on the device, forward + loss, backward, optimizer step."""

    owns_outputs = True  # each call returns fresh tensors

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x_train: Tensor,
                 y_train: Tensor, forward: ForwardFn = forward_loss):
        self.model, self.optimizer = model, optimizer
        self.x_train, self.y_train = x_train, y_train  # (S_train, n_inputs), (S_train,) on the device
        self.forward = forward

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        # NOTE: set_to_none lets backward write fresh gradients instead of adding to zeroed ones
        self.optimizer.zero_grad(set_to_none=True)
        x = self.x_train.index_select(0, idx)  # (S, n_inputs), a gather on the device
        y = self.y_train.index_select(0, idx)  # (S,)
        loss, correct = self.forward(self.model, x, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), correct

    def reset_optimizer(self) -> None:
        """Forget the momentum buffers (the next step starts them afresh, as a new optimizer would)."""
        self.optimizer.state.clear()


class CompiledStep(EagerStep):
    """EagerStep with the forward and loss under ``torch.compile(mode=...)``.

    Backward runs the AOTAutograd-compiled backward; the optimizer step stays
    eager. With "reduce-overhead" / "max-autotune" on CUDA, forward and backward
    replay as cudagraph trees; every step is marked as a new iteration. A
    compile failure on the first step is a :class:`UserError` naming the
    reason, not a silent fall-back to eager.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x_train: Tensor,
                 y_train: Tensor, mode: str):
        super().__init__(model, optimizer, x_train, y_train,
                         forward=torch.compile(forward_loss, mode=mode, fullgraph=True))
        self.mode = mode
        self.mark_step = x_train.device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        self.owns_outputs = not self.mark_step  # cudagraph-tree outputs are overwritten next step
        self.compiled = False

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        if self.mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        if self.compiled:
            return super().__call__(idx)
        try:
            out = super().__call__(idx)
        except Exception as exc:  # any compiler failure: report it, do not fall back
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise UserError(f"torch.compile(mode={self.mode!r}) failed on "
                            f"{self.x_train.device}: {type(exc).__name__}: {first}") from exc
        self.compiled = True
        return out


class GraphedStep:
    """A whole EagerStep (forward, loss, backward, optimizer step) captured as one CUDA graph.

    The first call warms up on a side stream, captures, then restores the
    weights and zeroes the momentum buffers, so warm-up leaves no trace.
    Every call copies the batch's indices into a static device buffer and
    replays the graph. Every batch must have ``batch_size`` rows.

    ``torch.optim.SGD`` has no step counter, hence no ``capturable`` flag: it is
    capturable once its momentum buffers exist, which the warm-up ensures.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before capture, as the CUDA-graph docs do
    owns_outputs = False  # the static outputs are overwritten by the next replay

    def __init__(self, step: EagerStep, batch_size: int, device: torch.device):
        self.step = step
        self.device = device
        self.static_idx = torch.zeros(batch_size, dtype=torch.int64, device=device)  # (S,)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_loss: Tensor | None = None
        self.static_correct: Tensor | None = None
        self._on_device = torch.cuda.device(device)

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        if idx.shape[0] != self.static_idx.shape[0]:
            raise ValueError(f"cuda_graph: a batch of {idx.shape[0]} rows; the graph was built "
                             f"for {self.static_idx.shape[0]}")
        with self._on_device:
            self.static_idx.copy_(idx)
            if self.graph is None:
                self._capture()
            self.graph.replay()
        return self.static_loss, self.static_correct

    def _capture(self) -> None:
        params = list(self.step.model.parameters())
        saved = [p.detach().clone() for p in params]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                self.step(self.static_idx)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss, self.static_correct = self.step(self.static_idx)
        self.graph = graph
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        self.reset_optimizer()

    def reset_optimizer(self) -> None:
        """Zero the momentum buffers in place once captured (the graph holds their addresses).

        With dampening 0, a zero buffer gives ``b_1 = mu * 0 + g_1 = g_1``: the
        same first step as a fresh optimizer.
        """
        if self.graph is None:
            self.step.reset_optimizer()
            return
        with torch.no_grad():
            for state in self.step.optimizer.state.values():
                buf = state.get("momentum_buffer")
                if buf is not None:
                    buf.zero_()
