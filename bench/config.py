"""The one configuration of the suite: every setting, its only default, and each command's preset.

:class:`Config` is the single place where a default lives. The command line
(:func:`add_config_arguments`) and the TOML loader (:func:`load_toml`) are
generated from its fields and checked against them: unknown keys and wrong
types are errors, and :meth:`Config.validate` rejects bad values before any
work starts, each with one line naming the field, the value and what is
allowed.

Each command uses a subset of the fields (:data:`COMMAND_FIELDS`: its
``--help`` lists those alone, and a TOML key outside them is an error) and may
start from a named preset (:data:`PRESETS`, e.g. ``epoch_ratio`` times 5
epochs of synthetic data). Precedence, for every command: the dataclass
defaults < the command's preset < a TOML file (``--config FILE``) <
command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, UserError, did_you_mean, shorten
from bench.io import read_bounded
from impl_common.arch import ACTIVATIONS, residual_dims_ok, residual_example

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DTYPES = ("float32", "float64")
DATASETS = ("cifar10", "synthetic")
GATHER_FROM = ("normalised", "uint8")  # what training batches are gathered from (bench.backends.gather)
TORCH_COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
GPU_VARIANTS = ("eager", "cuda_graph", "reduce-overhead")  # bench.gpu_check: torch speed-ups compared
CIFAR10_TRAIN_SIZE = 50_000  # images in the official training archive
SYNTHETIC_TRAIN_SIZE = 2000  # training images of --dataset synthetic without --train-subset
CIFAR10_N_FEATURES = 3 * 32 * 32
CIFAR10_N_CLASSES = 10
TOML_BYTES = 1 << 20  # the largest config file read (every field fits in a few KiB)
MAX_LAYERS = 1024     # hidden layers (hidden_dims entries, depth) at most
MAX_SEEDS = 1000      # seeds of one command
MAX_SEED = 2**32 - 1  # the largest seed every library takes (scikit-learn's random_state)
MAX_BACKENDS = 64     # backends of one command


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help; lists are copied per instance."""
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every setting of every command. The defaults are the reference setup (docs/reference.md)."""

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
                                   "no download)", choices=DATASETS)
    val_size: int = _opt(5000, "training images held out for validation")
    train_subset: int | None = _opt(None, "train on only the first N images of the training split "
                                          "(quick runs)")
    mean: list[float] = _opt([0.491, 0.482, 0.447], "per-channel mean (R G B) for normalisation")
    std: list[float] = _opt([0.247, 0.243, 0.262], "per-channel std (R G B) for normalisation")
    data_dir: str | None = _opt(None, "where CIFAR-10 is read from or downloaded to "
                                      "(none: $MLPBENCH_DATA_DIR, else the user cache)")
    gather_from: str = _opt("normalised", "what every backend gathers its training batches from: "
                                          "normalised (rows of the split normalised once, in the "
                                          "dtype) or uint8 (the images, each batch normalised as "
                                          "gathered: a quarter of the bytes read, more arithmetic; "
                                          "the same numbers)", choices=GATHER_FROM)
    # --- harness
    backends: list[str] | None = _opt(None, "backends to run, e.g. numpy:cpu,torch:cpu "
                                            "(none: every available one)")
    threads: int | None = _opt(None, "CPU threads for BLAS and torch, the same for every backend "
                                     "(none: all cores)")
    target_acc: float = _opt(0.45, "validation accuracy for time_to_target_seconds")
    eval_batch_size: int = _opt(10_000, "batch size for evaluation (no gradients)")
    eval_every: int | None = _opt(None, "evaluate on the validation split every N steps as well as "
                                        "after each epoch (outside the clock; more steps than an "
                                        "epoch has: after each epoch only)")
    lockstep: bool = _opt(False, "start every backend from the same weights and record every "
                                 "step's loss")
    reference_timing: bool = _opt(True, "time one epoch's matrix products alone before and after "
                                        "every epoch, and each backend's fixed cost of a step "
                                        "(the epoch/GEMM ratio, its floor and its quality flags)")
    # --- PyTorch speed-ups (off by default, recorded when on)
    torch_compile: str = _opt("none", "torch.compile mode for the torch backends",
                              choices=TORCH_COMPILE_MODES)
    cuda_graph: bool = _opt(False, "capture the whole torch training step as a CUDA graph")
    tf32: bool = _opt(False, "allow TF32 matmuls on CUDA")
    # --- JAX (off by default, recorded when on)
    jax_scan: bool = _opt(False, "run each epoch of the jax backends as one lax.scan over its batches "
                                 "(one dispatch per epoch)")
    # --- peers
    dataloader_workers: int = _opt(0, "num_workers of the torch-dataloader backend")
    # --- bench.gradflow: a deep plain and residual net, NumPy and PyTorch from the same weights
    depth: int = _opt(21, "hidden layers of the deep net, an odd count >= 3: the residual net is a "
                          "stem and (depth-1)/2 blocks, the plain net the same layers without skips")
    width: int = _opt(128, "width of every hidden layer of the deep net")
    activations: list[str] = _opt(["elu", "tanh"], "activations to run the deep net with",
                                  choices=ACTIVATIONS)
    batch_examples: int = _opt(512, "training rows of the fixed batch the gradients (gradflow) or "
                                    "the Hessian (hessian) are taken on")
    check_steps: int = _opt(2, "first lock-step steps whose batch losses must agree to grad_rtol")
    grad_rtol: float = _opt(1e-4, "largest relative difference allowed between NumPy and PyTorch: "
                                  "of dL/dW at the same weights and of the first check_steps losses")
    trajectory_rtol: float | None = _opt(None, "also require the per-layer gradient norms of the two "
                                               "trajectories after training to agree to this "
                                               "(none: reported only)")
    # --- bench.hessian: extreme eigenvalues of the loss Hessian
    k: int = _opt(5, "eigenvalues at each end of the spectrum")
    tol: float = _opt(1e-8, "Lanczos (ARPACK) relative tolerance")
    max_matvecs: int = _opt(3000, "Hessian-vector products per Lanczos call at most")
    eps: float = _opt(1e-5, "central-difference step along a unit direction (NumPy side; "
                            "about (3 x float64 epsilon)^(1/3))")
    eig_rtol: float = _opt(0.01, "NumPy vs PyTorch eigenvalues: relative difference allowed")
    check_features: int = _opt(32, "the tiny model (hessian's exact check, claim 8): input features")
    check_hidden: int = _opt(8, "the tiny model: hidden units")
    check_examples: int = _opt(300, "the tiny model: training rows")
    check_rtol: float = _opt(1e-4, "exact check: relative error allowed")
    # --- bench.claims: the reference write-up's claims, each tested (docs/reference.md)
    only: list[int] = _opt(list(range(1, 10)), "claims to test, by id 1-9 (bench.claims)")
    lockstep_seeds: int = _opt(3, "claim 4: seeds whose first epoch PyTorch reruns from NumPy's "
                                  "weights and batches")
    theory_seeds: int = _opt(5, "claims 6-8: how many of the seeds (the first) the gradient-flow and "
                                "Hessian measurements use")
    depths: list[int] = _opt([21, 41, 81, 161], "claim 6: depths (odd, >= 3) of the plain and residual "
                                                "nets of width --width, shallowest first")
    landscape_dims: list[int] = _opt([32, 32, 32, 32, 32], "claim 7: hidden widths [F, N1, F, ...] of "
                                                           "the plain and residual nets whose Hessians "
                                                           "are compared")
    grad_tol: float = _opt(1e-6, "claim 8: gradient norm below which the tiny model's full-batch loss "
                                 "counts as at its minimum")
    tiny_weight_decay: float = _opt(1e-3, "claim 8: L2 weight decay of the tiny model's training and "
                                          "objective (without it the loss has no finite minimum)")
    # --- bench.gpu_check
    gpu_variants: list[str] = _opt(list(GPU_VARIANTS), "torch speed-ups the GPU check times",
                                   choices=GPU_VARIANTS)

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
        _check(isinstance(self.hidden_dims, list) and 0 < len(self.hidden_dims) <= MAX_LAYERS
               and all(_is_int(d) and d > 0 for d in self.hidden_dims),
               "hidden_dims", self.hidden_dims, f"a list of 1 to {MAX_LAYERS} positive integers")
        _check(self.activation in ACTIVATIONS, "activation", self.activation, ", ".join(ACTIVATIONS))
        _check(_finite(self.alpha) and self.alpha > 0, "alpha", self.alpha, "a finite number > 0")
        if self.residual:
            _check(residual_dims_ok(self.hidden_dims), "hidden_dims", self.hidden_dims,
                   "with residual, [F, N1, F, N2, F, ...]: an odd count of at least 3 with every "
                   f"other width equal to the first, e.g. {residual_example(self.hidden_dims)}")
        _check(_finite(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        _check(_finite(self.momentum) and 0 <= self.momentum < 1, "momentum", self.momentum,
               "a number in [0, 1)")
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
               self.weight_decay, "a finite number >= 0")
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(0 < len(self.seeds) <= MAX_SEEDS and all(_is_int(s) and 0 <= s <= MAX_SEED for s in self.seeds)
               and len(set(self.seeds)) == len(self.seeds),
               "seeds", self.seeds, f"1 to {MAX_SEEDS} distinct integers from 0 to {MAX_SEED}")
        _check(self.dtype in DTYPES, "dtype", self.dtype, ", ".join(DTYPES))
        _check(self.dataset in DATASETS, "dataset", self.dataset, ", ".join(DATASETS))
        _check(self.gather_from in GATHER_FROM, "gather_from", self.gather_from, ", ".join(GATHER_FROM))
        _check(1 <= self.val_size < CIFAR10_TRAIN_SIZE, "val_size", self.val_size,
               f"an integer from 1 to {CIFAR10_TRAIN_SIZE - 1}")
        if self.train_subset is not None:
            _check(1 <= self.train_subset, "train_subset", self.train_subset, "an integer >= 1")
        _check(len(self.mean) == 3 and all(_finite(m) for m in self.mean), "mean", self.mean,
               "three finite numbers (R G B)")
        _check(len(self.std) == 3 and all(_finite(s) and s > 0 for s in self.std), "std", self.std,
               "three finite numbers > 0 (R G B)")
        limit = self.n_train if n_train is None else n_train
        _check(1 <= self.batch_size <= limit, "batch_size", self.batch_size,
               f"an integer from 1 to the training-set size {limit}")
        if self.eval_every is not None:
            _check(self.eval_every >= 1, "eval_every", self.eval_every, "an integer >= 1, or none")
        if self.threads is not None:
            _check(self.threads >= 1, "threads", self.threads, "an integer >= 1")
        _check(_finite(self.target_acc) and 0 < self.target_acc <= 1, "target_acc", self.target_acc,
               "a number in (0, 1]")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _check(self.torch_compile in TORCH_COMPILE_MODES, "torch_compile", self.torch_compile,
               ", ".join(TORCH_COMPILE_MODES))
        _check(not (self.cuda_graph and self.torch_compile != "none"), "cuda_graph", self.cuda_graph,
               "false when torch_compile is set (a captured graph and torch.compile are alternatives)")
        _check(not (self.jax_scan and self.eval_every is not None), "jax_scan", self.jax_scan,
               "false when eval_every is set (a scanned epoch has no step to evaluate between)")
        cores = os.cpu_count() or 1
        _check(0 <= self.dataloader_workers <= 4 * cores, "dataloader_workers", self.dataloader_workers,
               f"an integer from 0 to {4 * cores} (4 worker processes per core)")
        if self.backends is not None:
            _check(0 < len(self.backends) <= MAX_BACKENDS
                   and all(isinstance(b, str) and b for b in self.backends),
                   "backends", self.backends, f"a list of 1 to {MAX_BACKENDS} impl:device names")
        _check(3 <= self.depth <= MAX_LAYERS and self.depth % 2 == 1, "depth", self.depth,
               f"an odd integer from 3 to {MAX_LAYERS - 1} (a stem and whole residual blocks)")
        _check(self.width >= 1, "width", self.width, "an integer >= 1")
        _check_names("activations", self.activations, ACTIVATIONS)
        _check_names("gpu_variants", self.gpu_variants, GPU_VARIANTS)
        _check(isinstance(self.only, list) and len(self.only) > 0 and len(set(self.only)) == len(self.only)
               and all(_is_int(i) and 1 <= i <= 9 for i in self.only), "only", self.only,
               "distinct claim ids from 1 to 9, e.g. 1,4,8")
        _check(all(_is_int(d) and d >= 3 and d % 2 == 1 for d in self.depths) and len(self.depths) > 0,
               "depths", self.depths, "odd integers >= 3 (a stem and whole residual blocks)")
        _check(residual_dims_ok(self.landscape_dims) and all(_is_int(d) and d > 0
                                                            for d in self.landscape_dims),
               "landscape_dims", self.landscape_dims, "[F, N1, F, N2, F, ...]: an odd count of at "
               f"least 3 positive widths, every other one equal to the first, e.g. "
               f"{residual_example(self.landscape_dims)}")
        for name in ("batch_examples", "check_steps", "k", "check_features", "check_hidden",
                     "check_examples", "lockstep_seeds", "theory_seeds"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        _check(self.max_matvecs >= 10, "max_matvecs", self.max_matvecs, "an integer >= 10")
        _check(_finite(self.tiny_weight_decay) and self.tiny_weight_decay > 0, "tiny_weight_decay",
               self.tiny_weight_decay, "a finite number > 0")
        for name in ("grad_rtol", "tol", "eps", "eig_rtol", "check_rtol", "grad_tol"):
            value = getattr(self, name)
            _check(_finite(value) and value > 0, name, value, "a finite number > 0")
        if self.trajectory_rtol is not None:
            _check(_finite(self.trajectory_rtol) and self.trajectory_rtol > 0, "trajectory_rtol",
                   self.trajectory_rtol, "a finite number > 0, or none")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- commands: fields and presets

MODEL = ("hidden_dims", "activation", "alpha", "residual")
TRAINING = ("lr", "momentum", "weight_decay", "batch_size", "epochs", "seeds", "dtype")
DATA = ("dataset", "val_size", "train_subset", "mean", "std", "data_dir", "gather_from")
HARNESS = ("backends", "threads", "target_acc", "eval_batch_size", "eval_every", "lockstep",
           "reference_timing")
SPEEDUPS = ("torch_compile", "cuda_graph", "tf32", "jax_scan")
PEERS = ("dataloader_workers",)
GRADFLOW = ("depth", "width", "activations", "batch_examples", "check_steps", "grad_rtol",
            "trajectory_rtol")
HESSIAN = ("batch_examples", "k", "tol", "max_matvecs", "eps", "eig_rtol", "check_features",
           "check_hidden", "check_examples", "check_rtol")
CLAIMS = ("only", "lockstep_seeds", "theory_seeds", "depths", "width", "landscape_dims", "batch_examples",
          "k", "tol", "max_matvecs", "grad_tol", "tiny_weight_decay",
          "check_features", "check_hidden", "check_examples")

# the Config fields each command reads: its flags and the TOML keys it accepts
COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "compare": MODEL + TRAINING + DATA + HARNESS + SPEEDUPS + PEERS,
    "sweep": MODEL + TRAINING + DATA + tuple(f for f in HARNESS if f != "lockstep") + SPEEDUPS + PEERS,
    "epoch_ratio": MODEL + TRAINING + DATA + ("backends", "threads", "eval_batch_size") + SPEEDUPS
                   + PEERS,
    "gpu_check": MODEL + TRAINING + DATA + ("backends", "threads", "eval_batch_size", "tf32",
                                            "gpu_variants"),
    "gradflow": ("alpha",) + TRAINING + DATA + ("threads", "eval_batch_size", "eval_every") + GRADFLOW,
    "hessian": MODEL + TRAINING + DATA + ("backends", "threads", "eval_batch_size") + HESSIAN,
    "claims": ("hidden_dims", "activation", "alpha") + TRAINING + DATA + ("threads", "eval_batch_size")
              + CLAIMS,
    "data": DATA[:-1] + ("seeds", "dtype"),  # python -m bench.data: the summary of a CIFAR-10 copy
}
_CLAIMS = {"seeds": list(range(42, 52)), "batch_examples": 1000, "check_examples": 2000, "k": 3,
           "reference_timing": False}
# each command's own defaults, applied before the TOML file and the flags
PRESETS: dict[str, dict[str, Any]] = {
    # the reference setup with three seeds: the first run answers both questions, which backend is
    # faster (27 trusted epochs each at most) and whether their accuracy differs (Welch's t, n = 3),
    # in an estimated 1.5 minutes on 2 quiet cores (docs/measurements.md); --seeds 42 is the
    # reference setup itself
    "compare": {"seeds": [42, 43, 44]},
    "sweep": {},
    # synthetic data of the CIFAR-10 training size: the ratio needs no real images
    "epoch_ratio": {"epochs": 5, "dataset": "synthetic", "train_subset": 45_000, "val_size": 1000,
                    "backends": ["numpy:cpu", "torch:cpu"]},
    "gpu_check": {"epochs": 5, "dataset": "synthetic", "train_subset": 45_000,
                  "backends": ["torch:cuda", "numpy:cuda", "jax:cuda"]},
    # 200 steps of lr 0.01 (0.1 makes the 21-layer plain ELU net diverge), evaluated every 50
    "gradflow": {"lr": 0.01, "epochs": 1, "train_subset": 25_600, "eval_every": 50,
                 "reference_timing": False},
    # a small model and a short run: the Hessian's Lanczos calls dominate
    "hessian": {"hidden_dims": [32], "train_subset": 10_000, "epochs": 5, "backends": ["numpy:cpu"],
                "batch_examples": 1000, "reference_timing": False},
    # ten seeds per implementation at the reference setup (claims 1-5); small models for 6-8
    "claims": _CLAIMS,
    # --quick: the same ten seeds on less data and smaller nets; its verdicts are provisional
    "claims_quick": {**_CLAIMS, "train_subset": 2000, "val_size": 1000, "epochs": 4, "lockstep_seeds": 1,
                     "theory_seeds": 3, "depths": [21, 41], "width": 64, "landscape_dims": [16, 16, 16],
                     "batch_examples": 256, "check_examples": 500, "tiny_weight_decay": 1e-2, "k": 2},
    "data": {},
}


def preset(command: str) -> Config:
    """The command's starting Config: the dataclass defaults with its preset applied."""
    return Config(**{k: _copy(v) for k, v in PRESETS[command].items()})


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_names(name: str, values: object, allowed: tuple[str, ...]) -> None:
    _check(isinstance(values, list) and len(values) > 0 and all(v in allowed for v in values)
           and len(set(values)) == len(values), name, values,
           f"distinct names from {', '.join(allowed)}")


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
        raise UserError(f"{where}: {name} = {shorten(repr(value), 80)} has the wrong type "
                        f"(allowed: {_type_name(elem, is_list)})")
    if elem is float:
        return [float(v) for v in value] if is_list else float(value)
    return list(value) if is_list else value


