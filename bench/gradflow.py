"""Gradient flow in a deep MLP, plain versus residual, ELU and tanh, NumPy and PyTorch from the same weights.

Run it as::

    python -m bench.gradflow --data-dir ../shared/cifar10            # 21 x 128, 200 steps, a few minutes
    python -m bench.gradflow --depth 41 --steps 500 --activations tanh --lr 0.003
    python -m bench.gradflow --dataset synthetic --depth 5 --width 16 --steps 10   # seconds

For every activation, the plain and the residual network (the same linear
layers: ``--depth`` hidden layers of ``--width``; residual = a stem and
(depth - 1)/2 blocks ``a + L2(h(L1(a)))``, THEORY.md §4) start from one set of
weights, drawn by the NumPy MLP from the seed and copied into the PyTorch MLP.
The command records:

* the Frobenius norm of dL/dW of every linear layer on a fixed batch (the
  first ``--batch-examples`` training rows), at initialisation and after
  ``--steps`` SGD steps;
* the training: both implementations take the same steps on the same batches
  through their harness backends' ``train_batch`` (the batch order of
  ``bench.loop``), with the training and validation loss and accuracy every
  ``--record-every`` steps and every step's batch loss;
* whether the implementations agree: dL/dW of the two at the same weights (at
  init and at each one's trained weights; relative Frobenius difference <=
  ``--rtol``), the first ``--check-steps`` lock-step batch losses (<=
  ``--rtol``), and how soon the two trajectories separate compared with a
  float32 control (PyTorch from the weights times 1 + machine epsilon). A
  disagreement is one line on stderr and exit status 1, after every file is
  written.

Every Config flag is accepted except those this command sets itself
(hidden_dims, activation, residual, epochs, backends, lockstep; one seed).
Its own default differs from the Config's for ``lr`` (``COMMAND_DEFAULTS``:
0.1 makes the 21-layer plain ELU net diverge). Outputs in ``--out`` (default
``results/<timestamp>_gradflow/``): ``gradflow.csv``, ``ratios.csv``,
``training.csv``, ``steps.csv``, ``agreement.csv``, ``networks.csv``,
``gradflow.png``, ``training.png``, ``env.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.config import ACTIVATIONS, Config, add_config_arguments
from bench.datasource import load_for_config
from bench.env import collect_env
from bench.errors import OneLineArgumentParser, UserError, run_cli
from bench.io import write_csv, write_json, write_text
from bench.loop import epoch_order
from bench.report import md_table
from bench.theory.cli import (
    command_config,
    data_info,
    make_output_dir,
    positive_float,
    positive_int,
)
from bench.theory.params import (
    Arch,
    numpy_loss_grads,
    numpy_model,
    torch_loss_grads,
    torch_model,
)
from bench.threads import default_threads, limit_threads

PROG = "python -m bench.gradflow"
ARCHS = ("plain", "residual")
IMPLS = ("numpy", "torch")
EXIT_DISAGREE = 1
HORIZON_RTOL = 1e-3  # the lock-step "horizon": the first step whose batch losses differ by more than this
HORIZON_FACTOR = 2   # numpy-vs-torch horizon must be at least the float32 control's horizon / this
CONTROL = "torch+1ulp"  # the control run: torch from the initial weights scaled by (1 + machine epsilon)
# Config fields this command defaults differently when not given: the Config's lr 0.1 makes the
# 21-layer plain ELU net diverge within 25 steps on CIFAR-10
COMMAND_DEFAULTS: dict[str, Any] = {"lr": 0.01}


@dataclass
class Options:
    """The command's own settings (the model and training settings are in Config)."""

    depth: int = 21               # hidden layers: a stem + 10 residual blocks (an odd count; see --help)
    width: int = 128              # every hidden layer's width
    steps: int = 200              # SGD steps between the two gradient measurements
    batch_examples: int = 512     # training rows of the fixed batch the gradient norms are taken on
    activations: tuple[str, ...] = ("elu", "tanh")
    record_every: int = 50        # steps between loss/accuracy records
    check_steps: int = 2          # first lock-step steps whose batch losses must agree to rtol
    rtol: float = 1e-4            # numpy vs torch at the same weights (dL/dW) and over the first check_steps
    trajectory_rtol: float | None = None  # after training, each at its own weights: report only when None


