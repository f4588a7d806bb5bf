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

from pathlib import Path

from bench import io, runner
from bench.checks.classwide import check_class, find_submissions
from bench.checks.loader import names_nothing
from bench.checks.report import render
from bench.checks.sandbox import Limits, check_isolated
from bench.errors import UserError

PROG = "python -m bench.check"


def measure(ctx: runner.Context) -> runner.Result:
    """One implementation checked in its sandbox, or a class of them into one table."""
    s = ctx.settings
    if s.json == "":  # given, but naming nothing: not the same as absent
        raise UserError("invalid --json '' (allowed: the path of a new or regular file)")
    limits = Limits(s.timeout, s.memory_mb * 2**20)
    subs = find_submissions(s.targets)
    if subs is not None:
        if s.json:
            raise UserError("--json takes one implementation; for several, check.csv and report.md go to --out")
        return runner.Result(code=check_class(subs, s.seed, limits, s.jobs, s.out, s.targets))
    if s.out:  # a path that names nothing is said first: it is no class either (A14-F3)
        raise UserError(f"no such file or folder: {s.targets[0]}" if names_nothing(s.targets[0]) else
                        "--out is for several submissions; for one implementation use --json FILE")
    if s.json:
        _claim_json(Path(s.json), s.targets[0])
    doc = check_isolated(s.targets[0], s.seed, limits)
    if doc["exit"] == 2:
        raise UserError(doc["error"])
    if s.json:
        try:
            io.write_json(doc, Path(s.json))
        except OSError as exc:
            raise UserError(f"cannot write --json {s.json}: {exc.strerror or exc}") from None
    return runner.Result(printed=[render(doc) if "rows" in doc else f"{doc['error']}; no check finished."],
                         code=doc["exit"])


def _claim_json(path: Path, target: str) -> None:
    """Before any work: --json names a new or regular file in an existing folder, never a link, and no
    file of the code checked (its folder, or its file)."""
    code = Path(target).resolve()
    if path.resolve() == code or (code.is_dir() and code in path.resolve().parents):
        raise UserError(f"--json {path} is inside the code being checked, {target} (allowed: a file "
                        "outside it)")
    if path.is_symlink():
        raise UserError(f"--json {path} is a symbolic link; it is not written through (allowed: a new or "
                        "regular file)")
    if path.exists() and not path.is_file():
        raise UserError(f"--json {path} exists and is not a regular file (allowed: a new or regular file)")
    if not path.parent.is_dir():
        raise UserError(f"--json {path}: no folder {path.parent} (allowed: a file in an existing folder)")


COMMAND = runner.Command(
    "check", "Course implementation check", measure, folder=False, loads_data=False,
    about="Check course-style NumPy MLPs (modules.py, optionally mlp_numpy.py) by finite differences and against "
          "torch autograd, and name the usual mistakes. Each target is run (imported) in a process of its own, "
          "with a time and a memory limit. Exit status: 0 all checks pass, 1 a check fails, 2 the code does not "
          "load or lacks the interface; for several submissions: 0 all pass, else 1.")
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
