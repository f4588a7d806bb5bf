"""claims.csv and claims.md from the outcomes so far (rewritten after every claim)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd

from bench.claims.verdict import COLUMNS, Outcome
from bench.report import md_table, setup_lines
from bench.results import ResultsFolder


def write(folder: ResultsFolder, outcomes: list[Outcome], env: dict[str, Any], *, quick: bool,
          pending: list[int], interrupted: bool) -> pd.DataFrame:
    table = pd.DataFrame([asdict(v) for o in outcomes for v in o.verdicts], columns=list(COLUMNS))
    folder.write_csv("claims.csv", table)
    lines = ["# The course write-up's claims, tested (docs/reference.md)", ""]
    if quick:
        lines += ["**A --quick run: less data, shorter training, smaller nets. Every verdict is provisional.**", ""]
    if interrupted:
        lines += ["**Interrupted: the claims below are those measured before it.**", ""]
    if pending:
        lines += [f"Not measured: claims {', '.join(map(str, pending))}.", ""]
    cfg = env["config"]
    lines += ["## Setup", "", *setup_lines(env, [
        f"- Seeds: {cfg['seeds']}; claims 6-8 use the first {cfg['theory_seeds']}; training: hidden "
        f"{cfg['hidden_dims']}, {cfg['activation']}, SGD lr {cfg['lr']}, batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs, {cfg['dtype']}"]), "",
        "A verdict is `supported`, `not supported` or `inconclusive`; it never rests on fewer runs than its "
        "test needs, and no verdict uses a timing.", "",
        "## Verdicts", "", md_table(table.drop(columns=["reason"])), ""]
    for o in outcomes:
        lines += [f"## Claim {o.number}: {o.statement}", "", o.text, ""]
        lines += [f"- **{v.id}: {v.verdict}.** {v.reason}." for v in o.verdicts] + [""]
        if o.figure:
            lines += [f"![claim {o.number}]({o.figure})", ""]
    lines += ["Files: " + ", ".join(f"`{f}`" for f in [*folder.written, "claims.md"]) + ".", ""]
    folder.write_text("claims.md", "\n".join(lines))
    return table