def build_parser() -> OneLineArgumentParser:
    d = Options()
    p = OneLineArgumentParser(
        prog=PROG,
        description="Per-layer gradient norms of a deep plain and residual MLP (ELU, tanh) in NumPy "
                    "and PyTorch from identical weights, at init and after N lock-step SGD steps. "
                    "Command defaults where not given: "
                    + ", ".join(f"{k}={v}" for k, v in COMMAND_DEFAULTS.items()))
    add_config_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (must not exist yet, or be empty; "
                   "default: results/<timestamp>_gradflow/)")
    p.add_argument("--depth", type=positive_int("depth", 3), default=d.depth,
                   help="hidden layers, an odd count >= 3: the residual net is a stem and (depth-1)/2 "
                        f"blocks, the plain net the same layers without the skips (default: {d.depth}: "
                        "a stem and 10 blocks)")
    p.add_argument("--width", type=positive_int("width"), default=d.width,
                   help=f"width of every hidden layer (default: {d.width})")
    p.add_argument("--steps", type=positive_int("steps"), default=d.steps,
                   help=f"SGD steps before the second measurement (default: {d.steps})")
    p.add_argument("--batch-examples", type=positive_int("batch_examples"), default=d.batch_examples,
                   help="training rows of the fixed batch for the gradient norms "
                        f"(default: {d.batch_examples})")
    p.add_argument("--activations", default=",".join(d.activations),
                   help=f"comma-separated activations to sweep (default: {','.join(d.activations)})")
    p.add_argument("--record-every", type=positive_int("record_every"), default=d.record_every,
                   help=f"steps between loss/accuracy records (default: {d.record_every})")
    p.add_argument("--check-steps", type=positive_int("check_steps"), default=d.check_steps,
                   help="lock-step steps whose batch losses must agree to --rtol "
                        f"(default: {d.check_steps})")
    p.add_argument("--rtol", type=positive_float("rtol"), default=d.rtol,
                   help="largest relative difference allowed between the implementations: of dL/dW at "
                        f"the same weights, and of the first --check-steps batch losses (default: {d.rtol})")
    p.add_argument("--trajectory-rtol", type=positive_float("trajectory_rtol"), default=d.trajectory_rtol,
                   help="if given, also require the per-layer gradient norms of the two lock-step "
                        "trajectories after training (each at its own weights) to agree to this; by "
                        "default that difference is only reported (float32 rounding differences grow "
                        "over hundreds of steps of a deep net)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def options_from_args(args) -> Options:
    acts = tuple(a.strip() for a in args.activations.split(",") if a.strip())
    bad = [a for a in acts if a not in ACTIVATIONS]
    if not acts or bad or len(set(acts)) != len(acts):
        raise UserError(f"invalid activations: {args.activations!r} (allowed: distinct names from "
                        f"{', '.join(ACTIVATIONS)}, comma-separated)")
    if args.depth % 2 == 0:
        raise UserError(f"invalid depth: {args.depth} (allowed: an odd integer >= 3, so that the residual "
                        f"net is a stem and whole blocks, e.g. {args.depth + 1})")
    return Options(depth=args.depth, width=args.width, steps=args.steps,
                   batch_examples=args.batch_examples, activations=acts,
                   record_every=args.record_every, check_steps=args.check_steps, rtol=args.rtol,
                   trajectory_rtol=args.trajectory_rtol)


# ---------------------------------------------------------------- measurement


def weight_grad_norms(grads: dict[str, np.ndarray], n_linears: int) -> np.ndarray:
    """‖dL/dW_i‖_F of every linear layer i = 0 .. n_linears-1, float64 (n_linears,)."""
    return np.array([np.linalg.norm(grads[f"linears.{i}.weight"].astype(np.float64))
                     for i in range(n_linears)])


def grads_of(impl: str, arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
             dtype) -> tuple[float, dict[str, np.ndarray]]:
    """(loss, grads) of a fresh ``impl`` model holding ``state`` on the batch (x, y)."""
    if impl == "numpy":
        return numpy_loss_grads(numpy_model(arch, state, dtype), x, y)
    return torch_loss_grads(torch_model(arch, state, dtype), x, y)


def max_rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], n_linears: int) -> tuple[float, int]:
    """max over layers of ‖dW_a − dW_b‖_F / ‖dW_b‖_F, and the layer where it is largest."""
    rel = []
    for i in range(n_linears):
        ga = a[f"linears.{i}.weight"].astype(np.float64)
        gb = b[f"linears.{i}.weight"].astype(np.float64)
        rel.append(np.linalg.norm(ga - gb) / max(np.linalg.norm(gb), np.finfo(np.float64).tiny))
    rel = np.asarray(rel)
    if not np.all(np.isfinite(rel)):
        return math.inf, int(np.argmax(~np.isfinite(rel)))
    return float(rel.max()), int(rel.argmax())


