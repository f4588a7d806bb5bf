"""The command-line plumbing every command shares: its parser from the Config, --out, --quiet."""

from __future__ import annotations

from bench.config import add_config_arguments, prog_name
from bench.errors import OneLineArgumentParser


def command_parser(command: str, description: str, *, out_default: str | None = None,
                   quiet: bool = True) -> OneLineArgumentParser:
    """A parser with the command's Config flags (``bench.config.COMMAND_FIELDS``), ``--out`` and ``--quiet``."""
    parser = OneLineArgumentParser(prog=prog_name(command), description=description)
    add_config_arguments(parser, command)
    default = out_default or f"results/<timestamp>_{command}/"
    parser.add_argument("--out", metavar="DIR", help="output folder; must not exist yet, or be empty "
                        f"(default: {default})")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser
