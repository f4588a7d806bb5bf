"""The extreme eigenvalues of the training-loss Hessian at the best-validation model, NumPy and PyTorch.

Run it as::

    python -m bench.hessian --data-dir DIR          # the preset: hidden 32, 10 000 images, 5 epochs
    python -m bench.hessian --hidden-dims 128 --train-subset 45000 --epochs 10 --k 3
    python -m bench.hessian --dataset synthetic --hidden-dims 8 --batch-examples 64   # seconds

One run of the one run path (``bench.run.run_one`` on one backend,
``--backends``) trains the model of the Config; its best-validation weights
and its initial weights are the two points measured. At each, the Hessian H
of the mean cross-entropy on a fixed batch (the first ``--batch-examples``
training rows, float64) is probed two ways (docs/theory-measured.md):

* PyTorch: Hessian-vector products by double backward in float64;
* NumPy: central differences of the NumPy MLP's analytic gradient in float64,
  (g(θ + εu) − g(θ − εu)) / 2ε (``--eps``; see ``bench.theory.hvp``);

and each is fed to Lanczos (``scipy.sparse.linalg.eigsh`` on a
``LinearOperator``, the same start vector for both) for the ``--k`` largest
and the ``--k`` most negative eigenvalues. The two estimates must agree within
``--eig-rtol``. Before that, both products are validated against the exact
Hessian (``torch.func.hessian``, ``numpy.linalg.eigvalsh``) of a tiny model of
the same activation: ``--check-hidden`` units on the first ``--check-features``
input features of the first ``--check-examples`` training rows, at its
initialisation and after 500 full-batch gradient steps (``--check-rtol``). A
failed check or a disagreement is one line on stderr and exit status 1, after
every file is written.

Its preset (``bench.config.PRESETS["hessian"]``, shown by ``--help``) keeps a
run to a few minutes on two cores. The Hessian is that of the loss alone: with ``--weight-decay λ`` the training objective's Hessian is
H + λI (every eigenvalue shifted by λ). Outputs in ``--out`` (default
``results/<timestamp>_hessian/``): ``hessian.csv`` (every Ritz value),
``hessian_summary.csv``, ``agreement.csv``, ``exact_check.csv``,
``epochs.csv`` (the training run), ``hessian.png``, ``env.json``, ``report.md``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.backends import resolve
from bench.cli import command_parser
from bench.config import CIFAR10_N_CLASSES, CIFAR10_N_FEATURES, Config, config_from_args
from bench.datasource import load_for_config
from bench.errors import UserError, run_cli
from bench.loop import LoopHooks
from bench.memory import check_memory
from bench.report import md_table, setup_lines
from bench.results import ResultsFolder
from bench.run import run_one
from bench.theory.hvp import (
    NumpyFiniteDifferenceHVP,
    TorchHVP,
    exact_hessian,
    lanczos,
)
from bench.theory.params import flatten, unflatten
from bench.threads import limit_threads, resolve_threads
from impl_common.arch import Arch

COMMAND = "hessian"
PROG = "python -m bench.hessian"
EXIT_DISAGREE = 1
IMPL_LABELS = {"torch": "torch (double backward)", "numpy": "numpy (central differences)"}
CHECK_TRAIN_STEPS = 500  # full-batch gradient steps of the tiny model before its second check
CHECK_LR = 0.5
MAX_EXACT_PARAMS = 5000  # the exact check forms the tiny model's whole Hessian: 200 MB in float64
MAX_K = 100  # eigenvalues at each end at most: each is a Lanczos vector kept, and converged, per end


class InitialWeights(LoopHooks):
    """Keeps the weights the run starts from (after the warm-up is undone)."""

    state: dict[str, np.ndarray] | None = None

    def before_training(self, backend) -> None:
        self.state = backend.export_state()


# ---------------------------------------------------------------- measurement


def ncv_for(k: int, n: int) -> int:
    """Lanczos basis size: ARPACK's default max(2k + 1, 20), at most n."""
    return min(n, max(2 * k + 1, 20))


