"""Every setting of every command, its only default, and each command's preset.

:class:`Config` holds the fields every training command shares (the model,
the optimisation, the data, the harness); each command that reads settings of
its own has a small class of them beside it (:class:`GradflowSettings`,
:class:`HessianSettings`, ...). A dataclass field is the single place where a
default lives: the command line and the TOML loader (``bench.cli``) are
generated from the fields and checked against them, and ``validate()`` rejects
bad values before any work starts, each with one line naming the field, the
value and what is allowed.

Each command reads a subset of the Config fields (:data:`COMMAND_FIELDS`: its
``--help`` lists those alone, and a TOML key outside them is an error) and may
start from a named preset (:data:`PRESETS`, over both kinds of field).
Precedence, for every command: the dataclass defaults < the command's preset
< a TOML file (``--config FILE``) < command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ConfigError, UserError
from impl_common.arch import ACTIVATIONS, residual_dims_ok, residual_example

DTYPES = ("float32", "float64")
DATASETS = ("cifar10", "synthetic")
GATHER_FROM = ("normalised", "uint8")  # what training batches are gathered from (bench.backends.gather)
TORCH_COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
GPU_VARIANTS = ("eager", "cuda_graph", "reduce-overhead")  # bench.gpu_check: torch speed-ups compared
CIFAR10_TRAIN_SIZE = 50_000  # images in the official training archive
SYNTHETIC_TRAIN_SIZE = 2000  # training images of --dataset synthetic without --train-subset
CIFAR10_N_FEATURES = 3 * 32 * 32
CIFAR10_N_CLASSES = 10
MAX_LAYERS = 1024     # hidden layers (hidden_dims entries, depth) at most
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max: a normalised pixel stays below it
MAX_SEEDS = 1000      # seeds of one command
MAX_SEED = 2**32 - 1  # the largest seed every library takes (scikit-learn's random_state)
SEED_WHY = "the largest seed every library here takes: scikit-learn's random_state"
MAX_BACKENDS = 64     # backends of one command
MAX_EPOCHS = 100_000  # epochs of one run at most (the reference trains 10)
MAX_WIDTH = 65_536    # units of one hidden layer at most (the reference has 128)
MAX_COUNT = 10**9     # any other integer setting at most, unless its field declares ``most``


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its command-line help (and ``choices``; ``positional``: an argument,
    not a flag or a TOML key; ``rest``: what follows ``--``; ``most``: the largest integer it takes,
    :data:`MAX_COUNT` when not given, ``why`` its reason, see :func:`check_caps`); lists are copied per instance."""
    meta = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """What every training command shares. The defaults are the reference setup (docs/reference.md)."""

    # --- model
    hidden_dims: list[int] = _opt([128], "widths of the hidden layers, e.g. 128 or 512,256", most=MAX_WIDTH)
    activation: str = _opt("elu", "hidden activation", choices=ACTIVATIONS)
    alpha: float = _opt(1.0, "ELU alpha (ignored by relu and tanh)")
    residual: bool = _opt(False, "form residual blocks x + Linear(h(Linear(x))) from hidden layers "
                                 "[F, N1, F, N2, F, ...]")
    # --- optimisation
    lr: float = _opt(0.1, "SGD learning rate")
    momentum: float = _opt(0.0, "SGD momentum (torch.optim.SGD convention, no Nesterov)")
    weight_decay: float = _opt(0.0, "L2 weight decay added to the gradient")
    batch_size: int = _opt(128, "training batch size (the last partial batch is dropped)")
    epochs: int = _opt(10, "training epochs", most=MAX_EPOCHS)
    seeds: list[int] = _opt([42], "one run per seed and backend; the seed fixes the init, "
                                  "the validation split and every epoch's batch order",
                            most=MAX_SEED, why=SEED_WHY)
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
        check_caps(self)
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
               f"three finite numbers > 0 (R G B), not {len(self.std)}" if len(self.std) != 3
               else "three finite numbers > 0 (R G B)")
        if not _pixels_finite(self.mean, self.std):  # blamed on the mean when it overflows even with the default std
            name = "mean" if not _pixels_finite(self.mean, Config().std) else "std"
            _check(False, name, getattr(self, name), "values for which every normalised pixel, (x - mean) / std "
                   "for x in [0, 1], is finite in float32")
        if self.dataset == "synthetic":  # its data are made normalised: a record of others would be false
            _check(self.data_dir is None, "data_dir", self.data_dir,
                   "none with --dataset synthetic, which reads no data (a path given is never ignored)")
            for name in ("mean", "std"):
                _check(getattr(self, name) == getattr(Config(), name), name, getattr(self, name),
                       "the default with --dataset synthetic, whose data are made normalised (mean "
                       "and std normalise CIFAR-10's pixels)")
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
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- each command's own settings