def load_toml(path: str | Path, command: str = "compare") -> dict[str, Any]:
    """Read a flat TOML file of the ``command``'s Config keys; any other key and wrong types are errors."""
    path = Path(path)
    try:
        text = read_bounded(path, TOML_BYTES, "a config file").decode("utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (allowed: a TOML file in UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {shorten(str(exc), 200)}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply (allowed: flat keys, each a value or a list of "
                        "values)") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    allowed = COMMAND_FIELDS[command]
    for key in raw:
        if key in allowed:
            continue
        if key in FIELDS:
            raise UserError(f"{path}: key {key!r} is not a setting of {prog_name(command)} "
                            f"(allowed: {', '.join(allowed)})")
        raise UserError(f"{path}: unknown key {shorten(repr(key), 80)}"
                        f"{did_you_mean(key.replace('-', '_'), allowed)} (allowed: {', '.join(allowed)})")
    return {k: _coerce_toml(k, v, str(path)) for k, v in raw.items()}


# ---------------------------------------------------------------- command line


def prog_name(command: str) -> str:
    """``python -m bench.<command>``."""
    return f"python -m bench.{command}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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


def add_config_arguments(parser: argparse.ArgumentParser, command: str = "compare") -> None:
    """One flag per Config field the command reads; each help shows the effective default once.

    argparse gets SUPPRESS as the default, so only the flags given reach
    :func:`config_from_args`; the default shown is the preset's where the
    command has one, else the dataclass's. Enumerated fields show their
    choices.
    """
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (flat keys, "
                        "the names of the flags with underscores)")
    start = preset(command)
    for name in COMMAND_FIELDS[command]:
        f = FIELDS[name]
        elem, is_list, optional = field_kind(f)
        choices = f.metadata.get("choices")
        help_text = f.metadata["help"]
        if choices and is_list:
            help_text += f" (choices: {', '.join(choices)})"
        help_text += f" (default: {_show_default(getattr(start, name))})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": name}
        if elem is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        elif is_list:
            # accept both "--seeds 42 43" and "--hidden-dims 512,256"
            parser.add_argument(_flag(name), nargs="+", metavar=name.upper(), **kwargs)
        elif choices:
            parser.add_argument(_flag(name), choices=choices, **kwargs)  # shows {a,b,c}
        else:
            parser.add_argument(_flag(name), type=_parse_scalar(elem, name, optional),
                                metavar=name.upper(), **kwargs)


def _show_default(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return "none" if v is None else str(v)


def _split_list(name: str, tokens: list[str]) -> list[Any] | None:
    elem, _is_list, optional = field_kind(FIELDS[name])
    items = [t.strip() for tok in tokens for t in tok.split(",") if t.strip() != ""]
    if optional and [i.lower() for i in items] == ["none"]:
        return None
    out = []
    for item in items:
        try:
            out.append(elem(item))
        except ValueError:
            raise ConfigError(name, item, _type_name(elem, True)) from None
    return out


def config_from_args(args: argparse.Namespace, command: str = "compare",
                     preset_name: str | None = None) -> Config:
    """The validated Config of one command run: defaults < preset (the command's, or ``preset_name``)
    < ``--config`` TOML < flags."""
    values: dict[str, Any] = {k: _copy(v) for k, v in PRESETS[preset_name or command].items()}
    if getattr(args, "config", None):
        values.update(load_toml(args.config, command))
    for name in COMMAND_FIELDS[command]:
        if name in vars(args):
            v = getattr(args, name)
            _elem, is_list, _ = field_kind(FIELDS[name])
            values[name] = _split_list(name, v) if is_list else v
    return Config(**values).validate()
