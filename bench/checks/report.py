"""The check's output: one table row per module and check, the diagnosis lines, and the JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.checks.gradcheck import AUTOGRAD_TOL, FD_STEP, FD_TOL, FLOOR, REPEAT_TOL, CheckOutcome
from bench.report import md_table

COLUMNS = ["module", "check", "result", "worst rel. error", "tolerance", "worst case"]
LEGEND = (f"Relative error: ||a - b|| / max(||a||, ||b||, {FLOOR:g}) over a whole array, the worst over the "
          f"cases (float64). Finite differences: central, h = {FD_STEP:g}, of the module's own forward, "
          f"against its backward with a random dout (tolerance {FD_TOL:g}). Autograd: the same forward and "
          f"backward in float64 torch (tolerance {AUTOGRAD_TOL:g}). Side effects: the inputs unchanged, "
          f"and a second forward/backward on the same inputs gives the same values "
          f"(tolerance {REPEAT_TOL:g}).")


@dataclass
class CheckReport:
    """Everything one run of the check found."""

    target: str                                        # what the user passed
    described: str                                     # CourseImpl.describe()
    seed: int
    labels: str                                        # "integer" or "one-hot"
    outcomes: list[CheckOutcome] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def rows(self) -> list[dict[str, Any]]:
        return [row(o) for o in self.outcomes]

    def text(self) -> str:
        """The Markdown the command prints."""
        failed = sum(not o.passed for o in self.outcomes)
        lines = [f"Checking {self.target}: {self.described}.",
                 f"CrossEntropyModule labels: {self.labels}; seed {self.seed}.", *self.notes, "",
                 md_table(pd.DataFrame(self.rows(), columns=COLUMNS), floatfmt=".2g"), "", LEGEND, ""]
        if self.diagnoses:
            lines += ["Diagnosis:", *[f"- {d}" for d in self.diagnoses], ""]
        lines.append(f"{failed} of {len(self.outcomes)} checks failed." if failed
                     else f"All {len(self.outcomes)} checks passed.")
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        doc = {"target": self.target, "implementation": self.described, "seed": self.seed,
               "labels": self.labels, "passed": self.passed, "notes": self.notes,
               "tolerances": {"finite differences": FD_TOL, "fd_step": FD_STEP, "autograd": AUTOGRAD_TOL,
                              "side effects": REPEAT_TOL, "norm floor": FLOOR},
               # a non-finite error (a shape mismatch, an exception) is null; "worst case" says why
               "rows": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                         for k, v in r.items()} for r in self.rows()],
               "diagnoses": self.diagnoses}
        path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def row(o: CheckOutcome) -> dict[str, Any]:
    """The table row of one outcome: the worst error and where (or the exception, or the side effect)."""
    worst = o.worst()
    error = worst.error if worst is not None and not o.errors else float("nan")
    if o.errors:
        case, exc = o.errors[0]
        where = f"{case.label}: {exc.phase} {exc.message}"
    elif o.issues:
        where = "; ".join(i.short for i in o.issues)
    elif worst is not None:
        where = f"{worst.quantity}, {worst.case.label}" + (f": {worst.note}" if worst.note else "")
    else:
        where = ""
    return {"module": o.module, "check": o.check, "result": "pass" if o.passed else "FAIL",
            "worst rel. error": error, "tolerance": o.tol, "worst case": where}
