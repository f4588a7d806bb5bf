"""The one configuration of the suite: every setting and its only default.

:class:`Config` is the single place where a default lives. The command line
(:func:`add_config_arguments`) and the TOML loader (:func:`load_toml`) are
generated from its fields and checked against them: unknown keys and wrong
types are errors, and :meth:`Config.validate` rejects bad values before any
work starts, each with one line naming the field, the value and what is
allowed.

Precedence: the dataclass defaults < a TOML file (``--config FILE``) <
command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ACTIVATIONS = ("elu", "relu", "tanh")
DTYPES = ("float32", "float64")
DATASETS = ("cifar10", "synthetic")
TORCH_COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
CIFAR10_TRAIN_SIZE = 50_000  # images in the official training archive
SYNTHETIC_TRAIN_SIZE = 2000  # training images of --dataset synthetic without --train-subset
CIFAR10_N_FEATURES = 3 * 32 * 32
CIFAR10_N_CLASSES = 10


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help; lists are copied per instance."""
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every setting of a run. The defaults are the reference setup (THEORY.md §6)."""

    # --- model
    hidden_dims: list[int] = _opt([128], "widths of the hidden layers, e.g. 128 or 512,256")
    activation: str = _opt("elu", "hidden activation", choices=ACTIVATIONS)
    alpha: float = _opt(1.0, "ELU alpha (ignored by relu and tanh)")
    residual: bool = _opt(False, "form residual blocks x + Linear(h(Linear(x))) from hidden layers "
                                 "[F, N1, F, N2, F, ...]")
    # --- optimisation
    lr: float = _opt(0.1, "SGD learning rate")
    momentum: float = _opt(0.0, "SGD momentum (torch.optim.SGD convention, no Nesterov)")
    weight_decay: float = _opt(0.0, "L2 weight decay added to the gradient")
    batch_size: int = _opt(128, "training batch size (the last partial batch is dropped)")
    epochs: int = _opt(10, "training epochs")
    seeds: list[int] = _opt([42], "one run per seed and backend; the seed fixes the init, "
                                  "the validation split and every epoch's batch order")
    dtype: str = _opt("float32", "floating-point type of data and parameters", choices=DTYPES)
    # --- data
    dataset: str = _opt("cifar10", "cifar10, or synthetic: learnable random data of the same shape "
                                   "(train_subset or 2000 train images, val_size val and test images; "
                                   "for smoke tests)", choices=DATASETS)
    val_size: int = _opt(5000, "training images held out for validation")
    train_subset: int | None = _opt(None, "train on only the first N images of the training split "
                                          "(quick runs)")
    mean: list[float] = _opt([0.491, 0.482, 0.447], "per-channel mean (R G B) for normalisation")
    std: list[float] = _opt([0.247, 0.243, 0.262], "per-channel std (R G B) for normalisation")
    data_dir: str | None = _opt(None, "where CIFAR-10 is read from or downloaded to "
                                      "(default: $MLPBENCH_DATA_DIR, else the user cache)")
    # --- harness
    backends: list[str] | None = _opt(None, "backends to run, e.g. numpy:cpu,torch:cpu "
                                            "(default: every available one)")
    threads: int | None = _opt(None, "CPU threads for BLAS and torch, the same for every backend "
                                     "(default: all cores)")
    target_acc: float = _opt(0.45, "validation accuracy for time_to_target_seconds")
    eval_batch_size: int = _opt(10_000, "batch size for evaluation (no gradients)")
    lockstep: bool = _opt(False, "start every backend from the same weights and record every "
                                 "step's loss")
    # --- PyTorch speed-ups (off by default, recorded when on)
    torch_compile: str = _opt("none", "torch.compile mode for the torch backends",
                              choices=TORCH_COMPILE_MODES)
    cuda_graph: bool = _opt(False, "capture the whole torch training step as a CUDA graph")
    tf32: bool = _opt(False, "allow TF32 matmuls on CUDA")
    # --- peers
    dataloader_workers: int = _opt(0, "num_workers of the torch-dataloader backend")

    @property
    def n_train(self) -> int:
        """Training images after the validation hold-out and the subset."""
        if self.dataset == "synthetic":
            return self.train_subset or SYNTHETIC_TRAIN_SIZE
        n = CIFAR10_TRAIN_SIZE - self.val_size
        return min(n, self.train_subset) if self.train_subset is not None else n

    def validate(self, n_train: int | None = None) -> "Config":
        """Raise :class:`ConfigError` for the first invalid value; return self.

        ``n_train`` is the size of the training split actually loaded, when
        known; otherwise the CIFAR-10 sizes are assumed.
        """
        _check(isinstance(self.hidden_dims, list) and len(self.hidden_dims) > 0
               and all(_is_int(d) and d > 0 for d in self.hidden_dims),
               "hidden_dims", self.hidden_dims, "a non-empty list of positive integers")
        _check(self.activation in ACTIVATIONS, "activation", self.activation, ", ".join(ACTIVATIONS))
        _check(self.alpha > 0, "alpha", self.alpha, "a number > 0")
        if self.residual:
            _check(residual_dims_ok(self.hidden_dims), "hidden_dims", self.hidden_dims,
                   "with residual, [F, N1, F, N2, F, ...]: an odd count of at least 3 with every "
                   f"other width equal to the first, e.g. {residual_example(self.hidden_dims)}")
        _check(self.lr > 0, "lr", self.lr, "a number > 0")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(len(self.seeds) > 0 and all(_is_int(s) and s >= 0 for s in self.seeds)
               and len(set(self.seeds)) == len(self.seeds),
               "seeds", self.seeds, "one or more distinct integers >= 0")
        _check(self.dtype in DTYPES, "dtype", self.dtype, ", ".join(DTYPES))
        _check(self.dataset in DATASETS, "dataset", self.dataset, ", ".join(DATASETS))
        _check(1 <= self.val_size < CIFAR10_TRAIN_SIZE, "val_size", self.val_size,
               f"an integer from 1 to {CIFAR10_TRAIN_SIZE - 1}")
        if self.train_subset is not None:
            _check(1 <= self.train_subset, "train_subset", self.train_subset, "an integer >= 1")
        _check(len(self.mean) == 3, "mean", self.mean, "three numbers (R G B)")
        _check(len(self.std) == 3 and all(s > 0 for s in self.std), "std", self.std,
               "three numbers > 0 (R G B)")
        limit = self.n_train if n_train is None else n_train
        _check(1 <= self.batch_size <= limit, "batch_size", self.batch_size,
               f"an integer from 1 to the training-set size {limit}")
        if self.threads is not None:
            _check(self.threads >= 1, "threads", self.threads, "an integer >= 1")
        _check(0 < self.target_acc <= 1, "target_acc", self.target_acc, "a number in (0, 1]")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _check(self.torch_compile in TORCH_COMPILE_MODES, "torch_compile", self.torch_compile,
               ", ".join(TORCH_COMPILE_MODES))
        _check(not (self.cuda_graph and self.torch_compile != "none"), "cuda_graph", self.cuda_graph,
               "false when torch_compile is set (a captured graph and torch.compile are alternatives)")
        _check(self.dataloader_workers >= 0, "dataloader_workers", self.dataloader_workers,
               "an integer >= 0")
        if self.backends is not None:
            _check(len(self.backends) > 0 and all(isinstance(b, str) and b for b in self.backends),
                   "backends", self.backends, "a non-empty list of impl:device names")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def residual_dims_ok(dims: list[int]) -> bool:
    """Whether ``dims`` can form residual blocks: [F, N1, F, N2, F, ...]."""
    return len(dims) >= 3 and len(dims) % 2 == 1 and all(d == dims[0] for d in dims[::2])


def residual_example(dims: list[int]) -> list[int]:
    """A residual-compatible hidden_dims close to ``dims``, for error messages."""
    width = dims[0] if dims and _is_int(dims[0]) and dims[0] > 0 else 128
    n = max(3, len(dims) + (len(dims) % 2 == 0))
    return [width] * n


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)


# ---------------------------------------------------------------- field types


def field_kind(f: dataclasses.Field) -> tuple[type, bool, bool]:
    """(element type, is_list, optional) of a Config field's annotation."""
    hint = typing.get_type_hints(Config)[f.name]
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _type_name(elem: type, is_list: bool) -> str:
    base = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[elem]
    return f"a list of {base.split(' ', 1)[1]}s" if is_list else base