@dataclass
class GradflowSettings:
    """``bench.gradflow``: a deep plain and residual net, NumPy and PyTorch from the same weights."""

    depth: int = _opt(21, "hidden layers of the deep net, an odd count >= 3: the residual net is a "
                          "stem and (depth-1)/2 blocks, the plain net the same layers without skips",
                      most=MAX_LAYERS)
    width: int = _opt(128, "width of every hidden layer of the deep net", most=MAX_WIDTH)
    activations: list[str] = _opt(["elu", "tanh"], "activations to run the deep net with",
                                  choices=ACTIVATIONS)
    batch_examples: int = _opt(512, "training rows of the fixed batch the gradients are taken on")
    check_steps: int = _opt(2, "first lock-step steps whose batch losses must agree to grad_rtol")
    grad_rtol: float = _opt(1e-4, "largest relative difference allowed between NumPy and PyTorch: "
                                  "of dL/dW at the same weights and of the first check_steps losses")
    trajectory_rtol: float | None = _opt(None, "also require the per-layer gradient norms of the two "
                                               "trajectories after training to agree to this "
                                               "(none: reported only)")

    def validate(self) -> "GradflowSettings":
        _check(_is_int(self.depth) and 3 <= self.depth <= MAX_LAYERS and self.depth % 2 == 1, "depth",
               self.depth, f"an odd integer from 3 to {MAX_LAYERS - 1} (a stem and whole residual blocks)")
        _check(self.width >= 1, "width", self.width, "an integer >= 1")
        _check_names("activations", self.activations, ACTIVATIONS)
        _positive(self, ("batch_examples", "check_steps"), ("grad_rtol",))
        if self.trajectory_rtol is not None:
            _positive(self, (), ("trajectory_rtol",), "a finite number > 0, or none")
        return self


@dataclass
class HessianSettings:
    """``bench.hessian``: the extreme eigenvalues of the loss Hessian, and its exact check."""

    batch_examples: int = _opt(512, "training rows of the fixed batch the Hessian is taken on")
    k: int = _opt(5, "eigenvalues at each end of the spectrum", most=100)  # bench.theory.hessian.MAX_K
    tol: float = _opt(1e-8, "Lanczos (ARPACK) relative tolerance")
    max_matvecs: int = _opt(3000, "Hessian-vector products per Lanczos call at most", most=1_000_000)
    eps: float = _opt(1e-5, "central-difference step along a unit direction (NumPy side; "
                            "about (3 x float64 epsilon)^(1/3))")
    eig_rtol: float = _opt(0.01, "NumPy vs PyTorch eigenvalues: relative difference allowed")
    check_features: int = _opt(32, "exact check: input features of the tiny model")
    check_hidden: int = _opt(8, "exact check: hidden units of the tiny model")
    check_examples: int = _opt(300, "exact check: training rows")
    check_rtol: float = _opt(1e-4, "exact check: relative error allowed")

    def validate(self) -> "HessianSettings":
        _positive(self, ("batch_examples", "k", "check_features", "check_hidden", "check_examples"),
                  ("tol", "eps", "eig_rtol", "check_rtol"))
        _check(self.max_matvecs >= 10, "max_matvecs", self.max_matvecs, "an integer >= 10")
        return self


@dataclass
class GpuCheckSettings:
    """``bench.gpu_check``: which torch speed-ups it times."""

    gpu_variants: list[str] = _opt(list(GPU_VARIANTS), "torch speed-ups the GPU check times",
                                   choices=GPU_VARIANTS)

    def validate(self) -> "GpuCheckSettings":
        _check_names("gpu_variants", self.gpu_variants, GPU_VARIANTS)
        return self


