"""The PyTorch backend of the harness (``bench.backends.api.Backend``), on any torch device.

The data moves to the device once (:meth:`TorchBackend.load_data`); each
epoch's row order is one host-to-device copy; every step gathers its batch on
the device (:meth:`TorchBackend.gather`: from the normalised split, or from
the uint8 images, normalising it as it is gathered) and leaves its loss and
correct count there, so no step waits for the device. Optional speed-ups, off by default and recorded by
:meth:`TorchBackend.describe`: ``torch_compile`` (a compiled forward + loss),
``cuda_graph`` (the whole step replayed as one CUDA graph) and ``tf32``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.backends import torch_device as devices
from bench.backends.api import StepRecords
from bench.backends.gather import chunked_evaluate, upload_splits
from bench.backends.torch_device import available  # noqa: F401  (the registry looks it up here)
from bench.backends.torch_steps import EagerStep, GraphedStep, compiled_step
from bench.config import Config
from bench.data.dataset import Dataset, normalise_into
from bench.errors import UserError
from bench.roofline import Gemm, time_products
from impl_torch.model import TorchMLP

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchBackend:
    """One TorchMLP, its SGD optimizer and the dataset, all on ``device``."""

    impl = "torch"

    def __init__(self, config: Config, device: str = "cpu"):
        self.config = config
        self.device = device
        self.dev = torch.device(device)
        self.dtype = DTYPES[config.dtype]
        cuda = self.dev.type == "cuda"
        if config.cuda_graph and not cuda:
            raise UserError(f"cuda_graph needs a CUDA device (backend torch:{device})")
        if config.cuda_graph and config.torch_compile != "none":
            raise UserError(f"cuda_graph and torch_compile={config.torch_compile} are alternative "
                            "speed-ups; choose one")
        # NOTE: TF32 is a CUDA setting; entered around every matmul-running call on CUDA only
        self._precision = devices.Tf32Matmul(config.tf32) if cuda else nullcontext()
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the evaluated splits
        self._train: tuple | None = None  # (images, labels, (shift, scale) rows or None) on the device
        self._batch_source = self.gather  # where the step takes its batches from
        self.model: TorchMLP | None = None
        self.optimizer: torch.optim.SGD | None = None
        self._step: EagerStep | GraphedStep | None = None
        # per-step 0-d device tensors since the last pop; appending costs no device work
        self._losses: list[torch.Tensor] = []
        self._corrects: list[torch.Tensor] = []
        self._seen = 0

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        """To the device once: the training images as they are gathered from (``Config.gather_from``:
        the normalised split, or the uint8 images and their normalisation rows), the val and test
        splits as the config dtype; every y as int64."""
        images, norm = data.train_source(np.dtype(self.config.dtype), self.config.gather_from == "uint8")
        self._train = (_to_device(images, self.dev, torch.uint8 if norm else self.dtype),
                       _to_device(data.y_train, self.dev, torch.int64),
                       None if norm is None else tuple(_to_device(r, self.dev, self.dtype) for r in norm))
        self._splits = upload_splits(data, lambda x: _to_device(x, self.dev, self.dtype),
                                     lambda y: _to_device(y, self.dev, torch.int64))
        self.n_features, self.n_classes = data.n_features, data.n_classes
        if self.dev.type == "cuda":
            devices.synchronize(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)

    def init_model(self, seed: int) -> None:
        """A fresh TorchMLP drawn from a CPU ``torch.Generator`` seeded with ``seed``, and its SGD."""
        if self._train is None:
            raise RuntimeError("TorchBackend.init_model: call load_data first")
        c = self.config
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.model = TorchMLP(self.n_features, c.hidden_dims, self.n_classes, c.activation,
                              alpha=c.alpha, residual=c.residual, generator=gen,
                              dtype=self.dtype, device=self.dev)
        # NOTE: foreach applies the update to all parameters in one multi-tensor kernel on CUDA
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                         weight_decay=c.weight_decay, foreach=True)
        if c.torch_compile != "none":
            self._step = compiled_step(self.model, self.optimizer, self._batch_source, c.torch_compile,
                                       self.dev)
        else:
            self._step = EagerStep(self.model, self.optimizer, self._batch_source)
            if c.cuda_graph:
                self._step = GraphedStep(self._step, c.batch_size, self.dev)
        self._reset_records()

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> torch.Tensor:
        """One epoch's row order on the device: the one host-to-device copy of the epoch."""
        return torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)).to(self.dev)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training rows ``idx`` gathered on the device (uint8 rows normalised as gathered): (S, F), (S,)."""
        images, labels, norm = self._train
        x = images.index_select(0, idx)                                    # (S, F)
        if norm is not None:
            x = normalise_into(torch.empty(x.shape, dtype=self.dtype, device=self.dev), x, *norm)
        return x, labels.index_select(0, idx)                              # (S, F), (S,)

    def train_batch(self, idx: torch.Tensor) -> None:
        """One SGD step on rows ``idx``; the loss and correct count stay on the device."""
        with self._precision:
            loss, correct = self._step(idx)
            if not self._step.owns_outputs:  # a graph's outputs are overwritten by its next replay
                loss, correct = loss.clone(), correct.clone()
        self._losses.append(loss)
        self._corrects.append(correct)
        self._seen += idx.shape[0]

    def pop_step_records(self) -> StepRecords:
        """The steps since the last pop: one device-to-host copy (the only sync)."""
        if not self._losses:
            return StepRecords(losses=np.zeros(0), correct=0, seen=0)
        # [loss_1 .. loss_n, sum of correct] in float64 (exact for counts < 2**53), one copy
        packed = torch.cat([torch.stack(self._losses).double(),
                            torch.stack(self._corrects).sum().double().view(1)]).cpu().numpy()
        rec = StepRecords(losses=packed[:-1].copy(), correct=int(packed[-1]), seen=self._seen)
        self._reset_records()
        return rec

    def synchronize(self) -> None:
        devices.synchronize(self.dev)

    # ------------------------------------------------------------ evaluation and state

    def evaluate(self, split: str) -> tuple[float, float]:
        """(mean loss, accuracy) on ``split``, in chunks of eval_batch_size, without autograd."""
        def sums(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # kept on the device
            logits = self.model(x)                                                           # (C, n_classes)
            return F.cross_entropy(logits, y, reduction="sum").double(), (logits.argmax(1) == y).sum()  # F1
        with torch.inference_mode(), self._precision:
            return chunked_evaluate(self._splits, split, self.config.eval_batch_size, sums)

    def export_state(self) -> dict[str, np.ndarray]:
        return self.model.export_state()

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy the weights in place and restart the optimizer's momentum."""
        self.model.import_state(state)
        self._step.reset_optimizer()

    # ------------------------------------------------------------ measurement

    def gemm_seconds(self, shapes: list[Gemm], repeats: int) -> float:
        """Seconds for ``repeats`` rounds of the products alone with ``torch.mm`` (bench.roofline)."""
        dev, dtype = self.dev, self.dtype
        with self._precision:
            return time_products(shapes, repeats,
                                 operand=lambda a: torch.from_numpy(a).to(device=dev, dtype=dtype),
                                 transpose=lambda a: a.t(),
                                 empty=lambda shape: torch.empty(shape, dtype=dtype, device=dev),
                                 matmul=lambda a, b, c: torch.mm(a, b, out=c),
                                 synchronize=lambda: devices.synchronize(dev))

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"impl": self.impl, "device": self.device, **devices.device_info(self.dev),
                "dtype": c.dtype, "torch_compile": c.torch_compile, "cuda_graph": c.cuda_graph,
                "tf32": c.tf32 and self.dev.type == "cuda", "optimizer": "torch.optim.SGD(foreach)"}

    def peak_memory_bytes(self) -> int | None:
        """Peak CUDA memory allocated since load_data; None on other devices."""
        if self.dev.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.dev))

    def _reset_records(self) -> None:
        self._losses, self._corrects, self._seen = [], [], 0


def _to_device(a: np.ndarray, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``a`` as a tensor on ``dev``; on CPU with the same dtype it shares the array's memory."""
    t = torch.from_numpy(np.ascontiguousarray(a)) if a.flags.writeable else torch.tensor(a)
    return t.to(device=dev, dtype=dtype)
