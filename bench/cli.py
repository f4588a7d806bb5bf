"""The command line and the TOML file of every command, generated from its settings dataclasses.

A command reads some fields of :class:`~bench.config.Config` (``COMMAND_FIELDS``)
and every field of its own settings class (``SETTINGS``); :func:`build_parser`
makes one flag per field (``--flag-name``; lists take ``1 2`` or ``1,2``,
booleans ``--x``/``--no-x``, optional values ``none``), each help showing the
effective default once, and :func:`load_toml` accepts the same names as flat
keys. A flag is never abbreviated, and a misspelled flag, choice or key gets
the closest right one. :func:`settings_from_args` applies the precedence:
defaults < the command's preset < ``--config FILE`` < flags, and validates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

from bench.config import COMMAND_FIELDS, SETTINGS, Config, split
from bench.errors import ConfigError, OneLineArgumentParser, UserError, did_you_mean, shorten
from bench.io import read_bounded, shallow

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOML_BYTES = 1 << 20  # the largest config file read (every field fits in a few KiB)
TOML_NESTING = 4  # a table, a key, a list of values: one more is refused before it is read further
FIELDS = {f.name: f for f in dataclasses.fields(Config)}
ALL_FIELDS = {**FIELDS, **{f.name: f for cls in SETTINGS.values() for f in dataclasses.fields(cls)}}


def prog_name(command: str) -> str:
    """``python -m bench.<command>``."""
    return f"python -m bench.{command}"


def fields_of(command: str) -> dict[str, tuple[type, dataclasses.Field]]:
    """{name: (its class, its field)}: the Config fields the command reads, then its own settings."""
    own = {f.name: (SETTINGS[command], f) for f in dataclasses.fields(SETTINGS[command])} \
        if command in SETTINGS else {}
    return {**{n: (Config, FIELDS[n]) for n in COMMAND_FIELDS.get(command, ())}, **own}


def field_kind(cls: type, f: dataclasses.Field) -> tuple[type, bool, bool]:
    """(element type, is_list, optional) of a settings field's annotation."""
    hint = typing.get_type_hints(cls)[f.name]
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


def _type_name(elem: type, is_list: bool) -> str:
    base = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[elem]
    return f"a list of {base.split(' ', 1)[1]}s" if is_list else base


# ---------------------------------------------------------------- TOML


def toml_keys(command: str) -> list[str]:
    """The keys a TOML file may hold for ``command``: its flags' names (no argument, no ``--`` part)."""
    return [n for n, (_, f) in fields_of(command).items()
            if not (f.metadata.get("positional") or f.metadata.get("rest"))]


