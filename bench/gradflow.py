"""Gradient flow in a deep MLP, plain versus residual, ELU and tanh, NumPy and PyTorch from the same weights.

Run it as::

    python -m bench.gradflow --data-dir ../shared/cifar10 --train-subset 10000
    python -m bench.gradflow --depth 21 --width 128 --steps 200 --activations elu,tanh
    python -m bench.gradflow --dataset synthetic --depth 5 --width 16 --steps 10   # seconds

For every activation, the plain and the residual network (the same linear
layers: ``--depth`` hidden layers of ``--width``; residual = a stem and
(depth - 1)/2 blocks ``a + L2(h(L1(a)))``, THEORY.md §4) start from one set of
weights, drawn by the NumPy MLP from the seed and copied into the PyTorch MLP.
The command records:

* the Frobenius norm of dL/dW of every linear layer on a fixed batch (the
  first ``--batch-examples`` training rows), at initialisation and after
  ``--steps`` SGD steps;
* the training: both implementations take the same steps in lock-step through
  their harness backends (``train_batch``, the batch order of ``bench.loop``),
  with the training and validation loss and accuracy every ``--record-every``
  steps;
* whether the implementations agree: the per-layer gradients of the two at
  the same weights (relative Frobenius difference; must be <= ``--rtol``),
  and the gradient norms of the two lock-step trajectories after training
  (must be <= ``--trajectory-rtol``). A disagreement is one line on stderr and
  exit status 1, after every file is written.

Every Config flag is accepted except those this command sets itself
(hidden_dims, activation, residual, epochs, backends, lockstep, seeds: one).
Outputs in ``--out`` (default ``results/<timestamp>_gradflow/``):
``gradflow.csv``, ``ratios.csv``, ``training.csv``, ``agreement.csv``,
``gradflow.png``, ``env.json`` and ``report.md``.
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
from bench.theory.cli import command_config, data_info, make_output_dir, positive_float, positive_int
from bench.theory.params import Arch, numpy_loss_grads, numpy_model, torch_loss_grads, torch_model
from bench.threads import default_threads, limit_threads

PROG = "python -m bench.gradflow"
ARCHS = ("plain", "residual")
IMPLS = ("numpy", "torch")
EXIT_DISAGREE = 1


@dataclass
class Options:
    """The command's own settings (the model and training settings are in Config)."""

    depth: int = 21               # hidden layers: a stem + 10 residual blocks (an odd count; see --help)
    width: int = 128              # every hidden layer's width
    steps: int = 200              # SGD steps between the two gradient measurements
    batch_examples: int = 512     # training rows of the fixed batch the gradient norms are taken on
    activations: tuple[str, ...] = ("elu", "tanh")
    record_every: int = 50        # steps between loss/accuracy records
    rtol: float = 1e-4            # same weights: max relative Frobenius difference of dL/dW, numpy vs torch
    trajectory_rtol: float = 1e-2  # lock-step: max relative difference of the gradient norms after training


def build_parser() -> OneLineArgumentParser:
    d = Options()
    p = OneLineArgumentParser(
        prog=PROG,
        description="Per-layer gradient norms of a deep plain and residual MLP (ELU, tanh) in NumPy "
                    "and PyTorch from identical weights, at init and after N lock-step SGD steps.")
    add_config_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (must not exist yet, or be empty; "
                   "default: results/<timestamp>_gradflow/)")
    p.add_argument("--depth", type=positive_int("depth", 3), default=d.depth,
                   help="hidden layers, an odd count >= 3: the residual net is a stem and (depth-1)/2 "
                        f"blocks, the plain net the same layers without the skips (default: {d.depth}, "
                        "i.e. the ~20 hidden layers of the issue rounded up to an odd count)")
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
    p.add_argument("--rtol", type=positive_float("rtol"), default=d.rtol,
                   help="largest relative difference of dL/dW allowed between the implementations at "
                        f"the same weights (default: {d.rtol})")
    p.add_argument("--trajectory-rtol", type=positive_float("trajectory_rtol"), default=d.trajectory_rtol,
                   help="largest relative difference of a layer's gradient norm allowed between the "
                        f"two lock-step trajectories after training (default: {d.trajectory_rtol})")
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
                   record_every=args.record_every, rtol=args.rtol, trajectory_rtol=args.trajectory_rtol)


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
    """A loaded NumpyBackend and TorchBackend on the CPU for ``config``."""
    from impl_numpy.backend import NumpyBackend
    from impl_torch.backend import TorchBackend

    backends = {"numpy": NumpyBackend(config, "cpu"), "torch": TorchBackend(config, "cpu")}
    for b in backends.values():
        b.load_data(data)
    return backends


