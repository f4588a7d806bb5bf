"""What ``bench.gradflow`` measures: per-layer gradient norms of a deep plain and residual net, both
implementations from the same weights, at init and after a lock-step training (docs/theory-measured.md).

:func:`measure_network` measures one (activation, plain/residual) network:
the Frobenius norm of dL/dW of every linear layer on a fixed batch at init and
after training, the training itself (NumPy, PyTorch and a rounding control,
each one run of the one run layer from the same weights) and the agreement
checks between the two implementations. :func:`first_last_ratios`,
:func:`plot_gradflow`, :func:`plot_training` and :func:`sections` turn the
networks into the command's tables, figures and words.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import pandas as pd

from bench.backends import resolve
from bench.config import Config, GradflowSettings
from bench.errors import UserError
from bench.lockstep import CONTROL_SUFFIX, LOCKSTEP_RTOL, one_ulp_apart, parting_step, relative_gap
from bench.report import md_table
from bench.run import LoopHooks, run_one
from bench.theory.params import numpy_loss_grads, numpy_model, torch_loss_grads, torch_model
from impl_common.arch import Arch

ARCHS = ("plain", "residual")
IMPLS = ("numpy", "torch")
HORIZON_FACTOR = 2   # numpy-vs-torch parting step must be at least the rounding control's / this
CONTROL = "torch" + CONTROL_SUFFIX  # the control run: torch from the initial weights × (1 + machine eps)
BACKEND_OF = {"numpy": "numpy:cpu", "torch": "torch:cpu", CONTROL: "torch:cpu"}


class Watch(LoopHooks):
    """Evaluates the validation split before the first step, and keeps the weights after the last."""

    initial: tuple[float, float] | None = None
    final: dict[str, np.ndarray] | None = None

    def before_training(self, backend) -> None:
        self.initial = backend.evaluate("val")

    def after_training(self, backend, record) -> None:
        self.final = backend.export_state()  # before the loop restores the best-validation weights


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
    rel = np.asarray([np.linalg.norm(a[f"linears.{i}.weight"].astype(np.float64)
                                     - b[f"linears.{i}.weight"].astype(np.float64))
                      / max(np.linalg.norm(b[f"linears.{i}.weight"].astype(np.float64)),
                            np.finfo(np.float64).tiny) for i in range(n_linears)])
    if not np.all(np.isfinite(rel)):
        return math.inf, int(np.argmax(~np.isfinite(rel)))
    return float(rel.max()), int(rel.argmax())


def step_gap(step_rows: list[dict[str, Any]], a: str, b: str) -> pd.Series:
    """The relative batch-loss gap of implementations ``a`` and ``b`` at every step."""
    table = pd.DataFrame(step_rows).pivot_table(index="step", columns="impl", values="loss", dropna=False)
    return relative_gap(table[a], table[b])


def _show_step(step: int | None, never: int) -> str:
    return str(step) if step is not None else f"> {never - 1}"


def train_network(cfg: Config, data, seed: int, init_state: dict[str, np.ndarray],
                  base: dict[str, Any]) -> tuple[list[dict], list[dict], dict[str, Any], float]:
    """NumPy, PyTorch and the control, each one ``bench.run.run_one`` from ``init_state``: the evaluation
    rows (numpy and torch: step 0 and every ``eval_every`` steps), every step's batch loss (all three,
    steps from 1), {impl: its weights after the last step}, and seconds."""
    # NOTE: the control is a third run, torch from the same weights scaled by (1 + eps): how far
    # float32 rounding alone moves this network's trajectory, to judge the numpy-torch drift against
    starts = {"numpy": init_state, "torch": init_state, CONTROL: one_ulp_apart(init_state)}
    training, step_rows, final = [], [], {}
    t0 = time.perf_counter()
    for impl, start in starts.items():
        watch = Watch()
        record = run_one(resolve([BACKEND_OF[impl]])[0][0], cfg, data, seed, initial_state=start,
                         record_steps=True, hooks=[watch])
        if record.interrupted:
            raise KeyboardInterrupt
        if record.status in ("failed", "oom"):
            raise UserError(f"the {impl} run failed: {record.error}")
        final[impl] = watch.final
        step_rows += [{**base, "impl": impl, "step": r["step"] + 1, "loss": r["loss"]} for r in record.steps]
        if impl != CONTROL:
            training.append({**base, "impl": impl, "step": 0, "epoch": 0.0, "train_loss": math.nan,
                             "train_acc": math.nan, "val_loss": watch.initial[0], "val_acc": watch.initial[1]})
            training += [{**base, "impl": impl, "step": r["step"], "epoch": r["step"] * cfg.batch_size
                          / len(data.y_train), **{k: r[k] for k in ("train_loss", "train_acc", "val_loss",
                                                                     "val_acc")}} for r in record.evals]
    return training, step_rows, final, time.perf_counter() - t0


def measure_network(config: Config, opts: GradflowSettings, data, activation: str, arch_name: str,
                    seed: int, init_state: dict[str, np.ndarray], say) -> dict[str, Any]:
    """Gradient norms at init and after training, the training records and the agreement checks of
    one (activation, plain/residual) network."""
    residual = arch_name == "residual"
    cfg = dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, activation=activation,
                              residual=residual, backends=None, lockstep=False)
    arch = Arch(data.n_features, tuple(cfg.hidden_dims), data.n_classes, activation, cfg.alpha, residual)
    x, y = data.x_train[:opts.batch_examples], data.y_train[:opts.batch_examples]  # (B, F), (B,)
    dtype, n, base = np.dtype(cfg.dtype), arch.n_linears, {"arch": arch_name, "activation": activation}
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
    init = {impl: grads_of(impl, arch, init_state, x, y, dtype) for impl in IMPLS}
    for impl, (loss, grads) in init.items():
        add_norms("init", 0, impl, loss, grads)
    rel, layer = max_rel_diff(init["numpy"][1], init["torch"][1], n)
    check("init", "same weights: ‖dW_np − dW_torch‖/‖dW_torch‖", rel, f"layer {layer}", opts.grad_rtol)

    # --- training: one run per implementation, the same batches from the same weights
    say(f"{activation:>4} {arch_name:<8}: training numpy, torch and the {CONTROL} control, "
        f"{n_steps} steps each ...")
    training, step_rows, trained, seconds = train_network(cfg, data, seed, init_state, base)
    bad = [r["step"] for r in step_rows if r["impl"] in IMPLS and not np.isfinite(r["loss"])]
    diverged = min(bad) if bad else None
    gap = step_gap(step_rows, "numpy", "torch")
    first = gap.loc[:opts.check_steps]
    check("training", f"lock-step batch loss, steps 1-{int(first.index.max())}: |l_np − l_torch|/|l_torch|",
          float(first.max()), f"step {int(first.idxmax())}", opts.grad_rtol)
    horizon, control = parting_step(gap), parting_step(step_gap(step_rows, CONTROL, "torch"))
    never = len(gap) + 1
    checks.append({**base, "stage": "training", "check": f"lock-step horizon (first step with loss "
                   f"difference > {LOCKSTEP_RTOL:g}): numpy vs torch, against torch vs {CONTROL}",
                   "max_rel_diff": math.nan, "where": f"step {_show_step(horizon, never)} vs control "
                   f"step {_show_step(control, never)}", "rtol": math.nan,
                   "ok": bool((horizon or never) * HORIZON_FACTOR >= (control or never))})

    # --- after training: each at its own weights, and each implementation at the other's weights
    final = {impl: grads_of(impl, arch, trained[impl], x, y, dtype) for impl in IMPLS}
    for impl, (loss, grads) in final.items():
        add_norms(after, n_steps, impl, loss, grads)
    if diverged is None:
        for owner, other in (("numpy", "torch"), ("torch", "numpy")):
            g = {owner: final[owner][1], other: grads_of(other, arch, trained[owner], x, y, dtype)[1]}
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
               "init_loss": init["numpy"][0], "lockstep_horizon": _show_step(horizon, never),
               "control_horizon": _show_step(control, never)}
    say(f"{activation:>4} {arch_name:<8}: {status}, {n_steps} steps in {seconds:.1f} s, val acc "
        f"{last['numpy']['val_acc']:.3f}; losses agree to {LOCKSTEP_RTOL:g} until step "
        f"{network['lockstep_horizon']}")
    return {"norms": norms, "training": training, "steps": step_rows, "checks": checks, "network": network}


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
        rows.append({**dict(zip(keys, key)), "first_last": by[0] / by[depth],
                     "hidden_first_last": by[1] / by[depth - 1],
                     "min_layer_norm": float(by.min()), "max_layer_norm": float(by.max())})
    return pd.DataFrame(rows)


def plot_gradflow(norms: pd.DataFrame):
    """Per-layer ‖dL/dW‖ on a log scale: panels activation × stage, a line per arch × impl."""
    from bench.plots import plt

    acts, stages = list(dict.fromkeys(norms["activation"])), list(dict.fromkeys(norms["stage"]))
    fig, axes = plt.subplots(len(acts), len(stages), figsize=(5.2 * len(stages), 3.6 * len(acts)),
                             squeeze=False, sharex=True)
    colours = {"plain": "tab:blue", "residual": "tab:red"}
    styles = {"numpy": {"ls": "-", "marker": "o", "ms": 4}, "torch": {"ls": "--", "marker": "x", "ms": 6}}
    for r, act in enumerate(acts):
        for c, stage in enumerate(stages):
            ax = axes[r][c]
            for (arch, impl), g in norms[(norms.activation == act) & (norms.stage == stage)].groupby(
                    ["arch", "impl"], sort=False):
                g = g.sort_values("layer")
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
    from bench.plots import plt

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


def sections(config: Config, opts: GradflowSettings, n_train: int, ratios: pd.DataFrame,
             training: pd.DataFrame, checks: pd.DataFrame, networks: pd.DataFrame
             ) -> tuple[list[str], list[tuple[str | None, list[str]]]]:
    """The report's setup lines and sections."""
    n_steps = config.epochs * (n_train // config.batch_size)
    last = (training.sort_values("step").groupby(["activation", "arch", "impl"], sort=False).tail(1)
            [["activation", "arch", "impl", "step", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]])
    setup = [
        f"- Model: {opts.depth} hidden layers of width {opts.width} (plain: a = h(L(a)) each; residual: "
        f"a stem and {(opts.depth - 1) // 2} blocks a = a + L(h(L(a))), no activation after the sum). "
        "Both have the same linear layers, each net its own init from the seed, drawn by the NumPy MLP "
        "and copied into the PyTorch MLP: Kaiming-normal, std √(2/fan_in) (√(1/fan_in) for the input "
        "layer), zero biases; in the residual net the first layer of each of the K blocks "
        "√(2/(K fan_in)) and the last layer zero (docs/derivations.md R2: every block starts as the "
        "identity, so its first layers get no gradient at init). Activations: "
        + ", ".join(opts.activations) + (f" (ELU alpha {config.alpha})" if "elu" in opts.activations else "") + ".",
        f"- The gradient norms are taken on a fixed batch, the first {opts.batch_examples} training "
        f"rows, in {config.dtype}.",
        f"- Training: {n_steps} SGD steps ({config.epochs} epoch{'s' if config.epochs != 1 else ''} of "
        f"{n_train} images), lr {config.lr}, momentum {config.momentum}, weight decay "
        f"{config.weight_decay}, batch {config.batch_size}, seed {config.seeds[0]}; NumPy and PyTorch "
        "each take the same batches in the same order from the same weights, one run of the "
        f"harness's run layer each, evaluated every {config.eval_every or 'epoch'} steps."]
    return setup, [
        ("First-to-last gradient-norm ratios", [
            "`first_last` = ‖dL/dW‖ of the input layer (0) over the output layer's "
            f"({opts.depth}); `hidden_first_last` = the first width×width hidden layer (1) over the last "
            f"({opts.depth - 1}), the same shapes. Below 1 the gradient shrinks on its way from the output "
            "to the input; above 1 it grows. Empty after training: that network diverged.", "",
            md_table(ratios)]),
        ("The networks", [
            "`lockstep_horizon`: the first step at which the NumPy and PyTorch batch losses differ by more "
            f"than {LOCKSTEP_RTOL:g} (relative; where lock-step runs part, as in `bench.compare`); "
            "`control_horizon`: the same for PyTorch against PyTorch started from the initial weights "
            "times (1 + machine epsilon), i.e. how soon rounding alone separates two runs of this network.",
            "", md_table(networks)]),
        ("Training (loss and accuracy at the last evaluation)", [md_table(last)]),
        ("NumPy versus PyTorch", [
            "Both implementations agree within the tolerances." if checks["ok"].all() else
            "**The implementations disagree beyond the tolerance (see below); the command exits 1.**", "",
            "The checks with a tolerance compare the two implementations on the same input: the gradients "
            "at the same weights (at init, and at each implementation's trained weights), and the first "
            f"{opts.check_steps} lock-step batch losses. Over hundreds of steps a deep network amplifies "
            "the rounding differences between the libraries, so the trajectories are judged against a "
            f"control: the NumPy-PyTorch horizon must be at least 1/{HORIZON_FACTOR} of the control's "
            "(a bug in a step separates the runs at once; rounding does not). The last row per network "
            "compares the gradient norms of the two trajectories after training, each at its own weights: "
            + ("checked against --trajectory-rtol." if opts.trajectory_rtol is not None else
               "reported, not checked (give --trajectory-rtol to check it)."), "",
            md_table(checks), "", "`gradflow.csv`: every layer's norm; `steps.csv`: every step's batch loss."])]
