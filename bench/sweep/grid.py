"""The sweep grid: ``FIELD=V1,V2,...`` over any Config field, parsed with the field's type.

Syntax of one ``--grid`` item::

    batch_size=32,128,512        # commas separate the grid values
    hidden_dims=64,256,1024      # a list field takes one list per value: "64" is [64]
    hidden_dims=512x256,1024     # "x" (or a space, quoted) separates the layers of one value
    "hidden_dims=512 256,1024"   # the same grid: [[512, 256], [1024]]
    train_subset=none,5000       # an optional field takes "none"
    residual=false,true          # booleans: true/false, yes/no, on/off, 1/0

Every value is also held in a canonical text form (``512x256``, ``none``,
``true``, ``0.1``); the point's key in ``sweep.csv`` is made of these, so a
resumed sweep recognises the points it has already run.

The size of a grid is checked before anything is expanded: at most
``MAX_VALUES`` values per field, ``MAX_POINTS`` points, and ``MAX_MAPS``
combinations of the third and later fields (each is a map of its own); the
sweep also refuses more than ``MAX_POINTS`` tasks (points × backends × seeds).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.cli import FIELDS, field_kind
from bench.config import COMMAND_FIELDS, Config
from bench.errors import ConfigError, UserError, did_you_mean

# fields a grid may not cover, and why
NOT_IN_GRID = {
    "backends": "backends are crossed with every point; use --backends",
    "seeds": "seeds are crossed with every point; use --seeds",
    "lockstep": "a sweep runs each backend on its own; lock-step runs belong to bench.compare",
}
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
LAYER_SEP = re.compile(r"[x\s]+")
MAX_VALUES = 64      # values of one field (a map's rows or columns)
MAX_POINTS = 10_000  # grid points, and tasks of a sweep
MAX_MAPS = 64        # combinations of the fields after the first two: one map each


@dataclass(frozen=True)
class Grid:
    """The swept fields in the order given, each with its values (typed) in the order given."""

    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # values[i] are the values of fields[i]

    def points(self) -> list[dict[str, Any]]:
        """Every combination, the first field varying slowest: [{field: value, ...}, ...]."""
        return [dict(zip(self.fields, combo)) for combo in itertools.product(*self.values)]

    def canonical(self) -> dict[str, list[str]]:
        """{field: [canonical text of each value]}: what sweep.json stores and resumes compare."""
        return {f: [canonical(v) for v in vals] for f, vals in zip(self.fields, self.values)}

    def describe(self) -> str:
        return " ".join(f"{f}={','.join(vals)}" for f, vals in self.canonical().items())


def canonical(value: Any) -> str:
    """The text form of one grid value: ``512x256``, ``none``, ``true``, ``0.1``, ``128``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "x".join(canonical(v) for v in value)
    if isinstance(value, float):
        text = repr(value)  # the shortest text that reads back as the same float
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def parse_grid(items: Sequence[str]) -> Grid:
    """Parse ``["batch_size=32,128", "hidden_dims=64,512x256"]``; any mistake is one UserError."""
    if not items:
        raise UserError("--grid needs at least one FIELD=V1,V2,... item")
    fields: list[str] = []
    values: list[tuple[Any, ...]] = []
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UserError(f"--grid item {item!r} is not FIELD=V1,V2,... (e.g. batch_size=32,128)")
        if name not in FIELDS or (name not in COMMAND_FIELDS["sweep"] and name not in NOT_IN_GRID):
            allowed = [f for f in COMMAND_FIELDS["sweep"] if f not in NOT_IN_GRID]
            raise UserError(f"--grid: unknown field {name!r}{did_you_mean(name, allowed)} (allowed: "
                            f"{', '.join(allowed)})")
        if name in NOT_IN_GRID:
            raise UserError(f"--grid: {name} cannot be swept ({NOT_IN_GRID[name]})")
        if name in fields:
            raise UserError(f"--grid: {name} is given twice")
        items = text.split(",")
        if len(items) > MAX_VALUES:  # before any is parsed
            raise UserError(f"--grid: {name} has {len(items)} values (allowed: at most {MAX_VALUES} "
                            "per field)")
        parsed = tuple(_parse_value(name, v) for v in items)
        texts = [canonical(v) for v in parsed]
        dup = next((t for t in texts if texts.count(t) > 1), None)
        if dup is not None:
            raise UserError(f"--grid: {name} lists the value {dup} twice")
        fields.append(name)
        values.append(parsed)
    check_size(Grid(tuple(fields), tuple(values)))
    return Grid(tuple(fields), tuple(values))


