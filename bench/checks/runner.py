"""One implementation checked in this process: every module, then the MLP, into a report.

:func:`check_target` is what the checking process of :mod:`bench.checks.sandbox`
runs (``python -m bench.check`` never runs the user's code in its own process);
:func:`run_checks` takes an implementation already loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench import provenance
from bench.checks.diagnose import carry_stabilisers, diagnose, diagnose_network, mark_stabilisers
from bench.checks.interface import detect
from bench.checks.layers import COMPOSITE, check_layer, specs
from bench.checks.loader import CourseImpl, load_course
from bench.checks.network import check_network
from bench.checks.report import CheckReport
from bench.errors import UserError

_REFERENCE = provenance.snapshot((torch, torch.autograd, torch.nn.functional))  # before any user code


def run_checks(impl: CourseImpl, seed: int = 0,
               progress: Callable[[str], None] = lambda phase: None) -> CheckReport:
    """Every check of ``impl`` (a loaded CourseImpl), in this process: the modules one by one, then
    the MLP when there is one. A :class:`UserError` when its interface is none the course had."""
    progress("detecting the interface")
    iface = detect(impl)
    report = CheckReport(impl.source, impl.describe(), iface.describe(), seed)
    if "elu" in iface.activations and not iface.elu_alpha:
        report.notes.append("ELUModule() takes no alpha: it is checked at alpha = 1 only.")
    for k, spec in enumerate(specs(iface)):
        progress(f"checking {spec.name}")
        outcomes = check_layer(spec, iface, np.random.default_rng([seed, k]))
        stabilised = (spec.name == COMPOSITE and carry_stabilisers(outcomes, _stabilisers(report))) \
            or mark_stabilisers(outcomes)
        report.notes += stabilised + [n for o in outcomes for n in o.notes]
        report.outcomes += outcomes
        # SoftMax -> CrossEntropy gets lines of its own only when both modules pass alone
        parts_pass = all(o.passed for o in report.outcomes
                         if o.module in ("SoftMaxModule", "CrossEntropyModule"))
        if spec.name != COMPOSITE or parts_pass:
            report.diagnoses += diagnose(outcomes)
    if impl.MLP is None:
        report.notes.append("No MLP: the whole-network check is skipped.")
    else:
        progress("checking the MLP")
        modules_pass = report.passed
        rows, notes = check_network(iface, np.random.default_rng([seed, 99]))
        report.notes += notes + carry_stabilisers(rows, _stabilisers(report))
        report.outcomes += rows
        if modules_pass:
            report.diagnoses += diagnose_network(rows)
    return report


def check_target(target: str, seed: int = 0, progress: Callable[[str], None] = lambda phase: None
                 ) -> dict[str, Any]:
    """Load and check ``target`` in this process: the report's document, with ``exit`` 0 or 1, or
    ``exit`` 2 and the one-line ``error`` when the code does not load or lacks the interface."""
    try:
        progress("loading")
        impl = load_course(target)
        doc = run_checks(impl, seed, progress).doc()
    except UserError as exc:
        return {"target": target, "exit": 2, "passed": False, "error": str(exc)}
    gone = provenance.replaced() + provenance.changed(_REFERENCE)  # the checks compute with them
    if gone:
        shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
        doc.update(exit=1, passed=False, replaced=gone[:50], diagnoses=[
            f"the code replaced {shown}, which the checks themselves compute with: no verdict of this "
            "check can be trusted (a correct implementation never needs to)", *doc["diagnoses"]])
    return doc


def _stabilisers(report: CheckReport) -> list[str]:
    """The stabilisers found in the modules checked so far (within their bound or not), or, when
    none, those the loss path showed itself."""
    found = [(o.module == COMPOSITE, c.stabiliser) for o in report.outcomes for c in o.comparisons
             if c.stabiliser]
    return [text for composite, text in found if not composite] or [text for _, text in found]
