"""Load a course-style implementation from a path or an importable name.

The course interface: ``modules.py`` with ``LinearModule``, ``SoftMaxModule``,
``CrossEntropyModule`` and an activation, ``ELUModule`` or (the ReLU years)
``ReLUModule``, and optionally ``mlp_numpy.py`` beside it with ``MLP``.
:func:`load_course` accepts

* a folder holding ``modules.py`` (and maybe ``mlp_numpy.py``, or ``mlp.py``);
* a ``.py`` file: the modules file (an ``mlp_numpy.py`` file stands for its folder);
* an importable module or package name (``impl_numpy``): the classes are
  looked up in it or in its ``modules`` submodule, the MLP in it or in its
  ``mlp`` / ``mlp_numpy`` submodule.

A path that exists is loaded from that path, even when a module of the same
name could be imported (``code``, ``test``); a folder is imported by name only
when it is a package and importing that name gives this very folder.

Loading executes the user's code. Files are loaded under unique module names
(two folders never share a ``modules`` entry in ``sys.modules``); while they
load, their folder is first on ``sys.path``, a module of the same name as a
file beside them that was imported before (a helper ``utils.py``, say) is set
aside so that their own is found, ``import modules`` / ``from modules import
...`` give the modules file just loaded, and no bytecode is written next to
them. Everything that goes wrong is a :class:`bench.errors.UserError` with one
line, never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bench.errors import UserError

CLASSES = ("LinearModule", "SoftMaxModule", "CrossEntropyModule")
ACTIVATIONS = ("ELUModule", "ReLUModule")  # at least one
MLP_FILES = ("mlp_numpy.py", "mlp.py")
MLP_SUBMODULES = ("mlp", "mlp_numpy")
MAX_SOURCE_BYTES = 10 * 2**20  # a course modules.py is a few kB
INTERFACE = ("expected the course interface: LinearModule, ELUModule or ReLUModule, SoftMaxModule, "
             "CrossEntropyModule (and optionally MLP in mlp_numpy.py)")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass
class CourseImpl:
    """A loaded implementation: the four module classes, and the MLP class when there is one."""

    source: str                   # what the user passed
    modules: ModuleType           # the module holding the classes
    mlp_module: ModuleType | None # the module holding MLP
    LinearModule: type
    SoftMaxModule: type
    CrossEntropyModule: type
    ELUModule: type | None        # one of the two activations at least
    ReLUModule: type | None
    MLP: type | None
    note: str = ""                # e.g. why no MLP was found

    def describe(self) -> str:
        """One line: where the classes came from."""
        found = [c for c in (*CLASSES, *ACTIVATIONS) if getattr(self, c) is not None]
        text = f"{', '.join(found)} from {_where(self.modules)}"
        if self.MLP is not None:
            text += f"; MLP from {_where(self.mlp_module)}"
        else:
            text += f"; no MLP{f' ({self.note})' if self.note else ''}"
        return text


def load_course(path_or_module: str | os.PathLike) -> CourseImpl:
    """Load the implementation at ``path_or_module`` (folder, ``.py`` file or importable name).

    Raises :class:`UserError` (one line) when it does not exist, does not load
    (syntax or import error: the file, the line and the error) or lacks one of
    the classes.
    """
    target = os.fspath(path_or_module)
    path = Path(target)
    if _is_package_named(target, path):
        return _load_by_name(target)
    if path.is_dir():
        modules_file = path / "modules.py"
        if not modules_file.is_file():
            what = "is not a regular file" if os.path.lexists(modules_file) else "is missing"
            raise UserError(f"{modules_file} {what}; {INTERFACE}")
        return _load_files(target, modules_file)
    if path.is_file():
        if path.suffix != ".py":
            raise UserError(f"{target} is not a Python file; {INTERFACE}")
        if path.name in MLP_FILES and (path.parent / "modules.py").is_file():
            return _load_files(target, path.parent / "modules.py")
        return _load_files(target, path)
    if os.path.lexists(target):  # a FIFO, a device, a link to one or to nothing
        raise UserError(f"{target} is not a regular file or folder; {INTERFACE}")
    if not names_nothing(target):
        return _load_by_name(target)
    raise UserError(f"no such file or folder: {target}")


def names_nothing(target: str) -> bool:
    """Whether ``target`` is no file or folder here and cannot be a module name either."""
    return not os.path.lexists(target) and not (_DOTTED.match(target) and not target.endswith(".py"))


# ---------------------------------------------------------------- from files


def _load_files(source: str, modules_file: Path) -> CourseImpl:
    if modules_file.stat().st_size > MAX_SOURCE_BYTES:
        raise UserError(f"{_shown(modules_file)} is {modules_file.stat().st_size / 2**20:.0f} MiB, not a "
                        f"course modules file (allowed: up to {MAX_SOURCE_BYTES // 2**20} MiB of Python)")
    folder = modules_file.resolve().parent
    tag = hashlib.sha1(os.fsencode(modules_file.resolve())).hexdigest()[:10]  # any bytes a path holds
    with _user_folder_on_path(folder):
        mods = _exec_file(modules_file, f"_course_{tag}_{modules_file.stem}")
        classes = _find_classes(mods, _shown(modules_file))
        mlp_module, mlp_cls, note = None, None, f"no {' or '.join(MLP_FILES)} beside it"
        mlp_file = next((folder / n for n in MLP_FILES
                         if (folder / n).is_file() and folder / n != modules_file.resolve()), None)
        if mlp_file is not None:
            with _alias("modules", mods):
                mlp_module = _exec_file(mlp_file, f"_course_{tag}_{mlp_file.stem}")
            mlp_cls = _find_mlp(mlp_module)
            note = "" if mlp_cls else f"{_shown(mlp_file)} has no class MLP"
            mlp_module = mlp_module if mlp_cls else None
    return CourseImpl(source, mods, mlp_module, *classes, MLP=mlp_cls, note=note)


def _exec_file(file: Path, name: str) -> ModuleType:
    """Execute ``file`` as a fresh module registered as ``name``; errors become one line."""
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - the user's module may raise anything at import
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UserError(_load_error(exc, file)) from None
    return module


@contextmanager
def _user_folder_on_path(folder: Path):
    """The user's folder first on sys.path, its own files shadowing modules of the same name imported
    before; the sibling modules it imports are forgotten afterwards and the others put back."""
    siblings = {p.stem if p.suffix == ".py" else p.name for p in folder.iterdir()
                if p.suffix == ".py" or (p / "__init__.py").is_file()}
    set_aside = {n: sys.modules.pop(n) for n in siblings if n in sys.modules}
    before = set(sys.modules)
    entry, bytecode = str(folder), sys.dont_write_bytecode
    sys.path.insert(0, entry)
    sys.dont_write_bytecode = True  # no __pycache__ left in the user's folder
    try:
        yield
    finally:
        sys.dont_write_bytecode = bytecode
        if entry in sys.path:
            sys.path.remove(entry)
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if not name.startswith("_course_") and file and Path(file).resolve().parent == folder:
                del sys.modules[name]
        sys.modules.update(set_aside)


@contextmanager
def _alias(name: str, module: ModuleType):
    """``sys.modules[name]`` is ``module`` for the duration (restored afterwards)."""
    missing = object()
    old = sys.modules.get(name, missing)
    sys.modules[name] = module
    try:
        yield
    finally:
        if old is missing:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = old


# ---------------------------------------------------------------- by name


def _is_package_named(target: str, path: Path) -> bool:
    """Whether ``target`` is to be imported by name: a bare dotted name that is no path here, or a
    package folder here that importing the name gives (``impl_numpy`` from the repository root).
    ``code`` or ``test`` naming a folder of course files loads the folder, not the standard library."""
    if not _DOTTED.match(target) or target.endswith(".py"):
        return False
    if path.exists() and not (path / "__init__.py").is_file():
        return False
    try:
        spec = importlib.util.find_spec(target)
    except Exception:  # noqa: BLE001 - finding a submodule imports (runs) its parent
        return False
    # a folder without __init__.py is a namespace package (origin None): load it as files
    if spec is None or spec.origin in (None, "namespace"):
        return False
    return not path.exists() or Path(spec.origin).resolve() == (path / "__init__.py").resolve()


def _load_by_name(name: str) -> CourseImpl:
    pkg = _import(name)
    holder = pkg
    if not all(isinstance(getattr(pkg, c, None), type) for c in CLASSES) and hasattr(pkg, "__path__"):
        sub = _import(f"{name}.modules", optional=True)
        holder = sub if sub is not None else pkg
    classes = _find_classes(holder, name)
    mlp_cls = _find_mlp(pkg)
    if mlp_cls is None and hasattr(pkg, "__path__"):
        for sub_name in MLP_SUBMODULES:
            with _alias("modules", holder):
                sub = _import(f"{name}.{sub_name}", optional=True)
            if sub is not None and _find_mlp(sub) is not None:
                mlp_cls = _find_mlp(sub)
                break
    mlp_module = sys.modules.get(mlp_cls.__module__) if mlp_cls is not None else None
    return CourseImpl(name, holder, mlp_module, *classes, MLP=mlp_cls,
                      note="" if mlp_cls else f"none in {name}")


def _import(name: str, optional: bool = False) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            if optional:
                return None
            raise UserError(f"{name} is neither an existing file or folder nor an importable module; "
                            f"{INTERFACE}") from None
        raise UserError(_load_error(exc, None)) from None
    except BaseException as exc:  # noqa: BLE001 - the user's package may raise anything at import
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UserError(_load_error(exc, None)) from None


# ---------------------------------------------------------------- the interface


def _find_classes(module: ModuleType, shown: str) -> tuple[type | None, ...]:
    """The three classes, then ELUModule and ReLUModule (None when absent; one of them is needed)."""
    found = [getattr(module, c, None) for c in (*CLASSES, *ACTIVATIONS)]
    found = [v if isinstance(v, type) else None for v in found]
    missing = [c for c, v in zip(CLASSES, found) if v is None]
    if not any(found[len(CLASSES):]):
        missing.append(" or ".join(ACTIVATIONS))
    if missing:
        raise UserError(f"no {', '.join(missing)} in {shown}; {INTERFACE}")
    for cls in filter(None, found):
        lacking = [m for m in ("forward", "backward") if not callable(getattr(cls, m, None))]
        if lacking:
            raise UserError(f"{cls.__name__} in {shown} has no {' or '.join(lacking)} method; {INTERFACE}")
    return tuple(found)


def _find_mlp(module: ModuleType) -> type | None:
    cls = getattr(module, "MLP", None)
    return cls if isinstance(cls, type) else None


# ---------------------------------------------------------------- messages


def _load_error(exc: BaseException, file: Path | None) -> str:
    """``FILE, line N: Type: message`` for an exception raised while loading user code."""
    what = f"{type(exc).__name__}: {_one_line(exc)}"
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{_shown(Path(exc.filename))}, line {exc.lineno}"
        return f"{where}: {type(exc).__name__}: {_one_line(exc.msg)}"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith("<") and "importlib" not in f.filename
            and (file is None or Path(f.filename).resolve().parent == file.resolve().parent)]
    if user:
        last = user[-1]
        return f"{_shown(Path(last.filename))}, line {last.lineno}: {what}"
    # not one line of the user's code ran: the file itself is not Python (random bytes, say)
    return f"{_shown(file) if file else 'import'}: {what}"


def _one_line(value: object) -> str:
    text = " ".join("".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(value)).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _shown(path: Path) -> str:
    """The path relative to the current folder when it lies below it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _where(module: ModuleType | None) -> str:
    file = getattr(module, "__file__", None)
    return _shown(Path(file)) if file else getattr(module, "__name__", "?")
