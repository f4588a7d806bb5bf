"""Check a course-style NumPy MLP: each module's gradients, the network against torch, the usual mistakes.

Run it as::

    python -m bench.check path/to/assignment/            # a folder with modules.py (and mlp_numpy.py)
    python -m bench.check path/to/assignment/modules.py  # the same, naming the file
    python -m bench.check impl_numpy                     # an importable package: this project's own
    python -m bench.check impl_numpy --seed 3 --json check.json

The implementation is the course interface: ``modules.py`` with
``LinearModule(in_features, out_features, input_layer=False)`` (``params`` and
``grads`` dicts, ``weight`` (out, in), ``bias`` (out,) or (1, out)),
``ELUModule(alpha)``, ``SoftMaxModule()`` and ``CrossEntropyModule()``
(``forward(x, y)`` / ``backward(x, y)``, integer or one-hot labels), and
optionally ``MLP(n_inputs, n_hidden, n_classes)`` in ``mlp_numpy.py`` beside it.

In float64, each module is checked on shapes down to batch 1, one feature and
one class, and at logits of magnitude 1e3: by central finite differences of
its own forward against its backward, against the same computation in torch
autograd, and for side effects (inputs changed in place, grads accumulated).
The MLP, built as ``MLP(7, [5, 4], 3)``, is compared with torch from copied
weights: output, loss and every parameter gradient. A Markdown table is
printed, one row per module and check, then one line per mistake recognised.
Exit status: 0 when every check passes, 1 when one fails, 2 when the code
does not load or lacks the interface (one line on stderr).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.checks.diagnose import diagnose, diagnose_network
from bench.checks.layers import COMPOSITE, SPECS, check_layer, detect_labels
from bench.checks.loader import CourseImpl, load_course
from bench.checks.network import check_network
from bench.checks.report import CheckReport
from bench.errors import OneLineArgumentParser, UserError, run_cli

PROG = "python -m bench.check"


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Check a course-style NumPy MLP (modules.py, optionally mlp_numpy.py) by finite "
                    "differences and against torch autograd, and name the usual mistakes. "
                    "PATH_OR_MODULE is your own code and the command executes it (imports it): "
                    "only run it on code you trust.",
        epilog="Exit status: 0 all checks pass, 1 a check fails, 2 the code does not load or lacks the "
               "interface.")
    parser.add_argument("target", metavar="PATH_OR_MODULE",
                        help="a folder holding modules.py (and maybe mlp_numpy.py), a modules .py file, "
                             "or an importable module or package name such as impl_numpy; it is imported, "
                             "i.e. run")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random inputs, weights and upstream gradients (default: 0)")
    parser.add_argument("--json", metavar="FILE", type=Path,
                        help="also write the table and diagnoses as JSON")
    return parser


def run_checks(impl: CourseImpl, seed: int = 0) -> CheckReport:
    """Every check of ``impl``: the modules one by one, then the MLP when there is one."""
    labels = detect_labels(impl, np.random.default_rng([seed, 99]))
    report = CheckReport(impl.source, impl.describe(), seed, labels)
    for k, spec in enumerate(SPECS):
        outcomes = check_layer(spec, impl, np.random.default_rng([seed, k]), labels)
        report.outcomes += outcomes
        # SoftMax -> CrossEntropy gets lines of its own only when both modules pass alone
        parts_pass = all(o.passed for o in report.outcomes
                         if o.module in ("SoftMaxModule", "CrossEntropyModule"))
        if spec.name != COMPOSITE or parts_pass:
            report.diagnoses += diagnose(outcomes)
    if impl.MLP is None:
        report.notes.append("No MLP: the whole-network check is skipped.")
    else:
        modules_pass = report.passed
        rows, notes = check_network(impl, np.random.default_rng([seed, len(SPECS)]), labels)
        report.outcomes += rows
        report.notes += notes
        if modules_pass:
            report.diagnoses += diagnose_network(rows)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seed < 0:
        raise UserError(f"invalid --seed: {args.seed} (allowed: an integer >= 0)")
    impl = load_course(args.target)
    report = run_checks(impl, args.seed)
    print(report.text())
    if args.json:
        try:
            report.write_json(args.json)
        except OSError as exc:
            raise UserError(f"cannot write --json {args.json}: {exc.strerror or exc}") from None
    return 0 if report.passed else 1


if __name__ == "__main__":
    run_cli(main, prog=PROG)
