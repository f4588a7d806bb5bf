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
BatchFn = Callable[[Tensor], tuple[Tensor, Tensor]]


class EagerStep:
    """zero_grad, the batch of rows ``idx`` from ``batch``, forward + loss, backward, optimizer step.

    ``batch(idx)`` gives the batch on the device, (S, n_inputs) and (S,): the
    backend's gather, or a peer's own pipeline. ``forward`` may be a
    ``torch.compile``'d forward-and-loss (``compile_mode`` names its mode): a
    compiler failure on the first step is then a :class:`UserError` naming the
    reason, not a silent fall-back to eager. With ``mark_step`` every call
    first marks a new cudagraph-tree iteration (its outputs are then
    overwritten by the next step: ``owns_outputs`` is False).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: BatchFn,
                 forward: ForwardFn = forward_loss, *, compile_mode: str | None = None,
                 mark_step: bool = False):
        self.model, self.optimizer, self.batch = model, optimizer, batch
        self.forward = forward
        self.compile_mode, self.mark_step = compile_mode, mark_step
        self.owns_outputs = not mark_step  # each call returns fresh tensors unless cudagraph trees run
        self._checked = compile_mode is None

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        if self.mark_step:  # a new cudagraph-tree iteration: the last step's outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        x, y = self.batch(idx)
        if self._checked:
            return self.step(x, y)
        try:
            out = self.step(x, y)
        except Exception as exc:  # any compiler failure: report it, do not fall back
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise UserError(f"torch.compile(mode={self.compile_mode!r}) failed on {x.device}: "
                            f"{type(exc).__name__}: {first}") from exc
        self._checked = True
        return out

    def step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One SGD step on the batch (x, y); (loss, correct) as 0-d device tensors."""
        # NOTE: set_to_none lets backward write fresh gradients instead of adding to zeroed ones
        self.optimizer.zero_grad(set_to_none=True)
        loss, correct = self.forward(self.model, x, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), correct

    def reset_optimizer(self) -> None:
        """Forget the momentum buffers (the next step starts them afresh, as a new optimizer would)."""
        self.optimizer.state.clear()


def compiled_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: BatchFn, mode: str,
                  device: torch.device) -> EagerStep:
    """EagerStep with the forward and loss under ``torch.compile(mode=...)``.

    Backward runs the AOTAutograd-compiled backward; the optimizer step stays
    eager. With "reduce-overhead" / "max-autotune" on CUDA, forward and backward
    replay as cudagraph trees; every step is marked as a new iteration.
    """
    return EagerStep(model, optimizer, batch, torch.compile(forward_loss, mode=mode, fullgraph=True),
                     compile_mode=mode,
                     mark_step=device.type == "cuda" and mode in ("reduce-overhead", "max-autotune"))


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
