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
PyTorch MLP. ``bench.theory.gradflow`` measures, per network:

* the Frobenius norm of dL/dW of every linear layer on a fixed batch (the
  first ``--batch-examples`` training rows), at initialisation and after
  training;
* the training: each implementation is one run of the one run layer
  (``bench.run``, the harness loop and batch order) from those weights,
  evaluated every ``--eval-every`` steps, every step's batch loss recorded;
* whether the implementations agree: dL/dW of the two at the same weights (at
  init and at each one's trained weights; relative Frobenius difference <=
  ``--grad-rtol``), the first ``--check-steps`` lock-step batch losses (<=
  ``--grad-rtol``), and how soon the two trajectories part
  (``bench.lockstep``) compared with a rounding control (PyTorch from the
  weights times 1 + machine epsilon). A disagreement is one line on stderr
  and exit status 1, after every file is written.

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

import numpy as np
import pandas as pd

from bench import runner
from bench.errors import UserError
from bench.memory import check_memory
from bench.report import md_table
from bench.theory import gradflow as theory
from bench.theory.params import initial_state
from impl_common.arch import Arch

PROG = "python -m bench.gradflow"


def _check(ctx: runner.Context) -> None:
    """One seed; the deep net (three models live at once) fits; the fixed batch is in the data."""
    config, opts = ctx.config, ctx.settings
    if len(config.seeds) != 1:
        raise UserError(f"{PROG} runs one seed at a time; got seeds {config.seeds} (run it once per seed)")
    if opts.batch_examples > config.n_train:
        raise UserError(f"invalid batch_examples: {opts.batch_examples} (allowed: at most the "
                        f"{config.n_train} training rows)")
    # the norms' fixed batch runs through the deep net as a training batch does: the larger one counts
    deep = dataclasses.replace(config, hidden_dims=[opts.width] * opts.depth, residual=True,
                               batch_size=max(config.batch_size, opts.batch_examples)).validate()
    check_memory(deep, 3, flags="--width, --depth, --batch-size, --batch-examples or --train-subset")


def measure(ctx: runner.Context) -> runner.Result:
    """Every activation × plain/residual network; a signal keeps the networks already done."""
    config, opts, seed = ctx.config, ctx.settings, ctx.config.seeds[0]
    done, data = [], None
    with ctx.measuring():
        data = ctx.data(seed)
        for act in opts.activations:
            for arch in theory.ARCHS:
                init = initial_state(Arch(data.n_features, (opts.width,) * opts.depth, data.n_classes,
                                                 act, config.alpha, arch == "residual"), seed, config.dtype)
                done.append(theory.measure_network(config, opts, data, act, arch, seed, init, ctx.say))
    if not done:
        return runner.Result(sections=[(None, ["No network finished."])])

    def table(key: str) -> pd.DataFrame:
        return pd.DataFrame([r for res in done for r in res[key]])

    norms, training, steps, checks = table("norms"), table("training"), table("steps"), table("checks")
    networks = pd.DataFrame([res["network"] for res in done])
    ratios = theory.first_last_ratios(norms, opts.depth)
    setup, sections = theory.sections(config, opts, len(data.y_train), ratios, training, checks, networks)
    bad = checks[~checks["ok"]]
    problems = []
    if len(bad):
        w = bad.iloc[0]
        amount = (f"max relative difference {w['max_rel_diff']:.3g} at {w['where']} > {w['rtol']:g}"
                  if np.isfinite(w["rtol"]) else w["where"])
        problems.append(f"{PROG}: error: numpy and torch disagree ({len(bad)} failed check(s)); first: "
                        f"{w['activation']} {w['arch']}, {w['stage']}, {w['check'].split(':')[0]}: {amount} "
                        f"(details in {ctx.folder.shown / 'agreement.csv'})")
    return runner.Result(
        tables={"gradflow.csv": norms, "ratios.csv": ratios, "training.csv": training, "steps.csv": steps,
                "agreement.csv": checks, "networks.csv": networks},
        figures={"gradflow.png": ("Per-layer gradient norms", lambda: theory.plot_gradflow(norms)),
                 "training.png": ("Training", lambda: theory.plot_training(training))},
        setup=setup, sections=sections, printed=[md_table(ratios)], problems=problems,
        env={"networks": networks.to_dict(orient="records"), "agreement_ok": bool(checks["ok"].all())})


COMMAND = runner.Command(
    "gradflow", "Gradient flow: plain versus residual (docs/theory-measured.md)", measure, check=_check,
    about="Per-layer gradient norms of a deep plain and residual MLP in NumPy and PyTorch from identical "
          "weights, at init and after training in lock-step.")
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
