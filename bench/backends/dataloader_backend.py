"""The PyTorch backend fed through the classic torchvision pipeline (``torch-dataloader:<device>``).

The model, optimizer, evaluation and weight exchange are ``impl_torch``'s
(:class:`DataLoaderBackend` subclasses :class:`bench.backends.torch_backend.TorchBackend`);
only where the training batches come from differs. Instead of gathering rows
of the uint8 images already on the device, every batch is produced the way
the tutorials teach: a torchvision-style dataset over the uint8 training
images (HWC array -> ``PIL.Image`` -> ``ToTensor`` -> ``Normalize`` ->
flatten, one sample at a time), collated by a ``DataLoader`` with
``drop_last`` and ``num_workers = config.dataloader_workers``, then copied to
the device. The epoch clock covers all of it; each epoch records how long the
loop waited for batches (``data_seconds``) and the rest (``compute_seconds``).
What cannot be made identical and how it is handled: docs/peers.md.

Needs the ``peers`` extra; importing this module without torchvision raises
ImportError, which the registry turns into a one-line error naming the extra.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler

try:
    import torchvision
    from torchvision import transforms
except RuntimeError as exc:  # e.g. "operator torchvision::nms does not exist": built for another torch
    raise ImportError(f"torchvision does not load beside torch {torch.__version__} ({exc}); install the "
                      "two from one index, e.g. for the CPU: pip install torch torchvision --index-url "
                      "https://download.pytorch.org/whl/cpu") from None

from bench.backends.api import StepRecords
from bench.config import Config
from bench.data.dataset import Dataset
from bench.errors import UserError
from bench.backends.torch_backend import TorchBackend
from bench.backends.torch_device import available  # noqa: F401  (the registry looks it up here)

IMAGE_SHAPE = (3, 32, 32)  # CHW of one CIFAR-10 record


class Flatten:
    """(C, H, W) -> (C*H*W,) in CHW order, the layout of the in-memory rows (picklable for workers)."""

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return torch.flatten(t)

    def __repr__(self) -> str:
        return "Flatten()"


def make_transform(mean: tuple[float, float, float], std: tuple[float, float, float]) -> transforms.Compose:
    """PIL image (H, W, 3) uint8 -> ``ToTensor`` (3, H, W) in [0, 1] -> ``Normalize`` -> flat (3*H*W,)."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std), Flatten()])


class CifarStyleImages(torch.utils.data.Dataset):
    """The images as torchvision's ``datasets.CIFAR10`` serves them, from arrays already in memory.

    Like ``CIFAR10``, it keeps the images as an (S, 32, 32, 3) HWC uint8 view
    and makes a ``PIL.Image`` of one in ``__getitem__`` before the transform.
    ``raw`` is (S, 3072) uint8 in CHW record order (``Dataset.raw_train``).
    """

    def __init__(self, raw: np.ndarray, targets: np.ndarray, transform: Any):
        if raw.ndim != 2 or raw.shape[1] != int(np.prod(IMAGE_SHAPE)) or raw.dtype != np.uint8:
            raise ValueError(f"raw images must be uint8 (S, 3072), got {raw.dtype} {raw.shape}")
        self.data = raw.reshape(-1, *IMAGE_SHAPE).transpose(0, 2, 3, 1)  # (S, 32, 32, 3) HWC view
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.data[i])  # (32, 32, 3) uint8 -> RGB image
        return self.transform(img), self.targets[i]


