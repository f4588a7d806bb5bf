"""Command-line plumbing shared by ``bench.gradflow`` and ``bench.hessian``.

Both commands take every ``Config`` flag, but each sets some fields itself
(gradflow sweeps the architecture; both run one seed). A Config field the
command sets is an error when given (flag or TOML key), never silently
ignored; a command may also have its own default for a field the user did not
give (written in its ``COMMAND_DEFAULTS``, shown by ``--help``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from bench.compare import output_dir
from bench.config import FIELDS, Config, config_from_args, load_toml
from bench.errors import UserError


def given_fields(args: argparse.Namespace) -> set[str]:
    """The Config fields the user set, by flag or in the ``--config`` TOML file."""
    given = {name for name in FIELDS if name in vars(args)}
    if getattr(args, "config", None):
        given |= set(load_toml(args.config))
    return given


def command_config(args: argparse.Namespace, *, prog: str, owned: dict[str, str],
                   defaults: dict[str, Any]) -> Config:
    """The validated Config of one command run.

    ``owned``: field -> what to use instead (the command sets the field; giving
    it is a one-line error). ``defaults``: field -> the command's own default,
    used where the user gave none. Exactly one seed is allowed.
    """
    given = given_fields(args)
    for name, instead in owned.items():
        if name in given:
            raise UserError(f"{prog} sets {name} itself; {instead}")
    config = config_from_args(args)
    unset = {k: v for k, v in defaults.items() if k not in given}
    if unset:
        config = dataclasses.replace(config, **unset).validate()
    if len(config.seeds) != 1:
        raise UserError(f"{prog} runs one seed at a time; got seeds {config.seeds} "
                        "(run it once per seed)")
    return config


def make_output_dir(out: str | None, config: Config, label: str) -> Path:
    """A new results folder (``results/<timestamp>_<label>/`` by default); never an existing run."""
    path = output_dir(out, config, [label])
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path}: {exc.strerror}") from None
    return path


def positive_int(name: str, low: int = 1):
    """An argparse type: an integer >= ``low``, with a one-line message naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name}: {text!r} (allowed: an integer >= {low})") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"invalid {name}: {value} (allowed: an integer >= {low})")
        return value
    return parse


def positive_float(name: str):
    """An argparse type: a finite number > 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value > 0 and value != float("inf")):
            raise argparse.ArgumentTypeError(f"invalid {name}: {text!r} (allowed: a number > 0)")
        return value
    return parse


def data_info(data) -> dict[str, Any]:
    return {"source": data.source, "official": data.official, "fingerprint": data.fingerprint,
            "n_train": len(data.y_train), "n_val": len(data.y_val),
            "n_test": len(data.y_test)}
