"""The one runner: every command's shell, so that a command declares only what it measures.

A command is a :class:`Command`: its name and title, its preset, the hooks it
needs, and ``measure(ctx)``, which returns a :class:`Result` (tables, figures,
report sections, terminal lines, problems). Its settings are the Config
fields it reads and its own settings class (``bench.config``). :func:`main`
does everything else, in this order:

1. parse the command line (generated from the dataclasses, ``bench.cli``):
   defaults < preset < ``--config`` TOML < flags, every value validated;
2. resolve the backends (an unknown or unavailable one is one line, exit 2),
   estimate the memory a run needs, build the backends (their options
   checked), resolve the thread count, and run the command's ``check`` (its
   own refusals);
3. only then claim the results folder (``bench.results``), so that a refused
   command leaves nothing behind;
4. under the thread limit, call ``measure(ctx)``: ``ctx.data(seed)`` loads the
   data (the first load writes ``env.json``), and ``ctx.measuring()`` is the
   block a signal ends, after which the command returns what it has;
5. with signals held, write the tables, ``env.json`` and ``report.md`` (title,
   interrupted note, setup, settings, sections, figures, files; or the
   command's own name for it), then draw the figures, which a signal may end
   (a full disk costs a figure, never a table or the report), then print
   the command's lines and ``results: DIR``;
6. exit 0; 1 for a problem (no run finished, a check failed); 2 for a usage
   error (``bench.errors.run_cli``); 130 after Ctrl-C; 143 after SIGTERM or SIGHUP.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import provenance  # before any backend is imported: the callables it watches are the originals
from bench.cli import build_parser, prog_name, settings_from_args
from bench.config import COMMAND_FIELDS, PRESETS, SETTINGS, Config, check_caps
from bench.errors import (EXIT_FAILED, UserError, hold_signals, interrupted_code, interruption, printable,
                          release_signals, run_cli, shorten, signal_came, stop_if_signalled)
from bench.results import ResultsFolder
from bench.threads import default_threads, limit_threads, resolve_threads


@dataclass
class Result:
    """What ``measure(ctx)`` found; every piece optional."""

    tables: dict[str, Any] = field(default_factory=dict)   # file name -> DataFrame, written in order
    figures: dict[str, tuple[str, Callable[[], Any]]] = field(default_factory=dict)  # PNG -> (title, draw)
    setup: list[str] = field(default_factory=list)         # the report's setup lines after the machine's
    sections: list[tuple[str | None, list[str]]] = field(default_factory=list)  # (heading, lines)
    printed: list[str] = field(default_factory=list)       # terminal lines, before "results:"
    notes: list[str] = field(default_factory=list)         # stderr lines
    problems: list[str] = field(default_factory=list)      # stderr lines that make the exit status 1
    env: dict[str, Any] = field(default_factory=dict)      # added to env.json
    code: int | None = None                                # an exit status of its own (bench.check)
    rows: Any = None  # a table written elsewhere (the sweep's store) whose `replaced` column counts too


@dataclass
class Command:
    """A command's declaration: what :func:`main` needs beyond its settings (``bench.config``)."""

    name: str                                   # python -m bench.<name>; its settings' key
    title: str                                  # the report's title
    measure: Callable[["Context"], Result]
    about: str = ""                             # --help's description
    preset: Callable[[], dict[str, Any]] | None = None  # default: bench.config.PRESETS[name]
    configure: Callable[["Context"], None] | None = None  # sets Config values before they are validated
    check: Callable[["Context"], None] | None = None      # its refusals, before the folder is claimed
    backends: str = "all"        # resolve --backends: "all" must run here, "available" skips, "none"
    folder: bool = True          # claims a results folder (bench.results)
    loads_data: bool = True      # measure() calls ctx.data(), whose first load writes env.json
    resume: str | None = None    # a folder holding this file is resumed (the sweep)
    label: Callable[["Context"], str] | None = None  # results/<timestamp>_<label>
    report: str = "report.md"    # the report's file name
    actions: dict[str, tuple[str, Callable[[], None]]] = field(default_factory=dict)  # flag: (help, do)