def make_backends(config: Config, data) -> dict[str, Any]:
    """A loaded NumpyBackend, TorchBackend and control TorchBackend on the CPU for ``config``."""
    from impl_numpy.backend import NumpyBackend
    from impl_torch.backend import TorchBackend

    backends = {"numpy": NumpyBackend(config, "cpu"), "torch": TorchBackend(config, "cpu"),
                CONTROL: TorchBackend(config, "cpu")}
    for b in backends.values():
        b.load_data(data)
    return backends


def train_lockstep(backends: dict[str, Any], config: Config, seed: int, n_train: int, steps: int,
                   record_every: int, base: dict[str, Any], *, loss_only: tuple[str, ...] = ()
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None]:
    """``steps`` SGD steps on every backend, the same batches in the same order (``bench.loop`` order).

    Returns the loss/accuracy records (one per backend at step 0 and every
    ``record_every`` steps; none for the backends in ``loss_only``), every
    step's batch loss per backend, and the first step whose loss was not
    finite on a backend outside ``loss_only`` (None if none).
    """
    batch = config.batch_size
    per_epoch = n_train // batch  # drop_last, as the harness does
    rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    diverged: list[int] = []

    def record(step: int, first: bool = False) -> None:
        for impl, b in backends.items():
            train_loss = train_acc = math.nan
            if not first:
                rec = b.pop_step_records()
                start = step - len(rec.losses)
                step_rows.extend({**base, "impl": impl, "step": start + j + 1, "loss": float(v)}
                                 for j, v in enumerate(rec.losses))
                bad = np.flatnonzero(~np.isfinite(rec.losses))
                if len(bad) and impl not in loss_only:
                    diverged.append(start + int(bad[0]) + 1)
                if impl in loss_only:
                    continue
                if len(rec.losses):
                    train_loss = float(np.mean(rec.losses))
                train_acc = rec.correct / rec.seen if rec.seen else math.nan
            if impl in loss_only:
                continue
            val_loss, val_acc = b.evaluate("val")
            rows.append({**base, "impl": impl, "step": step, "epoch": step * batch / n_train,
                         "train_loss": train_loss, "train_acc": train_acc,
                         "val_loss": val_loss, "val_acc": val_acc})

    record(0, first=True)
    idx: dict[str, Any] = {}
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            order = epoch_order(seed, epoch + 1, n_train)
            idx = {impl: b.device_indices(order) for impl, b in backends.items()}
        for impl, b in backends.items():
            b.train_batch(idx[impl][k * batch:(k + 1) * batch])
        if (step + 1) % record_every == 0 or step + 1 == steps:
            record(step + 1)
    return rows, step_rows, (min(diverged) if diverged else None)


def step_loss_diff(step_rows: list[dict[str, Any]], a_name: str, b_name: str) -> pd.Series:
    """|loss_a − loss_b| / |loss_b| of every step (inf where only one is not finite)."""
    table = pd.DataFrame(step_rows).pivot_table(index="step", columns="impl", values="loss",
                                                dropna=False)
    a, b = table[a_name].to_numpy(), table[b_name].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(a - b) / np.abs(b)
    both_bad = ~np.isfinite(a) & ~np.isfinite(b)
    rel = np.where(both_bad, 0.0, np.where(np.isfinite(rel), rel, np.inf))
    return pd.Series(rel, index=table.index)


def lockstep_horizon(rel: pd.Series) -> int | None:
    """The first step whose relative loss difference exceeds HORIZON_RTOL (None: never)."""
    above = rel[rel > HORIZON_RTOL]
    return int(above.index[0]) if len(above) else None


def _show_step(step: int | None, never: int) -> str:
    return str(step) if step is not None else f"> {never - 1}"