def train_lockstep(backends: dict[str, Any], config: Config, seed: int, n_train: int, steps: int,
                   record_every: int, base: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """``steps`` SGD steps on every backend, the same batches in the same order (``bench.loop`` order).

    Returns the loss/accuracy records (one per backend at step 0 and every
    ``record_every`` steps) and whether every loss stayed finite.
    """
    batch = config.batch_size
    per_epoch = n_train // batch  # drop_last, as the harness does
    rows: list[dict[str, Any]] = []
    finite = True

    def record(step: int, since: dict[str, Any] | None) -> None:
        nonlocal finite
        for impl, b in backends.items():
            train_loss = train_acc = math.nan
            if since is not None:
                rec = b.pop_step_records()
                if len(rec.losses):
                    train_loss = float(np.mean(rec.losses))
                    finite &= bool(np.all(np.isfinite(rec.losses)))
                train_acc = rec.correct / rec.seen if rec.seen else math.nan
            val_loss, val_acc = b.evaluate("val")
            rows.append({**base, "impl": impl, "step": step, "epoch": step * batch / n_train,
                         "train_loss": train_loss, "train_acc": train_acc,
                         "val_loss": val_loss, "val_acc": val_acc})

    record(0, None)
    idx: dict[str, Any] = {}
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            order = epoch_order(seed, epoch + 1, n_train)
            idx = {impl: b.device_indices(order) for impl, b in backends.items()}
        for impl, b in backends.items():
            b.train_batch(idx[impl][k * batch:(k + 1) * batch])
        if (step + 1) % record_every == 0 or step + 1 == steps:
            record(step + 1, {})
    return rows, finite


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

    # --- at initialisation: both implementations from the same weights
    init = {impl: grads_of(impl, arch, init_state, x_fixed, y_fixed, dtype) for impl in IMPLS}
    for impl, (loss, grads) in init.items():
        add_norms("init", 0, impl, loss, grads)
    rel, layer = max_rel_diff(init["numpy"][1], init["torch"][1], n)
    checks.append({**base, "stage": "init", "check": "same weights: ‖dW_np − dW_torch‖/‖dW_torch‖",
                   "max_rel_diff": rel, "layer": layer, "rtol": opts.rtol, "ok": rel <= opts.rtol})

    # --- training, lock-step, through the backends' own steps
    t0 = time.perf_counter()
    backends = make_backends(cfg, data)
    for b in backends.values():
        b.init_model(seed)
        b.import_state(init_state)
    training, finite = train_lockstep(backends, cfg, seed, len(data.y_train), opts.steps,
                                      opts.record_every, base)
    seconds = time.perf_counter() - t0
    trained = {impl: b.export_state() for impl, b in backends.items()}
    del backends

    # --- after training: each at its own weights, and torch at numpy's weights
    final = {impl: grads_of(impl, arch, trained[impl], x_fixed, y_fixed, dtype) for impl in IMPLS}
    for impl, (loss, grads) in final.items():
        add_norms(after, opts.steps, impl, loss, grads)
    if finite:
        cross = grads_of("torch", arch, trained["numpy"], x_fixed, y_fixed, dtype)
        rel, layer = max_rel_diff(final["numpy"][1], cross[1], n)
        checks.append({**base, "stage": after, "check": "same weights (numpy's trained): "
                       "‖dW_np − dW_torch‖/‖dW_torch‖", "max_rel_diff": rel, "layer": layer,
                       "rtol": opts.rtol, "ok": rel <= opts.rtol})
        gn = {impl: weight_grad_norms(final[impl][1], n) for impl in IMPLS}
        traj = np.abs(gn["numpy"] - gn["torch"]) / np.maximum(gn["torch"], np.finfo(np.float64).tiny)
        checks.append({**base, "stage": after, "check": "lock-step trajectories: "
                       "|‖dW_np‖ − ‖dW_torch‖|/‖dW_torch‖", "max_rel_diff": float(traj.max()),
                       "layer": int(traj.argmax()), "rtol": opts.trajectory_rtol,
                       "ok": bool(traj.max() <= opts.trajectory_rtol)})
    else:
        checks.append({**base, "stage": after, "check": "training diverged (non-finite loss): "
                       "no comparison after training", "max_rel_diff": math.nan, "layer": -1,
                       "rtol": opts.rtol, "ok": True})
    last = training[-1]
    log(f"{activation:>4} {arch_name:<8}: {opts.steps} steps in {seconds:.1f} s, val acc "
        f"{last['val_acc']:.3f}; init first/last grad-norm ratio "
        f"{norms[0]['grad_norm'] / norms[n - 1]['grad_norm']:.3g}")
    return {"norms": norms, "training": training, "checks": checks, "seconds": seconds,
            "finite": finite}


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
    styles = {"numpy": dict(ls="-", marker="o", ms=4), "torch": dict(ls="--", marker="x", ms=6)}
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


def build_report(env: dict[str, Any], config: Config, opts: Options, ratios: pd.DataFrame,
                 training: pd.DataFrame, checks: pd.DataFrame, seconds: dict[str, float]) -> str:
    data = env["data"]
    last = (training.sort_values("step").groupby(["activation", "arch", "impl"], sort=False).tail(1)
            [["activation", "arch", "impl", "step", "epoch", "train_loss", "train_acc", "val_loss",
              "val_acc"]])
    ok = bool(checks["ok"].all())
    lines = [
        "## Gradient flow: plain versus residual (THEORY.md §4)", "",
        f"- Model: {opts.depth} hidden layers of width {opts.width} (plain: h(L(a)) each; residual: a "
        f"stem and {(opts.depth - 1) // 2} blocks a + L(h(L(a))), no activation after the sum; the same "
        f"linear layers and the same initial weights for both), activations {', '.join(opts.activations)}"
        + (f" (ELU alpha {config.alpha})" if "elu" in opts.activations else "")
        + "; Kaiming-normal init (std √(2/fan_in), √(1/fan_in) for the input layer), zero biases.",
        f"- Data: {data['source']}; fingerprint `{str(data['fingerprint'])[:16]}…`, train/val = "
        f"{data['n_train']}/{data['n_val']}; the gradient norms are on a fixed batch, the first "
        f"{opts.batch_examples} training rows.",
        f"- Training: {opts.steps} SGD steps, lr {config.lr}, momentum {config.momentum}, weight decay "
        f"{config.weight_decay}, batch {config.batch_size}, {config.dtype}, seed {config.seeds[0]}; "
        "NumPy and PyTorch step in lock-step through their harness backends (the harness batch order).",
        f"- Machine: {env['cpu']['model']}, {env['threads']} threads; NumPy "
        f"{env['versions'].get('numpy')}, PyTorch {env['versions'].get('torch')}; command "
        f"`{' '.join(env.get('command', []))}`.",
        "",
        "### First-to-last gradient-norm ratios", "",
        "`first_last` = ‖dL/dW‖ of the input layer over the output layer's; `hidden_first_last` = the "
        f"first width×width hidden layer (1) over the last ({opts.depth - 1}), the same shapes. Below 1: "
        "the gradient shrinks on its way down; above 1: it grows.", "",
        md_table(ratios),
        "",
        "![per-layer gradient norms](gradflow.png)", "",
        "### Training (loss and accuracy at the last record)", "",
        md_table(last), "",
        "Seconds of lock-step training per network (both implementations): "
        + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()) + ".", "",
        "### NumPy versus PyTorch", "",
        ("Both implementations agree within the tolerances." if ok else
         "**The implementations disagree beyond the tolerance (see below); the command exits 1.**"), "",
        md_table(checks), "",
        "Files: `gradflow.csv` (every layer's norm), `ratios.csv`, `training.csv`, `agreement.csv`, "
        "`gradflow.png`, `env.json`.", "",
    ]
    return "\n".join(lines)