def _same(cls: type, name: str, help: str | None = None) -> Any:
    """Another settings class's field, its default defined there once (``help``: this command's words)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return _opt(default, help or f.metadata["help"], **{k: v for k, v in f.metadata.items() if k != "help"})


@dataclass
class ClaimsSettings:
    """``bench.claims``: which claims, how many seeds, and the nets of claims 6-8."""

    only: list[int] = _opt(list(range(1, 10)), "claims to test, by id 1-9")
    quick: bool = _opt(False, "start from the quick preset (PRESETS['claims_quick'] of bench.config; "
                              "flags and TOML still override it): less data, shorter training, smaller "
                              "nets; every verdict is provisional")
    lockstep_seeds: int = _opt(3, "claim 4: seeds whose first epoch PyTorch reruns from NumPy's "
                                  "weights and batches")
    theory_seeds: int = _opt(5, "claims 6-8: how many of the seeds (the first) the gradient-flow and "
                                "Hessian measurements use")
    depths: list[int] = _opt([21, 41, 81, 161], "claim 6: depths (odd, >= 3) of the plain and residual "
                                                "nets of width --width, shallowest first",
                      most=MAX_LAYERS)
    width: int = _same(GradflowSettings, "width", "claim 6: width of every hidden layer of the deep nets")
    landscape_dims: list[int] = _opt([32, 32, 32, 32, 32], "claim 7: hidden widths [F, N1, F, ...] of "
                                                           "the plain and residual nets whose Hessians "
                                                           "are compared", most=MAX_WIDTH)
    batch_examples: int = _same(HessianSettings, "batch_examples", "claims 6-8: training rows of the fixed "
                                                                   "batch the gradients and Hessians use")
    k: int = _same(HessianSettings, "k")
    tol: float = _same(HessianSettings, "tol")
    max_matvecs: int = _same(HessianSettings, "max_matvecs")
    grad_tol: float = _opt(1e-6, "claim 8: gradient norm below which the tiny model's full-batch loss "
                                 "counts as at its minimum")
    tiny_weight_decay: float = _opt(1e-3, "claim 8: L2 weight decay of the tiny model's training and "
                                          "objective (without it the loss has no finite minimum)")
    check_features: int = _same(HessianSettings, "check_features", "claim 8, the tiny model: input features")
    check_hidden: int = _same(HessianSettings, "check_hidden", "claim 8, the tiny model: hidden units")
    check_examples: int = _same(HessianSettings, "check_examples", "claim 8, the tiny model: training rows")

    def validate(self) -> "ClaimsSettings":
        _check(isinstance(self.only, list) and len(self.only) > 0 and len(set(self.only)) == len(self.only)
               and all(_is_int(i) and 1 <= i <= 9 for i in self.only), "only", self.only,
               "distinct claim ids from 1 to 9, e.g. 1,4,8")
        _check(len(self.depths) > 0 and all(_is_int(d) and d >= 3 and d % 2 == 1 for d in self.depths),
               "depths", self.depths, "odd integers >= 3 (a stem and whole residual blocks)")
        _check(residual_dims_ok(self.landscape_dims) and all(_is_int(d) and d > 0 for d in self.landscape_dims),
               "landscape_dims", self.landscape_dims, "[F, N1, F, N2, F, ...]: an odd count of at least 3 "
               f"positive widths, every other one equal to the first, e.g. {residual_example(self.landscape_dims)}")
        _positive(self, ("lockstep_seeds", "theory_seeds", "width", "batch_examples", "k", "check_features",
                         "check_hidden", "check_examples"), ("tol", "grad_tol", "tiny_weight_decay"))
        _check(self.max_matvecs >= 10, "max_matvecs", self.max_matvecs, "an integer >= 10")
        return self


@dataclass
class CheckSettings:
    """``bench.check``: what to check, and each implementation's limits."""

    targets: list[str] = _opt([], "a folder holding modules.py (and maybe mlp_numpy.py), a modules .py "
                                  "file, an importable module or package name such as impl_numpy; "
                                  "several of them, or one folder of submission folders, for a "
                                  "class-wide table", positional="PATH_OR_MODULE")
    seed: int = _opt(0, "seed of the random inputs, weights and upstream gradients", most=MAX_SEED,
                     why=SEED_WHY)
    json: str | None = _opt(None, "one implementation: also write the table and diagnoses as JSON")
    out: str | None = _opt(None, "several submissions: the folder for check.csv and report.md (new or "
                                 "empty; none: results/<timestamp>_check/)")
    timeout: float = _opt(60.0, "seconds each implementation may take")
    memory_mb: int = _opt(2048, "MiB each implementation may allocate", most=2**24)
    jobs: int = _opt(os.cpu_count() or 1, "submissions checked at the same time (the cores here)", most=1024)

    def validate(self) -> "CheckSettings":
        _check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check(self.jobs >= 1, "jobs", self.jobs, "an integer >= 1")
        _check(self.memory_mb >= 64, "memory_mb", self.memory_mb, "an integer >= 64")
        _check(_finite(self.timeout) and 1 <= self.timeout <= 86400, "timeout", self.timeout,
               "seconds from 1 to 86400")
        return self


