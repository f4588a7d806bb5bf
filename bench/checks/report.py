"""The check's output: a document (rows, notes, diagnoses: what the JSON holds and what a checking
process sends back) and its Markdown text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.checks.gradcheck import (
    AUTOGRAD_TOL,
    FD_STEP,
    FD_TOL,
    FLOOR,
    REPEAT_TOL,
    STABILISER_BOUND,
    CheckOutcome,
)

COLUMNS = ["module", "check", "result", "worst rel. error", "tolerance", "worst case"]
LEGEND = (f"Relative error: ||a - b|| / max(||a||, ||b||, {FLOOR:g}) over a whole array, the worst over the "
          f"cases (float64); a failing row shows the representative shape when it fails there. Finite "
          f"differences: central, h = {FD_STEP:g}, of the module's own forward, against its backward with a "
          f"random dout (tolerance {FD_TOL:g}; not where a probability lies within h of 0 or 1, the edge of "
          f"a legitimate clip). Autograd: the same forward and backward in float64 torch (tolerance "
          f"{AUTOGRAD_TOL:g}; a numerical stabiliser may move a value by up to {STABILISER_BOUND:g}, and "
          f"is noted). Side effects: the inputs unchanged, and a second forward/backward on the same inputs "
          f"gives the same values (tolerance {REPEAT_TOL:g}).")


@dataclass
class CheckReport:
    """Everything one run of the check found."""

    target: str                                        # what the user passed
    described: str                                     # CourseImpl.describe()
    interface: str                                     # Interface.describe()
    seed: int
    outcomes: list[CheckOutcome] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def doc(self) -> dict[str, Any]:
        """The JSON document; a non-finite error (a shape mismatch, an exception) is null."""
        modules: dict[str, str] = {}
        for o in self.outcomes:
            modules[o.module] = "FAIL" if not o.passed or modules.get(o.module) == "FAIL" else "pass"
        return {"target": self.target, "implementation": self.described, "interface": self.interface,
                "seed": self.seed, "passed": self.passed, "exit": 0 if self.passed else 1,
                "notes": self.notes, "modules": modules,
                "tolerances": {"finite differences": FD_TOL, "fd_step": FD_STEP, "autograd": AUTOGRAD_TOL,
                               "side effects": REPEAT_TOL, "norm floor": FLOOR,
                               "stabiliser bound": STABILISER_BOUND},
                "rows": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in row(o).items()} for o in self.outcomes],
                "diagnoses": self.diagnoses}


def render(doc: dict[str, Any]) -> str:
    """The Markdown the command prints for one checked implementation."""
    import pandas as pd

    from bench.report import md_table

    rows = doc["rows"]
    failed = sum(r["result"] == "FAIL" for r in rows)
    lines = [f"Checking {doc['target']}: {doc['implementation']}.", f"Interface: {doc['interface']}.",
             f"Seed {doc['seed']}.", *doc["notes"], "",
             md_table(pd.DataFrame(rows, columns=COLUMNS), floatfmt=".2g"), "", LEGEND, ""]
    if doc["diagnoses"]:
        lines += ["Diagnosis:", *[f"- {d}" for d in doc["diagnoses"]], ""]
    lines.append(f"{failed} of {len(rows)} checks failed." if failed else
                 f"No verdict: the code replaced what the checks compute with ({len(rows)} checks ran)."
                 if doc.get("replaced") else f"All {len(rows)} checks passed.")
    return "\n".join(lines)


def row(o: CheckOutcome) -> dict[str, Any]:
    """The table row of one outcome: the worst error and where (or the exception, or the side effect)."""
    worst = o.worst()
    error = worst.error if worst is not None and not o.errors else float("nan")
    if o.errors:
        case, exc = next(((c, e) for c, e in o.errors if c.representative), o.errors[0])
        where = f"{case.label}: {exc.phase} {exc.message}"
    elif o.issues:
        where = "; ".join(i.short for i in o.issues)
    elif worst is not None:
        where = f"{worst.quantity}, {worst.case.label}" + (f": {worst.note}" if worst.note else "")
        where += f" (stabiliser: {worst.stabiliser})" if worst.stabiliser else ""
    else:
        where = ""
    return {"module": o.module, "check": o.check, "result": "pass" if o.passed else "FAIL",
            "worst rel. error": error, "tolerance": o.tol, "worst case": where}