def _coerce_toml(name: str, value: Any, where: str) -> Any:
    """Check a TOML value against the field's type; ints are accepted for floats."""
    elem, is_list, _optional = field_kind(FIELDS[name])

    def ok(v: Any) -> bool:
        if elem is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if elem is int:
            return _is_int(v)
        return isinstance(v, elem)

    good = (isinstance(value, list) and all(ok(v) for v in value)) if is_list else ok(value)
    if not good:
        raise UserError(f"{where}: {name} = {value!r} has the wrong type "
                        f"(allowed: {_type_name(elem, is_list)})")
    if elem is float:
        return [float(v) for v in value] if is_list else float(value)
    return list(value) if is_list else value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML file of Config keys; unknown keys and wrong types are errors."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(FIELDS)})")
    return {k: _coerce_toml(k, v, str(path)) for k, v in raw.items()}


# ---------------------------------------------------------------- command line


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_scalar(elem: type, name: str):
    def parse(text: str):
        try:
            return elem(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {name}: {text!r} (allowed: {_type_name(elem, False)})") from None
    return parse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Config field; defaults stay in the dataclass (argparse gets SUPPRESS)."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (flat keys, "
                        "the names of the flags with underscores)")
    for f in dataclasses.fields(Config):
        elem, is_list, _optional = field_kind(f)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f"{f.metadata['help']} (default: {_show_default(default)})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        if elem is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if is_list:
            # accept both "--seeds 42 43" and "--hidden-dims 512,256"
            parser.add_argument(_flag(f.name), nargs="+", metavar=f.name.upper(), **kwargs)
        else:
            parser.add_argument(_flag(f.name), type=_parse_scalar(elem, f.name),
                                metavar=f.name.upper(), **kwargs)


def _show_default(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return "none" if v is None else str(v)


def _split_list(name: str, tokens: list[str]) -> list[Any]:
    elem, _is_list, _optional = field_kind(FIELDS[name])
    items = [t for tok in tokens for t in tok.split(",") if t.strip() != ""]
    out = []
    for item in items:
        try:
            out.append(elem(item.strip()))
        except ValueError:
            raise ConfigError(name, item, _type_name(elem, True)) from None
    return out


def config_from_args(args: argparse.Namespace) -> Config:
    """Build and validate a Config from defaults, the ``--config`` TOML and the flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    for name in FIELDS:
        if name in vars(args):
            v = getattr(args, name)
            elem, is_list, _ = field_kind(FIELDS[name])
            values[name] = _split_list(name, v) if is_list else v
    return Config(**values).validate()


def parse_config(argv: list[str] | None = None, prog: str | None = None) -> Config:
    """Parse only Config flags (for small tools and tests)."""
    from bench.errors import OneLineArgumentParser

    parser = OneLineArgumentParser(prog=prog)
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))