class EpochOrder(Sampler[int]):
    """The harness's row order for the current epoch, as a DataLoader sampler (set per epoch)."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def set_order(self, order: np.ndarray) -> None:
        self.order = np.asarray(order, dtype=np.int64).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class DataLoaderBackend(TorchBackend):
    """TorchBackend whose training batches come from a torchvision-style DataLoader pipeline."""

    impl = "torch-dataloader"
    gather = None  # no gather by row index: the batches come from the DataLoader (data_seconds)

    def __init__(self, config: Config, device: str = "cpu"):
        if config.cuda_graph:
            raise UserError(f"backend torch-dataloader:{device} cannot run as a CUDA graph (its "
                            "batches come from a DataLoader); drop --cuda-graph or leave "
                            "torch-dataloader out")
        super().__init__(config, device)
        self._batch_source = self._next_batch  # the step takes the DataLoader's batches
        self.pin_memory = self.dev.type == "cuda"
        self._sampler = EpochOrder()
        self._loader: DataLoader | None = None
        self._batches: Iterator | None = None  # the current epoch's DataLoader iterator
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0                       # rows of the current order handed out so far
        self._data_seconds = 0.0
        self._started: float | None = None    # perf_counter at the first train_batch since a pop
        self._wall = 0.0                       # first train_batch to the end of the last synchronize

    # ------------------------------------------------------------ data and model

    def load_data(self, data: Dataset) -> None:
        """The in-memory splits (for evaluation) as TorchBackend has them, and the training pipeline."""
        width = int(np.prod(IMAGE_SHAPE))
        if data.raw_train is None or data.raw_train.shape[1] != width:
            has = "none" if data.raw_train is None else f"{data.raw_train.shape[1]} pixels a row"
            raise UserError(f"backend torch-dataloader needs the uint8 training images of "
                            f"{width} pixels a row (Dataset.raw_train); this dataset has {has}")
        super().load_data(data)
        self.mean, self.std = tuple(data.mean), tuple(data.std)
        images = CifarStyleImages(data.raw_train, data.y_train, make_transform(self.mean, self.std))
        self._loader = DataLoader(images, batch_size=self.config.batch_size, sampler=self._sampler,
                                  drop_last=True, num_workers=self.config.dataloader_workers,
                                  pin_memory=self.pin_memory)

    def init_model(self, seed: int) -> None:
        """TorchBackend's model, optimizer and step for ``seed``, the step fed by the DataLoader."""
        super().init_model(seed)
        self._reset_timers()

    # ------------------------------------------------------------ training

    def device_indices(self, order: np.ndarray) -> np.ndarray:
        """Hand the epoch's order to the DataLoader's sampler; the batches are produced later.

        The iterator (and its worker processes) is started by the first
        :meth:`train_batch`, inside the epoch clock, as a ``for`` loop over
        the loader starts it in every epoch.
        """
        self._batches = None  # an unfinished earlier iterator stops here (its workers exit)
        self._order = np.ascontiguousarray(order, dtype=np.int64)
        self._sampler.set_order(self._order)
        self._cursor = 0
        return self._order

    # train_batch is TorchBackend's: its step calls _next_batch for the rows

    def _next_batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The DataLoader's next batch (the rows ``idx``, checked), on the device; the wait is timed."""
        t0 = time.perf_counter()
        if self._started is None:
            self._started = t0
        if self._batches is None:
            self._batches = iter(self._loader)
        x, y = next(self._batches)  # (S, 3072) float32, (S,) int64, produced by the pipeline
        self._data_seconds += time.perf_counter() - t0
        n = len(idx)
        if not np.array_equal(idx, self._order[self._cursor:self._cursor + n]) or len(y) != n:
            raise RuntimeError(f"torch-dataloader: the harness asked for rows {self._cursor}.."
                               f"{self._cursor + n} of the epoch order out of turn, or the "
                               f"DataLoader gave {len(y)} rows")
        self._cursor += n
        # the host-to-device copy of every batch is part of the pipeline (a no-op on the CPU in float32)
        return (x.to(self.dev, self.dtype, non_blocking=self.pin_memory),
                y.to(self.dev, non_blocking=self.pin_memory))

    def synchronize(self) -> None:
        """Wait for the device; once the order is used up, end the iterator (its workers exit)."""
        super().synchronize()
        if self._cursor == len(self._order):
            self._batches = None
        if self._started is not None:
            self._wall = time.perf_counter() - self._started

    def pop_step_records(self) -> StepRecords:
        """TorchBackend's records plus this epoch's ``data_seconds`` and ``compute_seconds``."""
        extra = {"data_seconds": self._data_seconds,                  # waiting in next(loader)
                 "compute_seconds": self._wall - self._data_seconds}  # the rest of the epoch
        rec = super().pop_step_records()
        rec.extra = extra
        self._reset_timers()
        return rec

    def _reset_timers(self) -> None:
        self._data_seconds, self._started, self._wall = 0.0, None, 0.0

    # ------------------------------------------------------------ measurement

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "impl": self.impl, "torchvision_version": torchvision.__version__,
                "pipeline": "uint8 HWC -> PIL.Image -> ToTensor -> Normalize -> flatten, per sample; "
                            "DataLoader(sampler=the harness's order, drop_last=True)",
                "dataloader_workers": self.config.dataloader_workers, "pin_memory": self.pin_memory,
                "transform": repr(self._loader.dataset.transform) if self._loader else None}