@dataclass
class Context:
    """One run of a command: its settings, backends, threads, folder and data."""

    command: Command
    config: Config | None
    settings: Any
    given: set[str]                  # the fields set by a flag or the TOML file
    out: str | None = None
    quiet: bool = False
    chosen: list = field(default_factory=list)    # bench.backends.Chosen
    skipped: list = field(default_factory=list)   # (name, why) of backends that cannot run here
    backends: list = field(default_factory=list)  # built (None: its constructor failed)
    threads: int = 1
    folder: ResultsFolder | None = None
    env: dict[str, Any] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)  # closed at the end: executors, clusters
    work: Any = None                 # what the command's check prepared for its measure
    _loaded: dict = field(default_factory=dict)

    def say(self, text: str) -> None:
        """A progress line on stdout, unless ``--quiet``."""
        if not self.quiet:
            print(text, flush=True)

    def measuring(self):
        """The block a signal ends (``bench.results.ResultsFolder.measuring``)."""
        return self.folder.measuring()

    @property
    def interrupted(self) -> bool:
        return self.folder is not None and self.folder.interrupted

    def data(self, seed: int):
        """The splits for ``seed`` (one load kept); the first load writes env.json with its fingerprint."""
        from bench.datasource import load_for_config

        if seed not in self._loaded:
            self._loaded.clear()  # drop the old copy before loading the next
            self._loaded[seed] = load_for_config(self.config, seed, progress=not self.quiet)
        if not self.env:
            self.write_env(self._loaded[seed].info())
        return self._loaded[seed]

    def checkpoint(self, result: "Result") -> None:
        """``result``'s tables, env.json and report.md now, without its figures: a process that later
        ends without a word (a backend calling ``os._exit``) leaves them whole."""
        write(self, result, figures=False)

    def settings_dict(self) -> dict[str, Any]:
        """The command's own fields: those of Config it reads, then its settings."""
        own = dataclasses.asdict(self.settings) if self.settings is not None else {}
        return {**{k: getattr(self.config, k) for k in COMMAND_FIELDS.get(self.command.name, ())}, **own}

    def write_env(self, data: dict[str, Any] | None = None) -> None:
        extra = {"config": self.settings_dict(), **({"data": data} if data else {})}
        if self.chosen or self.skipped:
            extra.update(backends=[c.name for c in self.chosen], skipped=self.skipped)
        self.env = self.folder.write_env(self.threads, extra)


def parse(command: Command, argv: Sequence[str] | None = None) -> Context | None:
    """The command line as a Context, every value validated; None when an action flag ran instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if command.name in SETTINGS and "--" in argv and any(
            f.metadata.get("rest") for f in dataclasses.fields(SETTINGS[command.name])):
        argv, rest = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    preset = command.preset() if command.preset else PRESETS.get(command.name, {})
    args = build_parser(command.name, command.about, preset, folder=command.folder, prog=prog(command),
                        actions={k: h for k, (h, _) in command.actions.items()}).parse_args(argv)
    for name, (_, do) in command.actions.items():
        if getattr(args, name):
            do()
            return None
    values, own, given = settings_from_args(args, command.name, preset, rest)
    settings = SETTINGS[command.name](**own) if command.name in SETTINGS else None
    if settings is not None:  # the Config's caps are checked by its validate()
        check_caps(settings)
        settings.validate()
    config = Config(**values) if COMMAND_FIELDS.get(command.name) else None
    ctx = Context(command, config, settings, given, getattr(args, "out", None), getattr(args, "quiet", False))
    if command.configure:
        command.configure(ctx)
    if ctx.config is not None:
        ctx.config.validate()
    return ctx


def prepare(ctx: Context) -> None:
    """Backends resolved and built, memory estimated, threads resolved, the command's own refusals."""
    from bench.backends import resolve
    from bench.memory import check_memory, data_bytes

    c, fields = ctx.config, COMMAND_FIELDS.get(ctx.command.name, ())
    if "backends" in fields and ctx.command.backends != "none":
        ctx.chosen, ctx.skipped = resolve(c.backends, skip_unavailable=ctx.command.backends == "available")
        apart = sum(x.apart for x in ctx.chosen)  # each holds a copy of the data in its own process
        check_memory(c, sum(x.device == "cpu" or x.apart for x in ctx.chosen), extra=apart * data_bytes(c))
        ctx.backends = [x.build(c) for x in ctx.chosen]  # option errors before anything is created
    ctx.threads = resolve_threads(c.threads) if "threads" in fields else default_threads()
    if ctx.command.check:
        ctx.command.check(ctx)


def main(command: Command, argv: Sequence[str] | None = None) -> int:
    """Run ``command`` with ``argv``; its exit status (a UserError propagates, for ``run_cli``)."""
    ctx = parse(command, argv)
    if ctx is None:
        return 0
    try:
        os.getcwd()  # relative paths (--out, --data-dir) are resolved against it
    except FileNotFoundError:
        raise UserError("the working directory no longer exists (allowed: run from an existing "
                        "folder)") from None
    with ctx.stack:
        prepare(ctx)
        if command.folder:
            label = command.label(ctx) if command.label else command.name
            ctx.folder = ctx.stack.enter_context(ResultsFolder.create(
                ctx.out, label, resume=command.resume is not None, marker=command.resume))
            if not command.loads_data:
                ctx.write_env()
        with limit_threads(ctx.threads):
            try:
                stop_if_signalled()  # one that came while the modules above imported
                result = command.measure(ctx)
            except KeyboardInterrupt:
                if ctx.folder is None:
                    raise
                ctx.folder.interrupted, result = True, Result()
            except BaseException:  # refused where only measuring could tell, or out of memory: when
                if ctx.folder is not None:  # nothing was measured, the folder as it was found
                    ctx.folder.discard_unmeasured()
                raise
        if ctx.folder is not None:
            hold_signals()  # until the folder is closed: the results are written whole
            ctx.folder.interrupted |= signal_came()  # also one whose KeyboardInterrupt was swallowed
            if ctx.env:
                write(ctx, result)
            result.problems += ctx.folder.unwritten_lines()
    return finish(ctx, result)