def run_one(config: Config, data, opts: Options, activation: str, arch_name: str, seed: int,
            x_fixed: np.ndarray, y_fixed: np.ndarray, init_state: dict[str, np.ndarray],
            log) -> dict[str, Any]:
    """Gradient norms at init and after training, the training records and the agreement checks
    of one (activation, plain/residual) network."""
    residual = arch_name == "residual"
    cfg = dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, activation=activation,
                              residual=residual)
    arch = Arch(data.n_features, tuple(cfg.hidden_dims), data.n_classes, activation, cfg.alpha, residual)
    dtype = np.dtype(cfg.dtype)
    n = arch.n_linears
    base = {"arch": arch_name, "activation": activation}
    after = f"after {opts.steps} steps"
    norms: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []

    def add_norms(stage: str, step: int, impl: str, loss: float, grads: dict[str, np.ndarray]) -> None:
        for i, g in enumerate(weight_grad_norms(grads, n)):
            out_f, in_f = grads[f"linears.{i}.weight"].shape
            norms.append({**base, "impl": impl, "stage": stage, "step": step, "layer": i,
                          "name": f"linears.{i}.weight", "fan_in": in_f, "fan_out": out_f,
                          "grad_norm": float(g), "batch_loss": loss})

    def check(stage: str, what: str, rel: float, where: str, rtol: float | None) -> None:
        checks.append({**base, "stage": stage, "check": what, "max_rel_diff": rel, "where": where,
                       "rtol": math.nan if rtol is None else rtol,
                       "ok": True if rtol is None else bool(rel <= rtol)})

    # --- at initialisation: both implementations from the same weights
    init = {impl: grads_of(impl, arch, init_state, x_fixed, y_fixed, dtype) for impl in IMPLS}
    for impl, (loss, grads) in init.items():
        add_norms("init", 0, impl, loss, grads)
    rel, layer = max_rel_diff(init["numpy"][1], init["torch"][1], n)
    check("init", "same weights: ‖dW_np − dW_torch‖/‖dW_torch‖", rel, f"layer {layer}", opts.rtol)

    # --- training, lock-step, through the backends' own steps
    # NOTE: the control is a third run, torch from the same weights scaled by (1 + eps): how far
    # float32 rounding alone moves this network's trajectory, to judge the numpy-torch drift against
    t0 = time.perf_counter()
    backends = make_backends(cfg, data)
    one_ulp = 1 + np.finfo(dtype).eps
    for impl, b in backends.items():
        b.init_model(seed)
        b.import_state(init_state if impl != CONTROL else
                       {k: (v * one_ulp).astype(dtype) for k, v in init_state.items()})
    training, step_rows, diverged = train_lockstep(backends, cfg, seed, len(data.y_train), opts.steps,
                                                   opts.record_every, base, loss_only=(CONTROL,))
    seconds = time.perf_counter() - t0
    trained = {impl: b.export_state() for impl, b in backends.items() if impl != CONTROL}
    del backends
    rel_steps = step_loss_diff(step_rows, "numpy", "torch")
    first = rel_steps.loc[:opts.check_steps]
    check("training", f"lock-step batch loss, steps 1-{int(first.index.max())}: |l_np − l_torch|/|l_torch|",
          float(first.max()), f"step {int(first.idxmax())}", opts.rtol)
    horizon = lockstep_horizon(rel_steps)
    control = lockstep_horizon(step_loss_diff(step_rows, CONTROL, "torch"))
    never = len(rel_steps) + 1
    h, c = horizon or never, control or never
    checks.append({**base, "stage": "training", "check": f"lock-step horizon (first step with loss "
                   f"difference > {HORIZON_RTOL:g}): numpy vs torch, against torch vs {CONTROL}",
                   "max_rel_diff": math.nan, "where": f"step {_show_step(horizon, never)} vs control "
                   f"step {_show_step(control, never)}", "rtol": math.nan,
                   "ok": bool(h * HORIZON_FACTOR >= c)})

    # --- after training: each at its own weights, and each implementation at the other's weights
    final = {impl: grads_of(impl, arch, trained[impl], x_fixed, y_fixed, dtype) for impl in IMPLS}
    for impl, (loss, grads) in final.items():
        add_norms(after, opts.steps, impl, loss, grads)
    if diverged is None:
        for owner, other in (("numpy", "torch"), ("torch", "numpy")):
            cross = grads_of(other, arch, trained[owner], x_fixed, y_fixed, dtype)
            g = {owner: final[owner][1], other: cross[1]}
            rel, layer = max_rel_diff(g["numpy"], g["torch"], n)
            check(after, f"same weights ({owner}'s trained): ‖dW_np − dW_torch‖/‖dW_torch‖", rel,
                  f"layer {layer}", opts.rtol)
        gn = {impl: weight_grad_norms(final[impl][1], n) for impl in IMPLS}
        traj = np.abs(gn["numpy"] - gn["torch"]) / np.maximum(gn["torch"], np.finfo(np.float64).tiny)
        check(after, "lock-step trajectories, each at its own weights: |‖dW_np‖ − ‖dW_torch‖|/‖dW_torch‖",
              float(traj.max()), f"layer {int(traj.argmax())}", opts.trajectory_rtol)
    status = "ok" if diverged is None else f"diverged at step {diverged}"
    last = {r["impl"]: r for r in training[-2:]}
    network = {**base, "status": status, "train_seconds": seconds,
               "val_acc_numpy": last["numpy"]["val_acc"], "val_acc_torch": last["torch"]["val_acc"],
               "init_loss": init["numpy"][0],
               "lockstep_horizon": _show_step(horizon, never),
               "control_horizon": _show_step(control, never)}
    log(f"{activation:>4} {arch_name:<8}: {status}, {opts.steps} steps in {seconds:.1f} s, val acc "
        f"{last['numpy']['val_acc']:.3f}; losses agree to {HORIZON_RTOL:g} until step "
        f"{network['lockstep_horizon']}")
    return {"norms": norms, "training": training, "steps": step_rows, "checks": checks,
            "network": network}


