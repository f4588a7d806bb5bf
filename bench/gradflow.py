"""Gradient flow in a deep MLP, plain versus residual, ELU and tanh, NumPy and PyTorch from the same weights.

Run it as::

    python -m bench.gradflow --data-dir DIR                  # the preset: 21 x 128, 200 steps, lr 0.01
    python -m bench.gradflow --depth 41 --epochs 3 --activations tanh --lr 0.003
    python -m bench.gradflow --dataset synthetic --depth 5 --width 16 --train-subset 1280   # seconds

For every activation, the plain and the residual network (the same linear
layers: ``--depth`` hidden layers of ``--width``; residual = a stem and
(depth - 1)/2 blocks ``a + L2(h(L1(a)))``, docs/derivations.md §6) each start
from their own init for the seed (Kaiming; the residual blocks: R2, every
block the identity at first), drawn by the NumPy MLP and copied into the
PyTorch MLP. The command records:

* the Frobenius norm of dL/dW of every linear layer on a fixed batch (the
  first ``--batch-examples`` training rows), at initialisation and after
  training;
* the training: each implementation is one run of the one run path
  (``bench.run.run_one``, the harness loop and batch order) from those
  weights, evaluated every ``--eval-every`` steps, every step's batch loss
  recorded;
* whether the implementations agree: dL/dW of the two at the same weights (at
  init and at each one's trained weights; relative Frobenius difference <=
  ``--grad-rtol``), the first ``--check-steps`` lock-step batch losses (<=
  ``--grad-rtol``), and how soon the two trajectories separate compared with
  a float32 control (PyTorch from the weights times 1 + machine epsilon). A
  disagreement is one line on stderr and exit status 1, after every file is
  written.

Its preset (``bench.config.PRESETS["gradflow"]``, shown by ``--help``): one
epoch of 25 600 images (200 steps of 128) at lr 0.01 (0.1 makes the 21-layer
plain ELU net diverge), evaluated every 50 steps. The architecture, the
backends (numpy:cpu, torch:cpu) and lock-step are the command's own, so their
flags do not exist here. Outputs in ``--out`` (default
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
from typing import Any

import numpy as np
import pandas as pd

from bench.backends import resolve
from bench.cli import command_parser
from bench.config import Config, config_from_args
from bench.datasource import load_for_config
from bench.errors import UserError, run_cli
from bench.loop import LoopHooks
from bench.memory import check_memory
from bench.report import md_table, setup_lines
from bench.results import ResultsFolder
from bench.run import CONTROL_SUFFIX, one_ulp_apart, run_one
from bench.theory.params import numpy_loss_grads, numpy_model, torch_loss_grads, torch_model
from bench.threads import limit_threads, resolve_threads
from impl_common.arch import Arch

COMMAND = "gradflow"
PROG = "python -m bench.gradflow"
ARCHS = ("plain", "residual")
IMPLS = ("numpy", "torch")
EXIT_DISAGREE = 1
HORIZON_RTOL = 1e-3  # the lock-step "horizon": the first step whose batch losses differ by more than this
HORIZON_FACTOR = 2   # numpy-vs-torch horizon must be at least the float32 control's horizon / this
CONTROL = "torch" + CONTROL_SUFFIX  # the control run: torch from the initial weights × (1 + machine eps)
BACKEND_OF = {"numpy": "numpy:cpu", "torch": "torch:cpu", CONTROL: "torch:cpu"}


class Watch(LoopHooks):
    """Evaluates the validation split before the first step, and keeps the weights after the last."""

    def __init__(self):
        self.initial: tuple[float, float] | None = None
        self.final: dict[str, np.ndarray] | None = None

    def before_training(self, backend) -> None:
        self.initial = backend.evaluate("val")

    def after_training(self, backend, result) -> None:
        self.final = backend.export_state()  # before the loop restores the best-validation weights


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


def train_network(cfg: Config, data, seed: int, init_state: dict[str, np.ndarray],
                  base: dict[str, Any]) -> tuple[list[dict], list[dict], dict[str, Any], float]:
    """NumPy, PyTorch and the control, each one run of ``bench.run.run_one`` from ``init_state``.

    Returns the evaluation rows (numpy and torch: step 0 and every
    ``eval_every`` steps), every step's batch loss (all three, steps from 1),
    {impl: the run's record and its weights after the last step}, and seconds.
    """
    # NOTE: the control is a third run, torch from the same weights scaled by (1 + eps): how far
    # float32 rounding alone moves this network's trajectory, to judge the numpy-torch drift against
    starts = {"numpy": init_state, "torch": init_state, CONTROL: one_ulp_apart(init_state)}
    n_train = len(data.y_train)
    training, step_rows, runs = [], [], {}
    t0 = time.perf_counter()
    for impl, start in starts.items():
        chosen = resolve([BACKEND_OF[impl]])[0][0]
        watch = Watch()
        record = run_one(chosen, cfg, data, seed, initial_state=start, record_steps=True, hooks=[watch])
        if record.interrupted:
            raise KeyboardInterrupt
        if record.status in ("failed", "oom"):
            raise UserError(f"the {impl} run failed: {record.error}")
        runs[impl] = {"record": record, "final": watch.final}
        step_rows += [{**base, "impl": impl, "step": r["step"] + 1, "loss": r["loss"]}
                      for r in record.steps]
        if impl == CONTROL:
            continue
        val_loss, val_acc = watch.initial
        training.append({**base, "impl": impl, "step": 0, "epoch": 0.0, "train_loss": math.nan,
                         "train_acc": math.nan, "val_loss": val_loss, "val_acc": val_acc})
        training += [{**base, "impl": impl, "step": r["step"],
                      "epoch": r["step"] * cfg.batch_size / n_train,
                      **{k: r[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")}}
                     for r in record.evals]
    return training, step_rows, runs, time.perf_counter() - t0


def first_bad_step(step_rows: list[dict[str, Any]], impls: tuple[str, ...]) -> int | None:
    """The first step whose batch loss is not finite in any of ``impls`` (None: none)."""
    bad = [r["step"] for r in step_rows if r["impl"] in impls and not np.isfinite(r["loss"])]
    return min(bad) if bad else None


def run_network(config: Config, data, activation: str, arch_name: str, seed: int,
                x_fixed: np.ndarray, y_fixed: np.ndarray, init_state: dict[str, np.ndarray],
                log) -> dict[str, Any]:
    """Gradient norms at init and after training, the training records and the agreement checks
    of one (activation, plain/residual) network."""
    opts = config
    residual = arch_name == "residual"
    cfg = dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, activation=activation,
                              residual=residual, backends=None, lockstep=False)
    arch = Arch(data.n_features, tuple(cfg.hidden_dims), data.n_classes, activation, cfg.alpha, residual)
    dtype = np.dtype(cfg.dtype)
    n = arch.n_linears
    base = {"arch": arch_name, "activation": activation}
    n_steps = cfg.epochs * (len(data.y_train) // cfg.batch_size)
    after = f"after {n_steps} steps"
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
    check("init", "same weights: ‖dW_np − dW_torch‖/‖dW_torch‖", rel, f"layer {layer}", opts.grad_rtol)

    # --- training: one run per implementation, the same batches from the same weights
    log(f"{activation:>4} {arch_name:<8}: training numpy, torch and the {CONTROL} control, "
        f"{n_steps} steps each ...")
    training, step_rows, runs, seconds = train_network(cfg, data, seed, init_state, base)
    trained = {impl: runs[impl]["final"] for impl in IMPLS}
    diverged = first_bad_step(step_rows, IMPLS)
    rel_steps = step_loss_diff(step_rows, "numpy", "torch")
    first = rel_steps.loc[:opts.check_steps]
    check("training", f"lock-step batch loss, steps 1-{int(first.index.max())}: |l_np − l_torch|/|l_torch|",
          float(first.max()), f"step {int(first.idxmax())}", opts.grad_rtol)
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
        add_norms(after, n_steps, impl, loss, grads)
    if diverged is None:
        for owner, other in (("numpy", "torch"), ("torch", "numpy")):
            cross = grads_of(other, arch, trained[owner], x_fixed, y_fixed, dtype)
            g = {owner: final[owner][1], other: cross[1]}
            rel, layer = max_rel_diff(g["numpy"], g["torch"], n)
            check(after, f"same weights ({owner}'s trained): ‖dW_np − dW_torch‖/‖dW_torch‖", rel,
                  f"layer {layer}", opts.grad_rtol)
        gn = {impl: weight_grad_norms(final[impl][1], n) for impl in IMPLS}
        traj = np.abs(gn["numpy"] - gn["torch"]) / np.maximum(gn["torch"], np.finfo(np.float64).tiny)
        check(after, "lock-step trajectories, each at its own weights: |‖dW_np‖ − ‖dW_torch‖|/‖dW_torch‖",
              float(traj.max()), f"layer {int(traj.argmax())}", opts.trajectory_rtol)
    status = "ok" if diverged is None else f"diverged at step {diverged}"
    last = {r["impl"]: r for r in training}  # each implementation's last evaluation
    network = {**base, "status": status, "train_seconds": seconds,
               "val_acc_numpy": last["numpy"]["val_acc"], "val_acc_torch": last["torch"]["val_acc"],
               "init_loss": init["numpy"][0],
               "lockstep_horizon": _show_step(horizon, never),
               "control_horizon": _show_step(control, never)}
    log(f"{activation:>4} {arch_name:<8}: {status}, {n_steps} steps in {seconds:.1f} s, val acc "
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


def plot_gradflow(norms: pd.DataFrame):
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
    return fig


def plot_training(training: pd.DataFrame):
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
    return fig


def build_report(env: dict[str, Any], config: Config, ratios: pd.DataFrame,
                 training: pd.DataFrame, checks: pd.DataFrame, networks: pd.DataFrame,
                 files: list[str], interrupted: list[str] = ()) -> str:
    opts = config
    n_steps = config.epochs * (env["data"]["n_train"] // config.batch_size)
    last = (training.sort_values("step").groupby(["activation", "arch", "impl"], sort=False).tail(1)
            [["activation", "arch", "impl", "step", "epoch", "train_loss", "train_acc", "val_loss",
              "val_acc"]])
    ok = bool(checks["ok"].all())
    lines = [
        "# Gradient flow: plain versus residual (docs/theory-measured.md)", "", *interrupted,
        "## Setup", "",
        *setup_lines(env),
        f"- Model: {opts.depth} hidden layers of width {opts.width} (plain: a = h(L(a)) each; residual: "
        f"a stem and {(opts.depth - 1) // 2} blocks a = a + L(h(L(a))), no activation after the sum). "
        "Both have the same linear layers, each net its own init from the seed, drawn by the NumPy MLP "
        "and copied into the PyTorch MLP: Kaiming-normal, std √(2/fan_in) (√(1/fan_in) for the input "
        "layer), zero biases; in the residual net the first layer of each of the K blocks "
        "√(2/(K fan_in)) and the last layer zero (docs/derivations.md R2: every block starts as the "
        "identity, so its first layers get no gradient at init). Activations: "
        + ", ".join(opts.activations)
        + (f" (ELU alpha {config.alpha})" if "elu" in opts.activations else "") + ".",
        f"- The gradient norms are taken on a fixed batch, the first {opts.batch_examples} training "
        f"rows, in {config.dtype}.",
        f"- Training: {n_steps} SGD steps ({config.epochs} epoch{'s' if config.epochs != 1 else ''} of "
        f"{env['data']['n_train']} images), lr {config.lr}, momentum {config.momentum}, weight decay "
        f"{config.weight_decay}, batch {config.batch_size}, seed {config.seeds[0]}; NumPy and PyTorch "
        "each take the same batches in the same order from the same weights, one run of the "
        f"harness's run path each, evaluated every {config.eval_every or 'epoch'} steps.",
        "",
        "## First-to-last gradient-norm ratios", "",
        "`first_last` = ‖dL/dW‖ of the input layer (0) over the output layer's "
        f"({opts.depth}); `hidden_first_last` = the first width×width hidden layer (1) over the last "
        f"({opts.depth - 1}), the same shapes. Below 1 the gradient shrinks on its way from the output "
        "to the input; above 1 it grows. Empty after training: that network diverged.", "",
        md_table(ratios),
        "",
        "![per-layer gradient norms](gradflow.png)", "",
        "## The networks", "",
        "`lockstep_horizon`: the first step at which the NumPy and PyTorch batch losses differ by more "
        f"than {HORIZON_RTOL:g} (relative); `control_horizon`: the same for PyTorch against PyTorch "
        "started from the initial weights times (1 + machine epsilon), i.e. how soon rounding alone "
        "separates two runs of this network.", "",
        md_table(networks), "",
        "## Training (loss and accuracy at the last evaluation)", "",
        md_table(last), "",
        "![training](training.png)", "",
        "## NumPy versus PyTorch", "",
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
        "Files: " + ", ".join(f"`{f}`" for f in files) + " (`gradflow.csv`: every layer's norm; "
        "`steps.csv`: every step's batch loss).", "",
    ]
    return "\n".join(lines)


def run_gradflow(config: Config, out: str | None, *, progress: bool = True
                 ) -> tuple[ResultsFolder, pd.DataFrame, pd.DataFrame]:
    """Measure, write every output into a new folder; returns (folder, ratios, agreement checks).

    A signal ends the measurements; the networks done are written, and the folder says so."""
    from impl_numpy.mlp import MLP

    opts = config
    if len(config.seeds) != 1:
        raise UserError(f"{PROG} runs one seed at a time; got seeds {config.seeds} (run it once per seed)")
    seed = config.seeds[0]
    # validate the architecture, and that it fits, before any work (three models live at once:
    # the run's, and the two whose gradients are compared)
    deep = dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, residual=True).validate()
    check_memory(deep, 3, flags="--width, --depth, --batch-size or --train-subset")
    if opts.batch_examples > config.n_train:
        raise UserError(f"invalid batch_examples: {opts.batch_examples} (allowed: at most the "
                        f"{config.n_train} training rows)")
    threads = resolve_threads(config.threads)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with ResultsFolder.create(out, COMMAND) as folder, limit_threads(threads):
        env: dict[str, Any] = {}
        with folder.measuring():  # a signal keeps the networks already done
            data = load_for_config(config, seed, progress=progress)
            env = folder.write_env(threads, {"config": config.to_dict(), "data": data.info()})
            x_fixed = data.x_train[:opts.batch_examples]  # (B, n_features)
            y_fixed = data.y_train[:opts.batch_examples]  # (B,)
            for act in opts.activations:
                for arch in ARCHS:
                    # each net's own init from the seed (the residual blocks' R2 init), copied to torch
                    init_state = MLP(data.n_features, [opts.width] * opts.depth, data.n_classes, act,
                                     alpha=config.alpha, residual=arch == "residual",
                                     rng=np.random.default_rng(seed),
                                     dtype=np.dtype(config.dtype)).state_dict()
                    results[(act, arch)] = run_network(config, data, act, arch, seed, x_fixed, y_fixed,
                                                       init_state, log)

        def table(key: str) -> pd.DataFrame:
            return pd.DataFrame([r for res in results.values() for r in res[key]])

        norms, training, steps, checks = table("norms"), table("training"), table("steps"), table("checks")
        networks = pd.DataFrame([res["network"] for res in results.values()])
        ratios = first_last_ratios(norms, opts.depth) if results else pd.DataFrame()
        if results:
            folder.write_csv("gradflow.csv", norms)
            folder.write_csv("ratios.csv", ratios)
            folder.write_csv("training.csv", training)
            folder.write_csv("steps.csv", steps)
            folder.write_csv("agreement.csv", checks)
            folder.write_csv("networks.csv", networks)
            folder.save_figure("gradflow.png", plot_gradflow(norms))
            folder.save_figure("training.png", plot_training(training))
            env["networks"] = networks.to_dict(orient="records")
            env["agreement_ok"] = bool(checks["ok"].all())
            folder.write_json("env.json", env)
            folder.write_text("report.md", build_report(env, config, ratios, training, checks, networks,
                                                        [*folder.written, "report.md"],
                                                        folder.interrupted_note()))
        elif env:
            folder.write_text("report.md", "\n".join(["# Gradient flow: plain versus residual", "",
                                                      *folder.interrupted_note(),
                                                      "No network finished.", ""]))
    return folder, ratios, checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser(COMMAND, "Per-layer gradient norms of a deep plain and residual MLP in "
                            "NumPy and PyTorch from identical weights, at init and after training in "
                            "lock-step.")
    args = parser.parse_args(argv)
    config = config_from_args(args, COMMAND)
    folder, ratios, checks = run_gradflow(config, args.out, progress=not args.quiet)
    path = folder.path
    if len(ratios):
        print(md_table(ratios))
    print(f"results: {path}")
    if folder.interrupted:
        print(f"interrupted: partial results in {path}", file=sys.stderr)
        return folder.exit_code()
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