def spectrum_ends(op, n: int, k: int, v0: np.ndarray, opts: Config) -> dict[str, Any]:
    """Top-k (LA) and bottom-k (SA) Ritz values of ``op`` with the matvec cap of ``opts``."""
    ncv = ncv_for(k, n)
    maxiter = max(1, opts.max_matvecs // max(1, ncv - k))
    return {which: lanczos(op, n, k, which, v0=v0, tol=opts.tol, maxiter=maxiter, ncv=ncv)
            for which in ("LA", "SA")}


def measure_point(arch: Arch, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                  opts: Config, v0: np.ndarray, stage: str, log) -> tuple[list[dict], list[dict]]:
    """Ritz rows and summary rows of both implementations at one point."""
    n = arch.n_params()
    k = min(opts.k, n - 1)
    ritz, summary = [], []
    for impl in ("torch", "numpy"):
        t0 = time.perf_counter()
        if impl == "torch":
            op = TorchHVP(arch, state, x, y)
            loss, grad = op.loss.item(), op.gradient()
        else:
            op = NumpyFiniteDifferenceHVP(arch, state, x, y, eps=opts.eps)
            grad = op.gradient()
            loss = math.nan
        ends = spectrum_ends(op, n, k, v0, opts)
        seconds = time.perf_counter() - t0
        for which, e in ends.items():
            for rank, value in enumerate(e.values[::-1] if which == "LA" else e.values):
                ritz.append({"stage": stage, "impl": impl, "method": IMPL_LABELS[impl], "which": which,
                             "rank": rank, "eigenvalue": float(value), "converged": e.converged,
                             "matvecs": e.matvecs, "seconds": e.seconds})
        top, bottom = ends["LA"], ends["SA"]
        lam_max = float(top.values[-1]) if len(top.values) else math.nan
        lam_min = float(bottom.values[0]) if len(bottom.values) else math.nan
        summary.append({"stage": stage, "impl": impl, "method": IMPL_LABELS[impl], "n_params": n,
                        "batch_examples": len(y), "loss": loss, "grad_norm": float(np.linalg.norm(grad)),
                        "lambda_max": lam_max, "lambda_min": lam_min,
                        "ratio_min_max": lam_min / lam_max,
                        "converged": top.converged and bottom.converged,
                        "matvecs": top.matvecs + bottom.matvecs, "seconds": seconds})
        log(f"{stage:>7} {impl:<5}: lambda_max {lam_max:.6g}, lambda_min {lam_min:.6g} "
            f"({top.matvecs + bottom.matvecs} products, {seconds:.1f} s)")
    # the loss is the same function on both sides; report torch's for both rows
    for row in summary:
        row["loss"] = summary[0]["loss"]
    return ritz, summary


def agreement(summary: pd.DataFrame, rtol: float) -> pd.DataFrame:
    """|numpy − torch| / |torch| of λ_max and λ_min at each stage."""
    rows = []
    for stage, g in summary.groupby("stage", sort=False):
        by = g.set_index("impl")
        for q in ("lambda_max", "lambda_min"):
            t, nmp = float(by.loc["torch", q]), float(by.loc["numpy", q])
            rel = abs(nmp - t) / abs(t) if t != 0 else (0.0 if nmp == 0 else math.inf)
            rows.append({"stage": stage, "quantity": q, "torch": t, "numpy": nmp, "rel_diff": rel,
                         "rtol": rtol, "ok": bool(rel <= rtol)})
    return pd.DataFrame(rows)


def tiny_points(arch: Arch, seed: int, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The tiny model's initial weights (the NumPy MLP's draw from ``seed``) and its weights after
    ``CHECK_TRAIN_STEPS`` full-batch gradient-descent steps on (x, y), in float64."""
    from impl_numpy.mlp import MLP

    init = MLP(arch.n_inputs, list(arch.hidden_dims), arch.n_classes, arch.activation, alpha=arch.alpha,
               residual=arch.residual, rng=np.random.default_rng(seed), dtype=np.float64).state_dict()
    grad = NumpyFiniteDifferenceHVP(arch, init, x, y).gradient  # the analytic gradient at any θ
    theta = flatten(init, arch)
    for _ in range(CHECK_TRAIN_STEPS):
        theta = theta - CHECK_LR * grad(theta)  # θ ← θ − η ∇L(θ)
    return {"init": init, f"after {CHECK_TRAIN_STEPS} GD steps": unflatten(theta, arch)}


def exact_check(arch: Arch, points: dict[str, dict[str, np.ndarray]], x: np.ndarray, y: np.ndarray,
                opts: Config, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Lanczos on both products vs ``eigvalsh`` of the exact Hessian, per point and end."""
    n = arch.n_params()
    k = min(opts.k, n - 1)
    v0 = np.random.default_rng([seed, 2]).standard_normal(n)
    rows, spectra = [], {}
    for point, state in points.items():
        exact = np.linalg.eigvalsh(exact_hessian(arch, state, x, y))  # (n,) ascending
        spectra[point] = exact
        ops = {"torch": TorchHVP(arch, state, x, y),
               "numpy": NumpyFiniteDifferenceHVP(arch, state, x, y, eps=opts.eps)}
        for impl, op in ops.items():
            ends = spectrum_ends(op, n, k, v0, opts)
            for which, e in ends.items():
                ritz = e.values[::-1] if which == "LA" else e.values
                ref = exact[::-1][:k] if which == "LA" else exact[:k]
                for rank, (r, x_ref) in enumerate(zip(ritz, ref)):
                    rel = abs(r - x_ref) / abs(x_ref)
                    rows.append({"point": point, "impl": impl, "method": IMPL_LABELS[impl], "which": which,
                                 "rank": rank, "exact": float(x_ref), "lanczos": float(r),
                                 "rel_err": float(rel), "rtol": opts.check_rtol,
                                 "ok": bool(rel <= opts.check_rtol)})
    return pd.DataFrame(rows), spectra


# ---------------------------------------------------------------- outputs


def plot_hessian(ritz: pd.DataFrame, spectra: dict[str, np.ndarray], check: pd.DataFrame):
    """Ritz values per implementation and stage, and the tiny model's exact spectrum (symlog)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(ritz["stage"]))
    fig, axes = plt.subplots(1, len(stages) + 1, figsize=(4.6 * (len(stages) + 1), 4.2), squeeze=False)
    colours = {"LA": "tab:red", "SA": "tab:blue"}
    for ax, stage in zip(axes[0], stages):
        s = ritz[ritz.stage == stage]
        for j, impl in enumerate(("torch", "numpy")):
            for which in ("LA", "SA"):
                v = s[(s.impl == impl) & (s.which == which)]["eigenvalue"].to_numpy()
                ax.scatter(np.full(v.shape, j) + (0.08 if which == "SA" else -0.08), v,
                           color=colours[which], marker="_" if impl == "torch" else "x", s=160,
                           label=("top-k" if which == "LA" else "bottom-k") if j == 0 else None)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks([0, 1], ["torch\ndouble backward", "numpy\ncentral diff."])
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(f"{stage}: Ritz values")
        ax.set_ylabel("eigenvalue of H")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    for (point, ev), c in zip(spectra.items(), ("tab:gray", "tab:green")):
        ax.plot(np.arange(len(ev)), ev, color=c, lw=1.2, label=f"exact, {point}")
        sub = check[(check.point == point) & (check.impl == "numpy")]
        pos = np.where(sub.which == "LA", len(ev) - 1 - sub["rank"], sub["rank"])
        ax.scatter(pos, sub["lanczos"], color=c, marker="x", s=40, label=f"Lanczos (numpy), {point}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("index (ascending)")
    ax.set_title("tiny model: exact spectrum")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def build_report(env: dict[str, Any], config: Config, opts: Config, arch: Arch, run: dict[str, Any],
                 summary: pd.DataFrame, agree: pd.DataFrame, check: pd.DataFrame,
                 tiny: Arch, files: list[str]) -> str:
    data = env["data"]
    ok = bool(agree["ok"].all() and check["ok"].all())
    worst = check.groupby(["point", "impl"], sort=False)["rel_err"].max().reset_index()
    lines = [
        "# The Hessian at the minimum (docs/theory-measured.md)", "",
        "## Setup", "",
        *setup_lines(env),
        f"- Model: {arch.n_inputs} → {list(arch.hidden_dims)} → "
        f"{arch.n_classes}, {arch.activation}" + (", residual" if arch.residual else "")
        + f"; {arch.n_params():,} parameters.",
        f"- Run: `{run['backend']}`, seed {run['seed']}, {config.epochs} epochs of SGD lr {config.lr}, "
        f"batch {config.batch_size}, on {data['n_train']} training images ({data['source']}, fingerprint "
        f"`{str(data['fingerprint'])[:16]}…`); status {run['status']}, best validation accuracy "
        f"{run['best_val_acc']:.4f} at epoch {run['best_epoch']}, test accuracy {run['test_acc']:.4f}. "
        "`trained` is that best-validation model; `init` the same run's initial weights.",
        f"- Hessian of the mean cross-entropy (no weight-decay term) on a fixed batch: the first "
        f"{opts.batch_examples} training rows, float64. PyTorch: double backward. NumPy: central "
        f"differences of the analytic gradient, ε = {opts.eps:g} along a unit direction. Lanczos: "
        f"`scipy.sparse.linalg.eigsh`, k = {opts.k} at each end, tol {opts.tol:g}, at most "
        f"{opts.max_matvecs} products per end, the same start vector for both implementations.",
        f"- SciPy {env['versions'].get('scipy')} (Lanczos).", "",
        "## Extreme eigenvalues", "",
        "`ratio_min_max` = λ_min / λ_max. A strict minimum has every eigenvalue > 0; a negative λ_min "
        "that is small against λ_max is a point that is only approximately a minimum, as SGD "
        "usually leaves a network (docs/theory-measured.md).", "",
        md_table(summary.drop(columns=["method"]), floatfmt=".6g"), "",
        "![Ritz values and the tiny model's exact spectrum](hessian.png)", "",
        "## NumPy versus PyTorch", "",
        ("Within the tolerance at every stage." if agree["ok"].all()
         else "**Disagreement beyond the tolerance; the command exits 1.**"), "",
        md_table(agree, floatfmt=".6g"), "",
        "## Exact check on a tiny model", "",
        f"{tiny.n_inputs} inputs (the first {tiny.n_inputs} features) → {list(tiny.hidden_dims)} → "
        f"{tiny.n_classes}, {tiny.activation}, {tiny.n_params()} parameters, on the first "
        f"{opts.check_examples} training rows; the exact Hessian by `torch.func.hessian` "
        "(forward over reverse, a different route from the double backward) and `numpy.linalg.eigvalsh`; "
        f"points: its initialisation and after {CHECK_TRAIN_STEPS} full-batch gradient steps (lr "
        f"{CHECK_LR}). Largest relative error of the {opts.k} Ritz values at each end:", "",
        md_table(worst), "",
        ("Every Ritz value within the tolerance." if check["ok"].all()
         else f"**Some Ritz values are off by more than {opts.check_rtol:g}; the command exits 1.**"), "",
        "Files: " + ", ".join(f"`{f}`" for f in files) + " (`hessian.csv`: every Ritz value; "
        "`epochs.csv`: the training run).", "",
    ]
    if not ok:
        lines.insert(2, "**A check failed: see below.**\n")
    return "\n".join(lines)


def run_hessian(config: Config, out: str | None, *, progress: bool = True
                ) -> tuple[ResultsFolder, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train, measure, write every output; returns (folder, summary, agreement, exact check).

    Each stage's table is written as soon as it is done, so a signal keeps every stage finished
    before it (the folder says it was interrupted)."""
    opts = config
    chosen, _ = resolve(config.backends)
    if len(chosen) != 1:
        raise UserError(f"{PROG} trains on one backend; got {', '.join(c.name for c in chosen)}")
    if len(config.seeds) != 1:
        raise UserError(f"{PROG} runs one seed at a time; got seeds {config.seeds} (run it once per seed)")
    check_sizes(config)
    backend = chosen[0].build(config)
    seed = config.seeds[0]
    threads = resolve_threads(config.threads)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    check = agree = summary = pd.DataFrame()
    with ResultsFolder.create(out, COMMAND) as folder, limit_threads(threads):
        env: dict[str, Any] = {}
        with folder.measuring():
            data = load_for_config(config, seed, progress=progress)
            env = folder.write_env(threads, {"config": config.to_dict(), "data": data.info(),
                                             "backend": chosen[0].name})

            # --- exact check on a tiny model first: no point in a long run if the products are wrong
            tiny = Arch(opts.check_features, (opts.check_hidden,), data.n_classes, config.activation,
                        config.alpha, False)
            xs = np.ascontiguousarray(data.x_train[:opts.check_examples, :opts.check_features],
                                      dtype=np.float64)
            ys = data.y_train[:opts.check_examples].astype(np.int64)
            t0 = time.perf_counter()
            check, spectra = exact_check(tiny, tiny_points(tiny, seed, xs, ys), xs, ys, opts, seed)
            folder.write_csv("exact_check.csv", check)
            log(f"exact check ({tiny.n_params()} parameters): largest relative error "
                f"{check['rel_err'].max():.3g} ({time.perf_counter() - t0:.1f} s)")

            # --- the run; its initial and best-validation weights
            t0 = time.perf_counter()
            initial = InitialWeights()
            record = run_one(chosen[0], config, data, seed, backend=backend, hooks=[initial])
            folder.write_csv("epochs.csv", pd.DataFrame(record.epochs))
            env["run"] = record.run
            folder.write_json("env.json", env)
            if record.interrupted:
                raise KeyboardInterrupt
            if record.run.get("best_epoch") is None:
                raise UserError(f"the training run ended {record.status} before any validation"
                                + (f" ({record.error})" if record.error else "")
                                + "; nothing to measure (try a smaller --lr)")
            log(f"training: {record.status}, best val acc {record.run['best_val_acc']:.4f} at epoch "
                f"{record.run['best_epoch']} ({time.perf_counter() - t0:.1f} s)")
            trained_state = backend.export_state()  # the best-validation weights (the loop restored them)

            arch = Arch(data.n_features, tuple(config.hidden_dims), data.n_classes, config.activation,
                        config.alpha, config.residual)
            x = np.ascontiguousarray(data.x_train[:opts.batch_examples], dtype=np.float64)  # (B, F)
            y = data.y_train[:opts.batch_examples].astype(np.int64)                         # (B,)
            v0 = np.random.default_rng([seed, 1]).standard_normal(arch.n_params())
            ritz_rows, summary_rows = [], []
            for stage, state in (("init", initial.state), ("trained", trained_state)):
                r, sm = measure_point(arch, state, x, y, opts, v0, stage, log)
                ritz_rows += r
                summary_rows += sm
                summary = pd.DataFrame(summary_rows)
                folder.write_csv("hessian.csv", pd.DataFrame(ritz_rows))
                folder.write_csv("hessian_summary.csv", summary)

        if not folder.interrupted:  # every stage done
            agree = agreement(summary, opts.eig_rtol)
            folder.write_csv("agreement.csv", agree)
            folder.save_figure("hessian.png", plot_hessian(pd.DataFrame(ritz_rows), spectra, check))
            env.update(agreement_ok=bool(agree["ok"].all()), exact_check_ok=bool(check["ok"].all()))
            folder.write_json("env.json", env)
            folder.write_text("report.md", build_report(env, config, opts, arch, record.run, summary,
                                                        agree, check, tiny,
                                                        [*folder.written, "report.md"]))
        elif env:
            folder.write_text("report.md", "\n".join([
                "# The Hessian at the minimum (docs/theory-measured.md)", "", *folder.interrupted_note(),
                "## Setup", "", *setup_lines(env), "",
                *(["## Exact check on a tiny model", "", md_table(check), ""] if len(check) else []),
                *(["## Extreme eigenvalues so far", "", md_table(summary, floatfmt=".6g"), ""]
                  if len(summary) else []),
                "Files: " + ", ".join(f"`{f}`" for f in [*folder.written, "report.md"]) + ".", ""]))
    return folder, summary, agree, check


def check_sizes(config: Config) -> None:
    """What this command allocates beyond a training run, refused before any work when too large."""
    opts = config
    for name, value in (("batch_examples", opts.batch_examples), ("check_examples", opts.check_examples)):
        if value > config.n_train:
            raise UserError(f"invalid {name}: {value} (allowed: at most the {config.n_train} training rows)")
    if opts.check_features > CIFAR10_N_FEATURES:
        raise UserError(f"invalid check_features: {opts.check_features} (allowed: at most the "
                        f"{CIFAR10_N_FEATURES} input features)")
    tiny = Arch(opts.check_features, (opts.check_hidden,), CIFAR10_N_CLASSES, config.activation,
                config.alpha, False)
    if tiny.n_params() > MAX_EXACT_PARAMS:
        raise UserError(f"the exact check's model has {tiny.n_params()} parameters (check_features "
                        f"{opts.check_features} x check_hidden {opts.check_hidden}); its Hessian is "
                        f"formed whole, so at most {MAX_EXACT_PARAMS} are allowed: lower them")
    most = min(MAX_K, tiny.n_params() // 2 - 1)  # Lanczos needs a basis larger than 2k
    if opts.k > most:
        raise UserError(f"invalid k: {opts.k} (allowed: 1 to {most}, the most Lanczos can resolve "
                        f"at each end of the exact check's {tiny.n_params()} eigenvalues, and at most "
                        f"{MAX_K})")
    arch = Arch(CIFAR10_N_FEATURES, tuple(config.hidden_dims), CIFAR10_N_CLASSES, config.activation,
                config.alpha, config.residual)
    n = arch.n_params()
    basis = 8 * n * ncv_for(min(opts.k, n - 1), n) * 2  # the Lanczos vectors of eigsh, and a copy
    check_memory(config, 1, extra=basis, flags="--hidden-dims, --k, --batch-size or --train-subset")


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser(COMMAND, "Largest and most negative eigenvalues of the training-loss "
                            "Hessian at init and at the best-validation weights, by PyTorch double "
                            "backward and by NumPy finite differences, each through Lanczos.")
    args = parser.parse_args(argv)
    config = config_from_args(args, COMMAND)
    folder, summary, agree, check = run_hessian(config, args.out, progress=not args.quiet)
    path = folder.path
    if len(summary):
        print(md_table(summary[["stage", "impl", "lambda_max", "lambda_min", "ratio_min_max", "matvecs",
                                "seconds"]], floatfmt=".6g"))
    if len(agree):
        print(md_table(agree, floatfmt=".3g"))
    print(f"results: {path}")
    if folder.interrupted:
        print(f"interrupted: partial results in {path}", file=sys.stderr)
        return folder.exit_code()
    problems = []
    if not check["ok"].all():
        w = check.loc[check["rel_err"].idxmax()]
        problems.append(f"exact check failed: {w['impl']} {w['which']} rank {w['rank']} at {w['point']}: "
                        f"relative error {w['rel_err']:.3g} > {w['rtol']:g}")
    if not agree["ok"].all():
        w = agree.loc[agree["rel_diff"].idxmax()]
        problems.append(f"numpy and torch disagree on {w['quantity']} at {w['stage']}: "
                        f"{w['numpy']:.6g} vs {w['torch']:.6g} (relative {w['rel_diff']:.3g} > {w['rtol']:g})")
    if problems:
        print(f"{PROG}: error: " + "; ".join(problems) + f" (details in {path})", file=sys.stderr)
        return EXIT_DISAGREE
    return 0


def cli() -> None:
    run_cli(main, prog=PROG)


if __name__ == "__main__":
    cli()