def check_size(grid: Grid, tasks_per_point: int = 1) -> None:
    """A UserError when the grid (times ``tasks_per_point``: backends × seeds) is too large to run
    or to draw; computed from the value counts alone, before any point is made."""
    counts = [len(v) for v in grid.values]
    big = next((f for f, n in zip(grid.fields, counts) if n > MAX_VALUES), None)
    if big is not None:
        raise UserError(f"--grid: {big} has {counts[grid.fields.index(big)]} values (allowed: at most "
                        f"{MAX_VALUES} per field)")
    maps = math.prod(counts[2:])
    if maps > MAX_MAPS:
        raise UserError(f"--grid: the fields after the first two make {maps} maps (allowed: at most "
                        f"{MAX_MAPS}; sweep fewer fields or values)")
    tasks = math.prod(counts) * tasks_per_point
    if tasks > MAX_POINTS:
        raise UserError(f"--grid: {math.prod(counts)} points x {tasks_per_point} backend-seed "
                        f"run(s) = {tasks} tasks (allowed: at most {MAX_POINTS})")


def _parse_value(name: str, text: str) -> Any:
    """One grid value of field ``name`` from its text, typed like the field."""
    elem, is_list, optional = field_kind(Config, FIELDS[name])
    text = text.strip()
    if text == "":
        raise UserError(f"--grid: {name} has an empty value (write {name}=V1,V2,...)")
    if optional and text.lower() == "none":
        return None
    if is_list:
        return [_parse_scalar(name, elem, t, is_list=True) for t in LAYER_SEP.split(text) if t]
    return _parse_scalar(name, elem, text, is_list=False)


def _parse_scalar(name: str, elem: type, text: str, *, is_list: bool) -> Any:
    if elem is bool:
        low = text.lower()
        if low in TRUE or low in FALSE:
            return low in TRUE
        raise UserError(f"--grid: invalid {name}: {text!r} (allowed: true or false)")
    try:
        return elem(text)
    except ValueError:
        kind = {int: "integer", float: "number", str: "string"}[elem]
        allowed = (f"{kind}s, one list per grid value with its items joined by 'x', e.g. 512x256"
                   if is_list else f"a {kind}" if kind != "integer" else "an integer")
        raise UserError(f"--grid: invalid {name}: {text!r} (allowed: {allowed})") from None


def point_configs(base: Config, grid: Grid) -> list[tuple[dict[str, Any], Config]]:
    """(point, validated Config) for every grid point; the first invalid point, or one whose data cannot
    fit on this machine (refused here, not a failed row per task), is a UserError."""
    from bench.memory import check_memory

    out = []
    for point in grid.points():
        cfg = dataclasses.replace(base, **{k: _copy(v) for k, v in point.items()})
        try:
            check_memory(cfg.validate(), 0)
        except UserError as exc:
            raise UserError(f"grid point {describe_point(point)}: {exc}") from None
        out.append((point, cfg))
    return out


def describe_point(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={canonical(v)}" for k, v in point.items())


def pin_first(base: Config, grid: Grid) -> Config:
    """``base`` with every swept field at its first grid value, validated (a mistake in a swept field
    is named as that grid point's), so that a base value the grid replaces (say the default batch size
    on a tiny train subset) is never checked on its own."""
    first = {f: _copy(vals[0]) for f, vals in zip(grid.fields, grid.values)}
    try:
        return dataclasses.replace(base, **first).validate()
    except ConfigError as exc:
        if exc.field in grid.fields:
            raise UserError(f"grid point {exc.field}={canonical(exc.value)}: {exc}") from None
        raise


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def check_no_overlap(grid: Grid, given: Iterable[str]) -> None:
    """A field both swept and set by a flag (or the TOML file) is ambiguous: a UserError."""
    both = [f for f in grid.fields if f in set(given)]
    if both:
        flag = "--" + both[0].replace("_", "-")
        raise UserError(f"{both[0]} is both swept by --grid and set by {flag}; drop one of them")
