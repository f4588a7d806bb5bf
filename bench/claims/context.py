"""What the claim groups share while the command runs: the runner's context, the log, what one group
leaves for another."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.data.dataset import Dataset


@dataclass
class Context:
    run: Any                    # bench.runner.Context: the config, the claims' settings, the folder, the data
    log: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)  # what one group leaves for another
    interrupted: bool = False  # a group stopped early on Ctrl-C / SIGTERM, keeping what it measured
    official: bool = False     # the data is the official CIFAR-10 (set by every load; one source for all)

    @property
    def config(self):
        return self.run.config

    @property
    def settings(self):
        return self.run.settings

    @property
    def folder(self):
        return self.run.folder

    def data(self, seed: int) -> Dataset:
        """The splits for ``seed`` (the validation split is drawn by the seed); the last one is kept."""
        data = self.run.data(seed)
        self.official = bool(data.official)
        return data

    @property
    def data_words(self) -> str:
        """What the data is, for a reason that depends on it: empty for the official CIFAR-10."""
        if self.config.dataset == "synthetic":
            return "on synthetic data (a smoke test of the command, not CIFAR-10): "
        return "" if self.official else "on the unofficial stand-in copy: "

    @property
    def theory_seeds(self) -> list[int]:
        """The seeds of claims 6-8: the first ``theory_seeds`` of ``seeds``."""
        return self.config.seeds[:self.settings.theory_seeds]