@dataclass
class OpRatiosSettings:
    """``bench.op_ratios``: a saved pytest-benchmark JSON, or a fresh run of ``benchmarks/``."""

    saved: str | None = _opt(None, "a JSON written by --benchmark-save (.benchmarks/<machine>/NNNN_name"
                                   ".json) or --benchmark-json", positional="SAVED")
    run: bool = _opt(False, "first run benchmarks/ (saved as 'ops' and as OUT/ops.json); pytest "
                            "arguments may follow a '--'")
    pytest_args: list[str] = _opt([], "pytest arguments (after '--')", rest=True)

    def validate(self) -> "OpRatiosSettings":
        if self.run == (self.saved is not None):
            raise UserError("give either a saved JSON or --run, not both" if self.run
                            else "give a saved pytest-benchmark JSON, or --run to make one")
        if self.pytest_args and not self.run:
            raise UserError(f"pytest arguments after '--' need --run: {' '.join(self.pytest_args)}")
        return self


@dataclass
class SweepSettings:
    """``bench.sweep``: the grid, and where its tasks run."""

    grid: list[str] = _opt([], "swept fields, e.g. batch_size=32,128 hidden_dims=64,512x256 (a list "
                               "field takes one list per value, items joined by 'x')", whole=True,
                           metavar="FIELD=V1,V2")
    scheduler: str | None = _opt(None, "run on this Dask scheduler, e.g. tcp://host:8786 (the 'dask' "
                                       "extra; workers need --resources point=1 or --nthreads 1)")
    local_cluster: int | None = _opt(None, "run on a Dask LocalCluster of N one-thread workers on "
                                           "127.0.0.1 (the 'dask' extra; workers share this "
                                           "machine's cores)")

    def validate(self) -> "SweepSettings":
        if not self.grid:
            raise UserError("--grid needs at least one FIELD=V1,V2,... item")
        if self.scheduler is not None and self.local_cluster is not None:
            raise UserError("give --scheduler or --local-cluster, not both (one executor)")
        return self


@dataclass
class DataSettings:
    """``bench.data``: whether it may download, and show the download's progress."""

    download: bool = _opt(True, "download the official archive when no copy is found")
    progress: bool = _opt(True, "a progress bar while downloading")

    def validate(self) -> "DataSettings":
        return self


# ---------------------------------------------------------------- commands: fields and presets

MODEL = ("hidden_dims", "activation", "alpha", "residual")
TRAINING = ("lr", "momentum", "weight_decay", "batch_size", "epochs", "seeds", "dtype")
DATA = ("dataset", "val_size", "train_subset", "mean", "std", "data_dir", "gather_from")
HARNESS = ("backends", "threads", "target_acc", "eval_batch_size", "eval_every", "lockstep",
           "reference_timing")
SPEEDUPS = ("torch_compile", "cuda_graph", "tf32", "jax_scan")
PEERS = ("dataloader_workers",)

# the Config fields each command reads: its flags and the TOML keys it accepts (beside its own settings)
COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "compare": MODEL + TRAINING + DATA + HARNESS + SPEEDUPS + PEERS,
    "sweep": MODEL + TRAINING + DATA + tuple(f for f in HARNESS if f != "lockstep") + SPEEDUPS + PEERS,
    "epoch_ratio": MODEL + TRAINING + DATA + ("backends", "threads", "eval_batch_size") + SPEEDUPS
                   + PEERS,
    "gpu_check": MODEL + TRAINING + DATA + ("backends", "threads", "eval_batch_size", "tf32"),
    "gradflow": ("alpha",) + TRAINING + DATA + ("threads", "eval_batch_size", "eval_every"),
    "hessian": MODEL + TRAINING + DATA + ("backends", "threads", "eval_batch_size"),
    "claims": ("hidden_dims", "activation", "alpha") + TRAINING + DATA + ("threads", "eval_batch_size"),
    "data": DATA[:-1] + ("seeds", "dtype"),  # python -m bench.data: the summary of a CIFAR-10 copy
    "check": (), "op_ratios": (),
}
# each command's own settings class
SETTINGS: dict[str, type] = {"gradflow": GradflowSettings, "hessian": HessianSettings,
                             "gpu_check": GpuCheckSettings, "claims": ClaimsSettings, "check": CheckSettings,
                             "op_ratios": OpRatiosSettings, "sweep": SweepSettings, "data": DataSettings}
