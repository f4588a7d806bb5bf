"""The extreme eigenvalues of the training-loss Hessian at the best-validation model, NumPy and PyTorch.

Run it as::

    python -m bench.hessian --data-dir DIR          # the preset: hidden 32, 10 000 images, 5 epochs
    python -m bench.hessian --hidden-dims 128 --train-subset 45000 --epochs 10 --k 3
    python -m bench.hessian --dataset synthetic --hidden-dims 8 --batch-examples 64   # seconds

One run of the one run layer (``bench.run`` on one backend, ``--backends``)
trains the model of the Config; its best-validation weights and its initial
weights are the two points measured. At each, the Hessian H of the mean
cross-entropy on a fixed batch (the first ``--batch-examples`` training rows,
float64) is probed two ways (``bench.theory.hessian``, docs/theory-measured.md):

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
run to a few minutes on two cores. The Hessian is that of the loss alone: with
``--weight-decay λ`` the training objective's Hessian is H + λI (every
eigenvalue shifted by λ). Outputs in ``--out`` (default
``results/<timestamp>_hessian/``): ``hessian.csv`` (every Ritz value),
``hessian_summary.csv``, ``agreement.csv``, ``exact_check.csv``, ``epochs.csv``
(the training run), ``hessian.png``, ``env.json``, ``report.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import runner
from bench.errors import UserError
from bench.report import md_table
from bench.run import Run
from bench.theory import hessian as theory
from impl_common.arch import Arch

PROG = "python -m bench.hessian"


def _check(ctx: runner.Context) -> None:
    if len(ctx.chosen) != 1:
        raise UserError(f"{PROG} trains on one backend; got {', '.join(c.name for c in ctx.chosen)}")
    if len(ctx.config.seeds) != 1:
        raise UserError(f"{PROG} runs one seed at a time; got seeds {ctx.config.seeds} (run it once per seed)")
    theory.check_sizes(ctx.config, ctx.settings)


def measure(ctx: runner.Context) -> runner.Result:
    """The exact check first (no point in a long run if the products are wrong), then the run, then
    both of its points; a signal keeps every stage finished before it."""
    config, opts, seed = ctx.config, ctx.settings, ctx.config.seeds[0]
    check, spectra, run, ritz, summary, failed = pd.DataFrame(), {}, {}, [], [], ""
    with ctx.measuring():
        data = ctx.data(seed)
        tiny = theory.tiny_arch(config, opts, data.n_classes)
        small = theory.tiny_data(data, tiny, opts.check_examples)
        xs, ys = small.x_train, small.y_train
        check, spectra = theory.exact_check(tiny, theory.tiny_points(tiny, seed, xs, ys), xs, ys, opts, seed)
        ctx.say(f"exact check ({tiny.n_params()} parameters): largest relative error {check['rel_err'].max():.3g}")
        initial = theory.InitialWeights()
        training = Run(ctx.chosen[0], config, data, seed, backend=ctx.backends[0], hooks=[initial])
        if training.start():
            while training.step():
                pass
        record = training.finish()
        run = record.run
        if record.interrupted:
            raise KeyboardInterrupt
        if run.get("best_epoch") is None:
            failed = (f"the training run ended {record.status} before any validation"
                      + (f" ({record.error})" if record.error else "") + "; nothing to measure (try a smaller --lr)")
        else:
            ctx.say(f"training: {record.status}, best val acc {run['best_val_acc']:.4f} at epoch {run['best_epoch']}")
            trained = training.backend.export_state()  # the best-validation weights (the loop restored them)
            arch = Arch(data.n_features, tuple(config.hidden_dims), data.n_classes, config.activation,
                        config.alpha, config.residual)
            x = np.ascontiguousarray(data.x_train[:opts.batch_examples], dtype=np.float64)  # (B, F)
            y = data.y_train[:opts.batch_examples].astype(np.int64)                         # (B,)
            v0 = np.random.default_rng([seed, 1]).standard_normal(arch.n_params())
            for stage, state in (("init", initial.state), ("trained", trained)):
                r, s = theory.measure_point(arch, state, x, y, opts, v0, stage, ctx.say)
                ritz, summary = ritz + r, summary + s
    if not run and check.empty:
        return runner.Result()
    summary = pd.DataFrame(summary)
    done = len(summary) == 4 and not ctx.interrupted
    agree = theory.agreement(summary, opts.eig_rtol) if done else pd.DataFrame()
    arch = Arch(data.n_features, tuple(config.hidden_dims), data.n_classes, config.activation, config.alpha,
                config.residual)
    setup, sections = theory.sections(config, opts, arch, run, data.info(), summary, agree, check, tiny,
                                      ctx.env.get("versions", {}).get("scipy"))
    tables = {"exact_check.csv": check, **({"epochs.csv": pd.DataFrame(record.epochs)} if run else {}),
              **({"hessian.csv": pd.DataFrame(ritz), "hessian_summary.csv": summary} if ritz else {}),
              **({"agreement.csv": agree} if done else {})}
    result = runner.Result(tables=tables, setup=setup, sections=sections, env={"run": run})
    if failed:  # a run that diverged or ran out of memory: what was measured stays, exit 1
        result.problems = [f"{PROG}: {failed}"]
    if not done:
        return result
    result.figures = {"hessian.png": ("Ritz values and the tiny model's exact spectrum",
                                      lambda: theory.plot_hessian(pd.DataFrame(ritz), spectra, check))}
    result.env.update(agreement_ok=bool(agree["ok"].all()), exact_check_ok=bool(check["ok"].all()))
    result.printed = [md_table(summary[["stage", "impl", "lambda_max", "lambda_min", "ratio_min_max", "matvecs",
                                        "seconds"]], floatfmt=".6g"), md_table(agree, floatfmt=".3g")]
    if not check["ok"].all():
        w = check.loc[check["rel_err"].idxmax()]
        result.problems.append(f"exact check failed: {w['impl']} {w['which']} rank {w['rank']} at {w['point']}: "
                               f"relative error {w['rel_err']:.3g} > {w['rtol']:g}")
    if not agree["ok"].all():
        w = agree.loc[agree["rel_diff"].idxmax()]
        result.problems.append(f"numpy and torch disagree on {w['quantity']} at {w['stage']}: {w['numpy']:.6g} "
                               f"vs {w['torch']:.6g} (relative {w['rel_diff']:.3g} > {w['rtol']:g})")
    if result.problems:
        result.problems = [f"{PROG}: error: " + "; ".join(result.problems) + f" (details in {ctx.folder.shown})"]
    return result


COMMAND = runner.Command(
    "hessian", "The Hessian at the minimum (docs/theory-measured.md)", measure, check=_check,
    about="Largest and most negative eigenvalues of the training-loss Hessian at init and at the "
          "best-validation weights, by PyTorch double backward and by NumPy finite differences, each "
          "through Lanczos.")
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
