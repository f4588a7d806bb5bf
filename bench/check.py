"""Check course-style NumPy MLPs: each module's gradients, the network against torch, the usual mistakes.

Run it as::

    python -m bench.check path/to/assignment/            # a folder with modules.py (and mlp_numpy.py)
    python -m bench.check path/to/assignment/modules.py  # the same, naming the file
    python -m bench.check impl_numpy                     # an importable package: this project's own
    python -m bench.check impl_numpy --seed 3 --json check.json
    python -m bench.check submissions/                   # a folder of submission folders: one table
    python -m bench.check alice/ bob/ carol/ --out results/class

The interface is detected from the code (:mod:`bench.checks.interface`):
``modules.py`` with ``LinearModule(in, out[, input_layer])`` (``params`` and
``grads`` dicts; weight (out, in) or (in, out); bias (out,), (1, out) or
(out, 1)), ``ELUModule(alpha)``, ``ELUModule()`` or ``ReLUModule()``,
``SoftMaxModule()`` and ``CrossEntropyModule()`` (``forward(x, y)`` /
``backward(x, y)``, integer or one-hot labels), and optionally
``MLP(n_inputs, n_hidden, n_classes)`` in ``mlp_numpy.py`` beside it.

In float64, each module is checked on shapes down to batch 1, one feature and
one class, at logits of magnitude 1e3, and at a representative shape: by
central finite differences of its own forward against its backward, against
the same computation in torch autograd, and for side effects (inputs changed
in place, grads accumulated). The MLP, built as ``MLP(7, [5, 4], 3)``, is
compared with torch from copied weights. A Markdown table is printed, one row
per module and check, then one line per mistake recognised.

Every implementation is checked in a process of its own with a time and a
memory limit (:mod:`bench.checks.sandbox`): the code it runs is the user's.
Several targets, or one folder of submission folders, give one table for the
class (:mod:`bench.checks.classwide`). Exit status: 0 when every check
passes, 1 when one fails (or the code ran out of time or memory, or ended its
process), 2 when the code does not load or lacks the interface (one line on
stderr) or the command line is wrong; for a class, 0 when every submission
passes, else 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench import io
from bench.checks.classwide import check_class, find_submissions
from bench.checks.report import render
from bench.checks.sandbox import Limits, check_isolated
from bench.errors import OneLineArgumentParser, UserError, run_cli

PROG = "python -m bench.check"
TIMEOUT_S, MEMORY_MB = 60.0, 2048  # per implementation: ample for the check's tiny shapes


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Check course-style NumPy MLPs (modules.py, optionally mlp_numpy.py) by finite "
                    "differences and against torch autograd, and name the usual mistakes. Each target is "
                    "run (imported) in a process of its own, with a time and a memory limit.",
        epilog="Exit status: 0 all checks pass, 1 a check fails, 2 the code does not load or lacks the "
               "interface; for several submissions: 0 all pass, else 1.")
    parser.add_argument("targets", metavar="PATH_OR_MODULE", nargs="+",
                        help="a folder holding modules.py (and maybe mlp_numpy.py), a modules .py file, "
                             "an importable module or package name such as impl_numpy; several of them, "
                             "or one folder of submission folders, for a class-wide table")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random inputs, weights and upstream gradients (default: 0)")
    parser.add_argument("--json", metavar="FILE", type=Path,
                        help="one implementation: also write the table and diagnoses as JSON")
    parser.add_argument("--out", metavar="DIR",
                        help="several submissions: the folder for check.csv and report.md (new or empty; "
                             "default results/<timestamp>_check/)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help=f"seconds each implementation may take (default: {TIMEOUT_S:g})")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB,
                        help=f"MiB each implementation may allocate (default: {MEMORY_MB})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="submissions checked at the same time (default: the number of cores)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value, ok in (("--seed", args.seed, args.seed >= 0), ("--jobs", args.jobs, args.jobs >= 1),
                            ("--memory-mb", args.memory_mb, args.memory_mb >= 64),
                            ("--timeout", args.timeout, 1 <= args.timeout <= 86400)):
        if not ok:
            allowed = {"--seed": "an integer >= 0", "--jobs": "an integer >= 1",
                       "--memory-mb": "an integer >= 64", "--timeout": "seconds from 1 to 86400"}[name]
            raise UserError(f"invalid {name}: {value} (allowed: {allowed})")
    limits = Limits(args.timeout, args.memory_mb * 2**20)
    subs = find_submissions(args.targets)
    if subs is not None:
        if args.json:
            raise UserError("--json takes one implementation; for several, check.csv and report.md go to --out")
        return check_class(subs, args.seed, limits, args.jobs, args.out)
    if args.out:
        raise UserError("--out is for several submissions; for one implementation use --json FILE")
    target = args.targets[0]
    if args.json:
        _claim_json(args.json)
    doc = check_isolated(target, args.seed, limits)
    if doc["exit"] == 2:
        raise UserError(doc["error"])
    print(render(doc) if "rows" in doc else f"{doc['error']}; no check finished.")
    if args.json:
        try:
            io.write_json(doc, args.json)
        except OSError as exc:
            raise UserError(f"cannot write --json {args.json}: {exc.strerror or exc}") from None
    return doc["exit"]


def _claim_json(path: Path) -> None:
    """Before any work: --json names a new or regular file in an existing folder, never a link."""
    if path.is_symlink():
        raise UserError(f"--json {path} is a symbolic link; it is not written through (allowed: a new or "
                        "regular file)")
    if path.exists() and not path.is_file():
        raise UserError(f"--json {path} exists and is not a regular file (allowed: a new or regular file)")
    if not path.parent.is_dir():
        raise UserError(f"--json {path}: no folder {path.parent} (allowed: a file in an existing folder)")


if __name__ == "__main__":
    run_cli(main, prog=PROG)
