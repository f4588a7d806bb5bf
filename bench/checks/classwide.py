"""A whole class at once: every submission checked in a process of its own, one table.

:func:`find_submissions` turns the command's targets into submissions (each
target, or the folders inside the one folder given); :func:`check_class` runs
:func:`bench.checks.sandbox.check_isolated` on them, ``jobs`` at a time, and
writes ``check.csv`` and ``report.md`` into the results folder: one row per
submission with the interface detected, pass or FAIL per module, the
diagnosis, the notes and the exit status ``python -m bench.check`` gives it
alone. A submission that loops, allocates without end or ends its process is
one row; Ctrl-C or SIGTERM writes the rows done so far.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from bench.checks.sandbox import Limits, Running, check_isolated
from bench.errors import EXIT_FAILED, interrupted_code
from bench.report import md_table
from bench.results import ResultsFolder

MODULE_COLUMNS = {"LinearModule": "Linear", "activation": "activation", "SoftMaxModule": "SoftMax",
                  "CrossEntropyModule": "CrossEntropy", "SoftMax → CrossEntropy": "loss path", "MLP": "MLP"}
SEARCH_DEPTH = 2  # how deep below a submission folder its modules.py may lie (a cloned repository)


def find_submissions(targets: list[str]) -> list[tuple[str, str]] | None:
    """(name, target) for every submission; None when the one target is one implementation.

    One folder without modules.py holding folders is a folder of submissions (hidden folders and
    __pycache__ left out); in a submission folder without modules.py of its own, the one
    modules.py at most SEARCH_DEPTH folders down is used."""
    if len(targets) == 1:
        root = Path(targets[0])
        if not root.is_dir() or (root / "modules.py").is_file() or (root / "__init__.py").is_file():
            return None
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
        # a link is checked where it points, never searched below: `root -> /` would grade whatever
        # modules.py lies two levels under / (another user's code, run as this submission)
        return [(p.name, str(p) if p.is_symlink() else _modules_folder(p)) for p in subs] or None
    names = [t.rstrip("/") or t for t in targets]
    return [(n, _modules_folder(Path(t)) if Path(t).is_dir() else t) for n, t in zip(names, targets)]


def check_class(subs: list[tuple[str, str]], seed: int, limits: Limits, jobs: int, out: str | None,
                reads: Sequence[str] = ()) -> int:
    """Check every submission, write the table; 0 when all pass, 1 when one does not, 130/143 on a signal.
    ``reads``: the folders given (the results may not go inside one)."""
    folder = ResultsFolder.create(out, "check", reads=reads)
    docs: dict[str, dict[str, Any]] = {}
    running, interrupted, start = Running(), False, time.monotonic()
    with folder, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(check_isolated, target, seed, limits, running): name for name, target in subs}
        try:
            for future in as_completed(futures):
                name = futures[future]
                docs[name] = future.result()
                print(f"[{len(docs)}/{len(subs)}] {name}: exit {docs[name]['exit']} "
                      f"({docs[name]['seconds']:.1f} s)", file=sys.stderr)
        except KeyboardInterrupt:
            interrupted = True
            running.stop()
            pool.shutdown(cancel_futures=True)
        seconds = time.monotonic() - start
        table = pd.DataFrame([table_row(name, docs.get(name)) for name, _ in subs])
        folder.measured = True  # the checks are done: a file that cannot be written costs that file only
        folder.write_csv("check.csv", table)
        shown = _markdown_safe(table)
        folder.write_text("report.md", _report(shown, seed, limits, jobs, seconds, interrupted))
    print(md_table(shown.drop(columns=["interface", "notes"])))
    print(f"{len(docs)} of {len(subs)} submissions checked in {seconds:.0f} s ({jobs} at a time); "
          f"results: {folder.shown}")
    for line in folder.unwritten_lines():
        print(line, file=sys.stderr)
    if interrupted:
        return interrupted_code()
    return 0 if all(d["exit"] == 0 for d in docs.values()) and not folder.unwritten else EXIT_FAILED


def table_row(name: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    """One submission's row: its interface, pass or FAIL per module, what went wrong, its exit status."""
    if doc is None:
        return {"submission": name, **{c: "" for c in ("interface", *MODULE_COLUMNS.values())},
                "exit status": "", "diagnosis": "not checked (interrupted)", "notes": "", "seconds": None}
    modules = dict(doc.get("modules", {}))
    act = [f"{modules.pop(m)} ({m[:-6]})" for m in ("ELUModule", "ReLUModule") if m in modules]
    modules["activation"] = ", ".join(act)
    return {"submission": name, "interface": doc.get("interface", ""),
            **{col: modules.get(m, "—") or "—" for m, col in MODULE_COLUMNS.items()},
            "exit status": doc["exit"],
            "diagnosis": " / ".join(doc.get("diagnoses") or [doc.get("error", "")]) if doc["exit"] else "",
            "notes": " / ".join(doc.get("notes", [])), "seconds": round(doc.get("seconds", 0.0), 1)}


def _markdown_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table's text cells with a backslash and a backtick escaped, so that a submission's name
    renders as written (``md_table`` keeps every cell on its row: control characters, pipes)."""
    def safe(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        return v.replace("\\", "\\\\").replace("`", "\\`")
    return table.apply(lambda column: column.map(safe))


def _modules_folder(folder: Path) -> str:
    """``folder``, or the folder of the one modules.py at most SEARCH_DEPTH levels below it."""
    if (folder / "modules.py").is_file():
        return str(folder)
    level, found = [folder], []
    for _ in range(SEARCH_DEPTH):
        level = [d for p in level for d in sorted(p.iterdir()) if d.is_dir() and not d.is_symlink()
                 and not d.name.startswith((".", "__"))] if level else []
        found += [d for d in level if (d / "modules.py").is_file()]
    return str(found[0]) if len(found) == 1 else str(folder)


def _report(table: pd.DataFrame, seed: int, limits: Limits, jobs: int, seconds: float,
            interrupted: bool) -> str:
    passed = int((table["exit status"] == 0).sum())
    lines = ["# Course implementations: class-wide check", ""]
    if interrupted:
        lines += ["**Interrupted: the rows not checked say so.**", ""]
    lines += [f"{len(table)} submissions, {passed} passed every check; seed {seed}; each checked by "
              f"`python -m bench.check` in a process of its own, limited to {limits.timeout:g} s and "
              f"{limits.memory_bytes / 2**20:.0f} MiB beyond the checker's own memory, {jobs} at a time; "
              f"{seconds:.0f} s in all.", "",
              md_table(table), "",
              "Columns: the interface detected from the code; per module `pass` or `FAIL` (`—`: not "
              "checked); the exit status `python -m bench.check SUBMISSION` gives alone (0 every check "
              "passes, 1 a check fails or the code ran out of time or memory or ended its process, 2 the "
              "code does not load or lacks the course interface); the diagnosis of what failed; notes "
              "(an assumption, a numerical stabiliser within its bound); seconds taken.", ""]
    return "\n".join(lines)