_CLAIMS = {"seeds": list(range(42, 52)), "batch_examples": 1000, "check_examples": 2000, "k": 3,
           "reference_timing": False}
# each command's own defaults, applied before the TOML file and the flags
PRESETS: dict[str, dict[str, Any]] = {
    # the reference setup with three seeds: the first run answers both questions, which backend is
    # faster (27 trusted epochs each at most) and whether their accuracy differs (Welch's t, n = 3),
    # in an estimated 1.5 minutes on 2 quiet cores (docs/measurements.md); --seeds 42 is the
    # reference setup itself
    "compare": {"seeds": [42, 43, 44]},
    # synthetic data of the CIFAR-10 training size: the ratio needs no real images
    "epoch_ratio": {"epochs": 5, "dataset": "synthetic", "train_subset": 45_000, "val_size": 1000,
                    "backends": ["numpy:cpu", "torch:cpu"]},
    "gpu_check": {"epochs": 5, "dataset": "synthetic", "train_subset": 45_000,
                  "backends": ["torch:cuda", "numpy:cuda", "jax:cuda"]},
    # no CUDA backend can run here: a tiny CPU pass of the same code, for the code path only
    "gpu_check_cpu": {"dataset": "synthetic", "train_subset": 2048, "val_size": 256, "epochs": 2,
                      "backends": ["torch:cpu", "numpy:cpu", "jax:cpu"], "gpu_variants": ["eager"]},
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
}


def split(values: dict[str, Any], command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` as (Config fields, the command's settings fields); lists copied."""
    own = {f.name for f in dataclasses.fields(SETTINGS[command])} if command in SETTINGS else set()
    values = {k: list(v) if isinstance(v, list) else v for k, v in values.items()}
    return ({k: v for k, v in values.items() if k not in own}, {k: v for k, v in values.items() if k in own})


def preset(command: str) -> Config:
    """The command's starting Config: the dataclass defaults with its preset applied."""
    return Config(**split(PRESETS.get(command, {}), command)[0])


def _pixels_finite(mean: list[float], std: list[float]) -> bool:
    return all(max(abs(m), abs(1 - m)) / s < FLOAT32_MAX for m, s in zip(mean, std))


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_names(name: str, values: object, allowed: tuple[str, ...]) -> None:
    _check(isinstance(values, list) and len(values) > 0 and all(v in allowed for v in values)
           and len(set(values)) == len(values), name, values,
           f"distinct names from {', '.join(allowed)}")


def _positive(obj: Any, ints: tuple[str, ...], floats: tuple[str, ...],
              allowed: str = "a finite number > 0") -> None:
    for name in ints:
        _check(getattr(obj, name) >= 1, name, getattr(obj, name), "an integer >= 1")
    for name in floats:
        value = getattr(obj, name)
        _check(_finite(value) and value > 0, name, value, allowed)


def check_caps(obj: Any) -> None:
    """Every integer of a settings dataclass (lists too) within -most..most of its field (``most``, else
    :data:`MAX_COUNT`): a value only a mistake reaches is one ConfigError line before any work."""
    for f in dataclasses.fields(obj):
        value, most = getattr(obj, f.name), f.metadata.get("most", MAX_COUNT)
        if isinstance(value, list) and len(value) > MAX_LAYERS and any(_is_int(v) for v in value):
            raise ConfigError(f.name, value, f"a list of at most {MAX_LAYERS} integers")
        if any(_is_int(v) and abs(v) > most for v in (value if isinstance(value, list) else [value])):
            why = f.metadata.get("why", "a cap that only a mistake reaches: the work would not finish")
            raise ConfigError(f.name, value, f"at most {most:_} ({why})")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)