def first_last_ratios(norms: pd.DataFrame, depth: int) -> pd.DataFrame:
    """Per (activation, arch, stage, impl): ‖dW‖ of the first layer over the last, two ways.

    ``first_last``: the input layer (0) over the output layer (depth).
    ``hidden_first_last``: the first over the last width×width hidden layer
    (1 over depth-1): same shapes, so the ratio is the flow alone.
    """
    rows = []
    keys = ["activation", "arch", "stage", "impl"]
    for key, g in norms.groupby(keys, sort=False):
        by = g.set_index("layer")["grad_norm"]
        rows.append({**dict(zip(keys, key)),
                     "first_last": by[0] / by[depth],
                     "hidden_first_last": by[1] / by[depth - 1],
                     "min_layer_norm": float(by.min()), "max_layer_norm": float(by.max())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- outputs


def plot_gradflow(norms: pd.DataFrame, path: Path) -> Path:
    """Per-layer ‖dL/dW‖ on a log scale: panels activation × stage, a line per arch × impl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = list(dict.fromkeys(norms["activation"]))
    stages = list(dict.fromkeys(norms["stage"]))
    fig, axes = plt.subplots(len(acts), len(stages), figsize=(5.2 * len(stages), 3.6 * len(acts)),
                             squeeze=False, sharex=True)
    colours = {"plain": "tab:blue", "residual": "tab:red"}
    styles = {"numpy": {"ls": "-", "marker": "o", "ms": 4}, "torch": {"ls": "--", "marker": "x", "ms": 6}}
    for r, act in enumerate(acts):
        for c, stage in enumerate(stages):
            ax = axes[r][c]
            for arch in ARCHS:
                for impl in IMPLS:
                    g = norms[(norms.activation == act) & (norms.stage == stage) & (norms.arch == arch)
                              & (norms.impl == impl)].sort_values("layer")
                    if len(g):
                        ax.plot(g["layer"], g["grad_norm"], color=colours[arch], label=f"{arch} / {impl}",
                                **styles[impl])
            ax.set_yscale("log")
            ax.set_title(f"{act}, {stage}")
            ax.grid(alpha=0.3, which="both")
            if c == 0:
                ax.set_ylabel("‖dL/dW‖ (Frobenius)")
            if r == len(acts) - 1:
                ax.set_xlabel("linear layer (0 = input, last = output)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Per-layer weight-gradient norm on a fixed batch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training(training: pd.DataFrame, path: Path) -> Path:
    """Training loss (mean since the last record) and validation accuracy per step, a line per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"numpy": {"ls": "-", "marker": "o", "ms": 3}, "torch": {"ls": "--", "marker": "x", "ms": 5}}
    networks = list(dict.fromkeys(zip(training["activation"], training["arch"])))
    colours = dict(zip(networks, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (act, arch, impl), g in training.groupby(["activation", "arch", "impl"], sort=False):
        g = g.sort_values("step")
        kw = dict(color=colours[(act, arch)], label=f"{act} {arch} / {impl}", **styles[impl])
        axes[0].plot(g["step"], g["train_loss"], **kw)
        axes[1].plot(g["step"], g["val_acc"], **kw)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (mean since the last record)")
    axes[1].set_ylabel("validation accuracy")
    for ax in axes:
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(env: dict[str, Any], config: Config, opts: Options, ratios: pd.DataFrame,
                 training: pd.DataFrame, checks: pd.DataFrame, networks: pd.DataFrame) -> str:
    data = env["data"]
    last = (training.sort_values("step").groupby(["activation", "arch", "impl"], sort=False).tail(1)
            [["activation", "arch", "impl", "step", "epoch", "train_loss", "train_acc", "val_loss",
              "val_acc"]])
    ok = bool(checks["ok"].all())
    lines = [
        "## Gradient flow: plain versus residual (THEORY.md §4)", "",
        f"- Model: {opts.depth} hidden layers of width {opts.width} (plain: a = h(L(a)) each; residual: "
        f"a stem and {(opts.depth - 1) // 2} blocks a = a + L(h(L(a))), no activation after the sum). "
        "Both have the same linear layers and start from the same weights (per activation), drawn by "
        "the NumPy MLP from the seed and copied into the PyTorch MLP: Kaiming-normal, std √(2/fan_in) "
        "(√(1/fan_in) for the input layer), zero biases. Activations: " + ", ".join(opts.activations)
        + (f" (ELU alpha {config.alpha})" if "elu" in opts.activations else "") + ".",
        f"- Data: {data['source']}; fingerprint `{str(data['fingerprint'])[:16]}…`, train/val = "
        f"{data['n_train']}/{data['n_val']}. The gradient norms are taken on a fixed batch, the first "
        f"{opts.batch_examples} training rows, in {config.dtype}.",
        f"- Training: {opts.steps} SGD steps, lr {config.lr}, momentum {config.momentum}, weight decay "
        f"{config.weight_decay}, batch {config.batch_size}, seed {config.seeds[0]}; NumPy and PyTorch "
        "step in lock-step through their harness backends' `train_batch`, in the harness batch order.",
        f"- Machine: {env['cpu']['model']}, {env['threads']} threads; NumPy "
        f"{env['versions'].get('numpy')}, PyTorch {env['versions'].get('torch')}; command "
        f"`{' '.join(env.get('command', []))}`.",
        "",
        "### First-to-last gradient-norm ratios", "",
        "`first_last` = ‖dL/dW‖ of the input layer (0) over the output layer's "
        f"({opts.depth}); `hidden_first_last` = the first width×width hidden layer (1) over the last "
        f"({opts.depth - 1}), the same shapes. Below 1 the gradient shrinks on its way from the output "
        "to the input; above 1 it grows. Empty after training: that network diverged.", "",
        md_table(ratios),
        "",
        "![per-layer gradient norms](gradflow.png)", "",
        "### The networks", "",
        "`lockstep_horizon`: the first step at which the NumPy and PyTorch batch losses differ by more "
        f"than {HORIZON_RTOL:g} (relative); `control_horizon`: the same for PyTorch against PyTorch "
        "started from the initial weights times (1 + machine epsilon), i.e. how soon rounding alone "
        "separates two runs of this network.", "",
        md_table(networks), "",
        "### Training (loss and accuracy at the last record)", "",
        md_table(last), "",
        "![training](training.png)", "",
        "### NumPy versus PyTorch", "",
        ("Both implementations agree within the tolerances." if ok else
         "**The implementations disagree beyond the tolerance (see below); the command exits 1.**"),
        "",
        "The checks with a tolerance compare the two implementations on the same input: the gradients "
        f"at the same weights (at init, and at each implementation's trained weights), and the first "
        f"{opts.check_steps} lock-step batch losses. Over hundreds of steps a deep network amplifies "
        "the rounding differences between the libraries, so the trajectories are judged against a "
        f"control: the NumPy-PyTorch horizon must be at least 1/{HORIZON_FACTOR} of the control's "
        "(a bug in a step separates the runs at once; rounding does not). The last row per network "
        "compares the gradient norms of the two trajectories after training, each at its own "
        "weights: "
        + ("checked against --trajectory-rtol." if opts.trajectory_rtol is not None else
           "reported, not checked (give --trajectory-rtol to check it)."), "",
        md_table(checks), "",
        "Files: `gradflow.csv` (every layer's norm), `ratios.csv`, `training.csv`, `steps.csv` (every "
        "step's batch loss), `agreement.csv`, `networks.csv`, `gradflow.png`, `training.png`, "
        "`env.json`.", "",
    ]
    return "\n".join(lines)


def run_gradflow(config: Config, opts: Options, out: str | None, *, progress: bool = True
                 ) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Measure, write every output into a new folder; returns (folder, ratios, agreement checks)."""
    from impl_numpy.mlp import MLP

    seed = config.seeds[0]
    # validate the architecture before any work
    dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, residual=True).validate()
    if opts.batch_examples > config.n_train:
        raise UserError(f"invalid batch_examples: {opts.batch_examples} (allowed: at most the "
                        f"{config.n_train} training rows)")
    path = make_output_dir(out, config, "gradflow")
    threads = config.threads or default_threads()
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with limit_threads(threads):
        data = load_for_config(config, seed, progress=progress)
        env = collect_env(threads, {"config": config.to_dict(), "gradflow": dataclasses.asdict(opts),
                                    "data": data_info(data)})
        write_json(env, path / "env.json")
        x_fixed = data.x_train[:opts.batch_examples]  # (B, n_features)
        y_fixed = data.y_train[:opts.batch_examples]  # (B,)
        for act in opts.activations:
            # one draw per activation, shared by plain and residual (the same layers), copied to torch
            init_state = MLP(data.n_features, [opts.width] * opts.depth, data.n_classes, act,
                             alpha=config.alpha, rng=np.random.default_rng(seed),
                             dtype=np.dtype(config.dtype)).state_dict()
            for arch in ARCHS:
                results[(act, arch)] = run_one(config, data, opts, act, arch, seed, x_fixed, y_fixed,
                                               init_state, log)

    def table(key: str) -> pd.DataFrame:
        return pd.DataFrame([r for res in results.values() for r in res[key]])

    norms, training, steps, checks = table("norms"), table("training"), table("steps"), table("checks")
    networks = pd.DataFrame([res["network"] for res in results.values()])
    ratios = first_last_ratios(norms, opts.depth)
    write_csv(norms, path / "gradflow.csv")
    write_csv(ratios, path / "ratios.csv")
    write_csv(training, path / "training.csv")
    write_csv(steps, path / "steps.csv")
    write_csv(checks, path / "agreement.csv")
    write_csv(networks, path / "networks.csv")
    plot_gradflow(norms, path / "gradflow.png")
    plot_training(training, path / "training.png")
    env["networks"] = networks.to_dict(orient="records")
    env["agreement_ok"] = bool(checks["ok"].all())
    write_json(env, path / "env.json")
    write_text(build_report(env, config, opts, ratios, training, checks, networks), path / "report.md")
    return path, ratios, checks


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    config = command_config(
        args, prog=PROG,
        owned={"hidden_dims": "use --depth and --width", "activation": "use --activations",
               "residual": "it runs plain and residual", "epochs": "use --steps",
               "backends": "it runs numpy:cpu and torch:cpu", "lockstep": "it always runs in lock-step"},
        defaults=COMMAND_DEFAULTS)
    path, ratios, checks = run_gradflow(config, opts, args.out, progress=not args.quiet)
    print(md_table(ratios))
    print(f"results: {path}")
    bad = checks[~checks["ok"]]
    if len(bad):
        w = bad.iloc[0]
        amount = (f"max relative difference {w['max_rel_diff']:.3g} at {w['where']} > {w['rtol']:g}"
                  if np.isfinite(w["rtol"]) else w["where"])
        print(f"{PROG}: error: numpy and torch disagree ({len(bad)} failed check(s)); first: "
              f"{w['activation']} {w['arch']}, {w['stage']}, {w['check'].split(':')[0]}: {amount} "
              f"(details in {path / 'agreement.csv'})", file=sys.stderr)
        return EXIT_DISAGREE
    return 0


def cli() -> None:
    run_cli(main, prog=PROG)


if __name__ == "__main__":
    cli()