def write(ctx: Context, result: Result, figures: bool = True) -> None:
    """Every table, env.json and report.md of ``result``, then its figures (unless ``figures`` is False):
    a full disk costs a figure, never the report. Drawing may take long, so a signal is not held for it:
    it ends the drawing, and report.md is rewritten with the figures drawn."""
    folder = ctx.folder
    for name, table in result.tables.items():
        folder.write_csv(name, table)
    ctx.env.update(result.env)
    gone = set(provenance.replaced())  # and those a backend replaced in its own process (isolated):
    for table in [*result.tables.values(), result.rows]:  # named in any table's `replaced` column
        if table is not None and "replaced" in table:
            gone |= {n for v in table["replaced"].dropna() for n in str(v).split(",") if n}
    if gone:  # a backend's import or constructor replaced them: the runs say so too
        ctx.env["replaced_callables"] = sorted(gone)
    folder.write_json(folder.env_name, ctx.env)
    folder.write_text(ctx.command.report, report(ctx, result, {}))
    if not (figures and result.figures):
        return
    drawn = {}
    try:
        release_signals()  # one that came while the tables were written ends the drawing now
        for name, (title, draw) in result.figures.items():
            try:
                figure = draw()
            except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn costs that figure
                print(f"warning: could not draw {name}: {shorten(f'{type(exc).__name__}: {exc}', 200)}",
                      file=sys.stderr)
                continue
            if folder.save_figure(name, figure, bbox_inches="tight") is not None:
                drawn[name] = title
    except KeyboardInterrupt:
        folder.interrupted = True
    hold_signals()
    folder.write_text(ctx.command.report, report(ctx, result, drawn))


def report(ctx: Context, result: Result, figures: dict[str, str]) -> str:
    """report.md: the title, the interrupted note, the setup, the sections, the figures, the files."""
    from bench.report import setup_lines

    settings = ", ".join(f"{k}={v}" for k, v in ctx.settings_dict().items())
    gone = ctx.env.get("replaced_callables")
    warn = [f"**Replaced while this command ran (by a backend's code): {', '.join(gone)}. The runs it "
            "touched are flagged in `replaced` (runs.csv) and are not to be trusted.**", ""] if gone else []
    lines = [f"# {ctx.command.title}", "", *ctx.folder.interrupted_note(), *warn, "## Setup", "",
             *setup_lines(ctx.env, [*result.setup, f"- Settings: {settings}"]), ""]
    for heading, body in result.sections:
        lines += [*([f"## {heading}", ""] if heading else []), *body, ""]
    if figures:
        lines += ["## Figures", ""]
        for name, title in figures.items():
            lines += [f"### {title}", "", f"![{title}]({name})", ""]
    files = [*(f for f in ctx.folder.written if f != ctx.command.report), ctx.command.report]
    missing = [f"**Not written: `{name}` ({why}).**" for name, why in ctx.folder.unwritten.items()]
    return "\n".join([*lines, *missing, "Files: " + ", ".join(f"`{f}`" for f in files) + ".", ""])


def finish(ctx: Context, result: Result) -> int:
    """The terminal lines, ``results: DIR``, and the exit status."""
    for line in result.printed:
        print(line)
    for line in result.notes:
        print(line, file=sys.stderr)
    if ctx.env.get("replaced_callables"):
        print(f"warning: a backend's code replaced {', '.join(ctx.env['replaced_callables'])}: the runs it "
              "touched are flagged (runs.csv: replaced) and not to be trusted", file=sys.stderr)
    if ctx.folder is not None and ctx.folder.path.exists():  # a folder left empty is gone
        if ctx.interrupted:
            print(f"interrupted: partial results in {printable(str(ctx.folder.shown))}", file=sys.stderr)
        print(f"results: {printable(str(ctx.folder.shown))}")  # a newline or escape in it, escaped
    elif ctx.interrupted:
        print(f"{prog(ctx.command)}: interrupted ({interruption()}) before anything was measured",
              file=sys.stderr)
    for line in result.problems:
        print(line, file=sys.stderr)
    if ctx.interrupted:
        return interrupted_code()
    if result.code is not None:
        return result.code
    return EXIT_FAILED if result.problems else 0


def prog(command: Command) -> str:
    """``mlpbench-<x>`` when run as that console script, else ``python -m bench.<name>``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("mlpbench-") else prog_name(command.name)


def cli(command: Command) -> None:
    """The console entry point: :func:`main` inside ``bench.errors.run_cli``."""
    run_cli(lambda argv: main(command, argv), prog=prog(command))


def entry_points(command: Command) -> tuple[Callable[..., int], Callable[[], None]]:
    """A command module's ``main(argv=None) -> exit status`` and its console entry ``cli()``."""
    return (lambda argv=None: main(command, argv)), (lambda: cli(command))