def load_toml(path: str | Path, command: str = "compare") -> dict[str, Any]:
    """Read a flat TOML file of the ``command``'s keys; any other key and wrong types are errors."""
    path = Path(path)
    try:
        raw = tomllib.loads(read_bounded(path, TOML_BYTES, "a config file").decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (allowed: a TOML file in UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {shorten(str(exc), 200)}") from None
    except ValueError as exc:  # what the parser's own conversions raise (an integer of 5000 digits)
        raise UserError(f"{path}: a value TOML cannot hold: {shorten(str(exc), 200)}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply (allowed: flat keys, each a value or a list of "
                        "values)") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    shallow(raw, path, TOML_NESTING, "flat keys, each a value or a list of values")
    allowed, fields = toml_keys(command), fields_of(command)
    for key in raw:
        if key in allowed:
            continue
        if key in ALL_FIELDS:
            raise UserError(f"{path}: key {key!r} is not a setting of {prog_name(command)} "
                            f"(allowed: {', '.join(allowed)})")
        raise UserError(f"{path}: unknown key {shorten(repr(key), 80)}"
                        f"{did_you_mean(key.replace('-', '_'), allowed)} (allowed: {', '.join(allowed)})")
    return {k: _coerce_toml(k, v, *fields[k], str(path)) for k, v in raw.items()}


def _coerce_toml(name: str, value: Any, cls: type, f: dataclasses.Field, where: str) -> Any:
    """Check a TOML value against the field's type; ints are accepted for floats."""
    elem, is_list, optional = field_kind(cls, f)

    def ok(v: Any) -> bool:
        if elem is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        return isinstance(v, elem) and not (elem is int and isinstance(v, bool))

    good = (isinstance(value, list) and all(ok(v) for v in value)) if is_list else ok(value)
    if not good:
        raise UserError(f"{where}: {name} = {shorten(repr(value), 80)} has the wrong type "
                        f"(allowed: {_type_name(elem, is_list)})")
    if elem is float:
        try:
            return [float(v) for v in value] if is_list else float(value)
        except OverflowError:  # an integer beyond every float
            raise UserError(f"{where}: {name} = {shorten(repr(value), 80)} is too large (allowed: "
                            "a finite number)") from None
    return list(value) if is_list else value


# ---------------------------------------------------------------- the command line


def build_parser(command: str, description: str, preset: dict[str, Any], *, folder: bool = True,
                 actions: dict[str, str] | None = None, prog: str | None = None) -> OneLineArgumentParser:
    """One flag per field the command reads, each help with the effective default (the preset's where
    it has one); ``--config``; ``--out`` and ``--quiet`` for a command with a results folder; and the
    ``actions`` ({flag name: help}: flags that do something else and exit)."""
    parser = OneLineArgumentParser(prog=prog or prog_name(command), description=description)
    fields = fields_of(command)
    config, own = split(preset, command)
    start = {**(Config(**config).to_dict() if COMMAND_FIELDS.get(command) else {}),
             **(dataclasses.asdict(SETTINGS[command](**own)) if command in SETTINGS else {})}
    if toml_keys(command):
        parser.add_argument("--config", metavar="FILE", help="TOML file of settings (flat keys, "
                            "the names of the flags with underscores)")
    for name, (cls, f) in fields.items():
        elem, is_list, optional = field_kind(cls, f)
        meta, flag = f.metadata, "--" + name.replace("_", "-")
        if meta.get("rest"):
            continue
        help_text = meta["help"] + (f" (choices: {', '.join(meta['choices'])})"
                                    if meta.get("choices") and is_list else "")
        if meta.get("positional"):
            parser.add_argument(name, metavar=meta["positional"], nargs="+" if is_list else "?",
                                default=argparse.SUPPRESS, help=help_text)
            continue
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": name,
                                  "help": help_text + f" (default: {_show_default(start[name])})"}
        if elem is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif is_list and meta.get("whole"):  # every token one item, and the flag may repeat
            parser.add_argument(flag, nargs="+", action="extend", metavar=meta.get("metavar"),
                                required=True, **{**kwargs, "help": help_text})
        elif is_list:  # accept both "--seeds 42 43" and "--hidden-dims 512,256"
            parser.add_argument(flag, nargs="+", metavar=name.upper(), **kwargs)
        elif meta.get("choices"):
            parser.add_argument(flag, choices=meta["choices"], **kwargs)  # shows {a,b,c}
        else:
            parser.add_argument(flag, type=_parse_scalar(elem, name, optional), metavar=name.upper(),
                                **kwargs)
    if folder:
        parser.add_argument("--out", metavar="DIR", help="output folder; must not exist yet, or be empty "
                            "(none given: a new folder results/<timestamp>_<label>/)")
        parser.add_argument("--quiet", action="store_true", help="no progress output")
    for name, help_text in (actions or {}).items():
        parser.add_argument("--" + name.replace("_", "-"), action="store_true", help=help_text)
    return parser


def _parse_scalar(elem: type, name: str, optional: bool):
    def parse(text: str):
        if optional and text.strip().lower() == "none":
            return None
        try:
            return elem(text)
        except ValueError:
            allowed = _type_name(elem, False) + (", or none" if optional else "")
            raise argparse.ArgumentTypeError(f"invalid {name}: {shorten(repr(text), 80)} (allowed: "
                                             f"{allowed})") from None
    return parse


def _show_default(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return "none" if v is None else str(v)


def _split_list(name: str, cls: type, f: dataclasses.Field, tokens: list[str]) -> list[Any] | None:
    elem, _is_list, optional = field_kind(cls, f)
    if f.metadata.get("whole") or f.metadata.get("positional"):
        return list(tokens)
    items = []
    for i, tok in enumerate(tokens if tokens != [""] else []):  # "" alone: the empty list
        parts = [t.strip() for t in tok.split(",")]
        if i < len(tokens) - 1 and len(parts) > 1 and parts[-1] == "":
            parts.pop()  # "42, 43": a comma, then a space
        if "" in parts:  # "128,,64", "numpy:cpu,": a typo, never dropped in silence
            raise ConfigError(name, ",".join(tokens), "a comma-separated list without empty items")
        items += parts
    if optional and [i.lower() for i in items] == ["none"]:
        return None
    out = []
    for item in items:
        try:
            out.append(elem(item))
        except ValueError:
            raise ConfigError(name, item, _type_name(elem, True)) from None
    return out


def settings_from_args(args: argparse.Namespace, command: str, preset: dict[str, Any],
                       rest: list[str] = ()) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(Config values, the command's settings values, the names the user set) of one command run:
    defaults < ``preset`` < ``--config`` TOML < flags (``rest``: the words after ``--``). Nothing is
    validated here: the caller builds and validates the dataclasses."""
    values: dict[str, Any] = dict(preset)
    given: set[str] = set()
    if getattr(args, "config", None):
        toml = load_toml(args.config, command)
        values.update(toml)
        given |= set(toml)
    for name, (cls, f) in fields_of(command).items():
        if f.metadata.get("rest"):
            values[name] = list(rest)
        elif name in vars(args):
            v = getattr(args, name)
            values[name] = _split_list(name, cls, f, v) if field_kind(cls, f)[1] else v
            given.add(name)
    return (*split(values, command), given)
