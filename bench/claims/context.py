"""What the claim groups share while the command runs: the config, the data, the folder, the log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.config import Config
from bench.data.dataset import Dataset
from bench.datasource import load_for_config
from bench.results import ResultsFolder


@dataclass
class Context:
    config: Config
    folder: ResultsFolder
    log: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)  # what one group leaves for another
    interrupted: bool = False  # a group stopped early on Ctrl-C / SIGTERM, keeping what it measured
    official: bool = False     # the data is the official CIFAR-10 (set by every load; one source for all)
    _data: tuple[int, Dataset] | None = None

    def data(self, seed: int) -> Dataset:
        """The splits for ``seed`` (the validation split is drawn by the seed); the last one is kept."""
        if self._data is None or self._data[0] != seed:
            self._data = None  # free the old splits before loading the new ones
            self._data = (seed, load_for_config(self.config, seed, progress=False))
            self.official = bool(self._data[1].official)
        return self._data[1]

    @property
    def theory_seeds(self) -> list[int]:
        """The seeds of claims 6-8: the first ``theory_seeds`` of ``seeds``."""
        return self.config.seeds[:self.config.theory_seeds]