def run_gradflow(config: Config, opts: Options, out: str | None, *, progress: bool = True
                 ) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Measure, write every output into a new folder; returns (folder, ratios, agreement checks)."""
    seed = config.seeds[0]
    # validate the architecture once, with the first activation, before any work
    dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, residual=True).validate()
    path = make_output_dir(out, config, "gradflow")
    threads = config.threads or default_threads()
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with limit_threads(threads):
        data = load_for_config(config, seed, progress=progress)
        if opts.batch_examples > len(data.y_train):
            raise UserError(f"invalid batch_examples: {opts.batch_examples} (allowed: at most the "
                            f"{len(data.y_train)} training rows)")
        env = collect_env(threads, {"config": config.to_dict(), "gradflow": dataclasses.asdict(opts),
                                    "data": data_info(data)})
        write_json(env, path / "env.json")
        x_fixed = data.x_train[:opts.batch_examples]  # (B, n_features)
        y_fixed = data.y_train[:opts.batch_examples]  # (B,)
        for act in opts.activations:
            # one draw per activation, shared by plain and residual (same layers), copied to torch
            from impl_numpy.mlp import MLP

            init_state = MLP(data.n_features, [opts.width] * opts.depth, data.n_classes, act,
                             alpha=config.alpha, rng=np.random.default_rng(seed),
                             dtype=np.dtype(config.dtype)).state_dict()
            for arch in ARCHS:
                results[(act, arch)] = run_one(config, data, opts, act, arch, seed, x_fixed, y_fixed,
                                               init_state, log)

    norms = pd.DataFrame([r for res in results.values() for r in res["norms"]])
    training = pd.DataFrame([r for res in results.values() for r in res["training"]])
    checks = pd.DataFrame([r for res in results.values() for r in res["checks"]])
    ratios = first_last_ratios(norms, opts.depth)
    seconds = {f"{a}/{r}": res["seconds"] for (a, r), res in results.items()}
    write_csv(norms, path / "gradflow.csv")
    write_csv(ratios, path / "ratios.csv")
    write_csv(training, path / "training.csv")
    write_csv(checks, path / "agreement.csv")
    plot_gradflow(norms, path / "gradflow.png")
    env["training_seconds"] = seconds
    env["agreement_ok"] = bool(checks["ok"].all())
    write_json(env, path / "env.json")
    write_text(build_report(env, config, opts, ratios, training, checks, seconds), path / "report.md")
    return path, ratios, checks


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = options_from_args(args)
    config = command_config(
        args, prog=PROG,
        owned={"hidden_dims": "use --depth and --width", "activation": "use --activations",
               "residual": "it runs plain and residual", "epochs": "use --steps",
               "backends": "it runs numpy:cpu and torch:cpu", "lockstep": "it always runs in lock-step"},
        defaults={})
    path, ratios, checks = run_gradflow(config, opts, args.out, progress=not args.quiet)
    print(md_table(ratios))
    bad = checks[~checks["ok"]]
    print(f"results: {path}")
    if len(bad):
        w = bad.sort_values("max_rel_diff", ascending=False).iloc[0]
        print(f"{PROG}: error: numpy and torch disagree: {w['activation']} {w['arch']} {w['stage']}, "
              f"{w['check'].split(':')[0]}: max relative difference {w['max_rel_diff']:.3g} at layer "
              f"{w['layer']} > {w['rtol']:g} (details in {path / 'agreement.csv'})", file=sys.stderr)
        return EXIT_DISAGREE
    return 0


def cli() -> None:
    run_cli(main, prog=PROG)


if __name__ == "__main__":
    cli()
