"""Code nobody here wrote (course implementations, plugins) runs in a process of its own.

A course backend or a plugin is probed, built and trained in a child Python
process started fresh (not forked: a fork of a harness that ran torch's
OpenMP pool hangs), and :class:`Isolated` stands in for it in the harness:
every call of the backend interface (``bench.backends.api``) is a message to
the child, so the harness's one loop, clocks and records run unchanged. What
the child's code does stays in the child: ``os._exit``, a crash, a hang, a
replaced ``np.float32`` or ``ACTIVATIONS`` table, a changed directory or an
alarm it cancels cost that backend's run (``failed``, with how the process
ended), never the command or the other backends' numbers.

Kept equal to a backend run in-process, so that the clocks time the same
work: ``train_batch`` and ``gather`` are sent without waiting for an answer
(as a GPU queues work) and the child runs them in order; ``synchronize`` waits
for all of them, and a step's error comes back at the next call that waits.
An epoch's row order is sent once (``device_indices``) and each step names
only its slice of it. The data are streamed once, array by array, with no
pickled copy.

The child answers in JSON with its arrays in an ``.npz`` (``allow_pickle``
off): nothing it sends can run code here. It ignores the signals that end a
command (the harness handles them and then ends the child), dies with the
harness (``PR_SET_PDEATHSIG``), and writes its standard streams to
``/dev/null``. A call that does not return within the stage's limit is the
harness's own :class:`~bench.backends.StageTimeout`; the child is then killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import weakref
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from bench.errors import UserError, shorten
from bench.reaper import become_subreaper, how_it_ended, kill_orphans

REPLY_BYTES = 2**31 - 1  # the largest answer read back: weights before the data says their size
SMALL_BYTES = 2**20      # of any answer; the weights' (export_state) and the losses' (pop) by their size
START_S = 60.0           # seconds a child may take to start and import what it needs
MEMORY_HEADROOM = 2 * 2**30  # address space a backend's process may add after loading the data (or 2x the data)
ASYNC = ("train_batch", "gather")  # sent without waiting; their errors come back at the next wait
CALLS = {"init_model", "synchronize", "evaluate", "import_state", "gemm_seconds",
         "peak_memory_bytes"}  # each waits for its answer (the others have methods of their own)
SERVED = CALLS | {"device_indices", "pop_step_records", "export_state", "describe"}
IGNORED = ("SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGPIPE")  # by the waiter (SIGTERM: it ends)


class BackendProcessError(RuntimeError):
    """The backend's process ended or sent what no backend can."""


class RemoteError(Exception):
    """An exception raised in the backend's process; its class is named after the child's."""


def is_isolated(impl: str, extra: str | None) -> bool:
    """Whether backends of ``impl`` run in a process of their own: course code and plugins."""
    from bench.backends import PLUGIN

    return impl == "course" or extra == PLUGIN


def probe(impl: str, module: str, cls: str, device: str, timeout: float) -> tuple[bool, str]:
    """(whether ``impl:device`` can run here, why), asked in a child that imports ``module`` and calls
    its ``available(device)``, both within ``timeout`` seconds."""
    try:
        child = _Child(f"{impl}:{device}", timeout)
    except BackendProcessError as exc:
        return False, str(exc)
    try:
        return tuple(child.call(("probe", impl, module, cls, device)))
    except (BackendProcessError, RemoteError) as exc:
        return False, shorten(str(exc), 300)
    finally:
        child.close()


class Isolated:
    """The backend ``module.cls(config, device)``, built and run in a child process."""

    def __init__(self, impl: str, module: str, cls: str, config: Any, device: str):
        self.impl, self.device = impl, device
        self._build = ("build", module, cls, config, device)
        self._start()

    def _start(self) -> None:
        from bench.backends import UNTRUSTED_STAGE_S

        self._child = _Child(f"{self.impl}:{self.device}", UNTRUSTED_STAGE_S)  # each answer, whoever waits
        try:
            info = self._child.call(self._build)
        except BaseException:
            self._child.close()
            raise
        self._options: dict[str, Any] = plain_options(info["describe"])
        self._steps, self._limit = 0, REPLY_BYTES  # steps sent since the last pop; the weights' bound
        self._shapes: dict[str, tuple[int, ...]] | None = None  # the weights' names and shapes, once known
        if info["gather"]:
            self.gather = lambda idx: self._child.send(("gather", idx.start, idx.stop))

    def load_data(self, data: Any) -> None:
        """The first call of every run: a process that ended in an earlier run (another seed's) is
        started and built anew."""
        from bench.threads import current_threads

        if not self._child.alive:
            self._start()
        self._child.call(("threads", current_threads()))
        arrays = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)
                  if isinstance(getattr(data, f.name), np.ndarray)}
        meta = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name not in arrays}
        self._child.send(("load_data", type(data), meta, {k: (a.shape, a.dtype.str) for k, a in arrays.items()}))
        for a in arrays.values():
            self._child.send_array(a)
        self._child.wait()
        from bench.memory import bytes_needed

        from impl_common.arch import layer_widths

        config = self._build[3]
        self._limit = SMALL_BYTES + 2 * bytes_needed(config, data.n_features, data.n_classes)
        widths = layer_widths(data.n_features, config.hidden_dims, data.n_classes)
        self._shapes = None if config.residual else {  # the shared names and shapes (api.py)
            **{f"linears.{i}.weight": (b, a) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))},
            **{f"linears.{i}.bias": (b,) for i, b in enumerate(widths[1:])}}

    def device_indices(self, order: np.ndarray) -> "_Order":
        self._child.call(("call", "device_indices", (np.asarray(order),)))
        return _Order(len(order))

    def train_batch(self, idx: slice) -> None:
        self._steps += 1
        self._child.send(("train_batch", idx.start, idx.stop))

    def pop_step_records(self) -> Any:
        steps, self._steps = self._steps, 0
        return self._child.call(("call", "pop_step_records", ()), SMALL_BYTES + 16 * steps)

    def export_state(self) -> dict[str, np.ndarray]:
        """Its weights, checked here: another backend may start from them (lock-step)."""
        state = self._child.call(("call", "export_state", ()), self._limit)
        bad = (not isinstance(state, dict) or not state
               or any(not isinstance(v, np.ndarray) or v.dtype.kind != "f" or not np.isfinite(v).all()
                      for v in state.values()))
        if bad:
            raise RemoteError(f"export_state() returned {shorten(repr(state), 80)} (allowed: a dict of "
                              "real floating-point arrays, every value finite)")
        if self._shapes is not None:
            from bench.backends.api import check_state

            check_state(self._shapes, state)
        return state

    def describe(self) -> dict[str, Any]:
        """Its options, made plain (see :func:`plain_options`); the last known ones when it cannot say."""
        if self._child.alive:
            with contextlib.suppress(BackendProcessError, RemoteError):
                self._options = plain_options(self._child.call(("call", "describe", ())))
        return self._options

    def replaced(self) -> list[str]:
        """The NumPy callables the child's code replaced (``bench.provenance``) in its own process;
        "unknown" when it cannot say (it ended, or did not answer)."""
        try:
            return [str(n)[:200] for n in self._child.call(("replaced",))][:50]
        except (BackendProcessError, RemoteError):
            return ["unknown (the backend's process did not answer)"]

    def __getattr__(self, name: str) -> Any:
        if name not in CALLS:
            raise AttributeError(name)
        return lambda *args: self._child.call(("call", name, args))


MAX_OPTIONS = 50  # entries of a describe() kept, each value at most 200 characters


def plain_options(got: Any) -> dict[str, Any]:
    """What code nobody here wrote says of itself, fit for env.json and the report: a dict of at most
    MAX_OPTIONS entries whose values are numbers, booleans, None or text of at most 200 characters."""
    if not isinstance(got, dict):
        return {"describe": shorten(repr(got), 200)}

    def plain(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int)) or isinstance(v, float) and math.isfinite(v):
            return v
        return shorten(str(v), 200)  # NaN and inf too: env.json stays strict JSON

    return {shorten(str(k), 60): plain(v) for k, v in list(got.items())[:MAX_OPTIONS]}


@dataclasses.dataclass(frozen=True)
class _Order:
    """An epoch's row order held by the child: slicing it names rows, as a device array would."""

    n: int

    def __getitem__(self, s: slice) -> slice:
        return slice(*s.indices(self.n)[:2])

    def __len__(self) -> int:
        return self.n


class _Child:
    """A child process serving one backend, and the two pipes to it."""

    def __init__(self, who: str, timeout: float | None):
        self.who, self.op = who, "start"
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        # sys.path goes through the pipe (however long), before bench can be imported there
        code = (f"import sys; from multiprocessing.connection import Connection; "  # kept: it owns the fd
                f"first = Connection({from_parent}, writable=False); sys.path[:0] = first.recv(); "
                f"from bench.backends.isolated import wait_and_serve; wait_and_serve({from_parent}, {to_parent})")
        with open(os.devnull, "r+b") as null:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=null, stdout=null, stderr=null,
                                         pass_fds=(from_parent, to_parent), start_new_session=True)
        os.close(from_parent)
        os.close(to_parent)
        self.out, self.inbox = Connection(to_child, readable=False), Connection(from_child, writable=False)
        self._server: list[int] = []
        self._finalizer = weakref.finalize(self, _kill, self.proc, self._server, self.out, self.inbox)
        self.alive, self.timeout = True, START_S
        self._guard("start", lambda: self.out.send([p or os.getcwd() for p in sys.path]))
        self._server.append(int(self.wait()))  # its hello, the server's pid: started, the harness imported
        self.timeout = timeout  # seconds every answer may take (None: the caller's deadline)

    def send(self, message: tuple) -> None:
        self._guard(message[1] if message[0] == "call" else message[0], lambda: self.out.send(message))

    def send_array(self, a: np.ndarray) -> None:
        data = np.ascontiguousarray(a)
        self._guard("load_data", lambda: self.out.send_bytes(memoryview(data).cast("B")) if data.nbytes
                    else self.out.send_bytes(b""))

    def call(self, message: tuple, limit: int = SMALL_BYTES) -> Any:
        self.send(message)
        return self.wait(limit)

    def wait(self, limit: int = SMALL_BYTES) -> Any:
        def read() -> bytes:
            if self.timeout is not None and not self.inbox.poll(self.timeout):
                raise BackendProcessError(f"{self.who}: its {self.op} did not return within {self.timeout:g} s")
            try:
                return self.inbox.recv_bytes(limit)
            except OSError as exc:
                if "bad message length" not in str(exc):
                    raise
                raise BackendProcessError(f"{self.who}: its answer to {self.op} is longer than {limit} bytes"
                                          ) from None

        try:
            return _unpack(self._guard(self.op, read))
        except BackendProcessError:
            self.close()
            raise

    def close(self) -> None:
        self.alive = False
        self._finalizer()

    def _guard(self, op: str, act) -> Any:
        """``act()``; the process's end as a BackendProcessError; anything else (a deadline, Ctrl-C)
        ends the child, whose state is then unknown."""
        if not self.alive:
            raise BackendProcessError(f"{self.who}: its process was stopped earlier")
        self.op = op
        try:
            return act()
        except (EOFError, OSError) as exc:
            how = _ending(self.proc)
            self.close()
            raise BackendProcessError(f"{self.who}: its process ended during {op} ({how})") from exc
        except BaseException:
            self.close()
            raise


def _kill(proc: subprocess.Popen, server: list[int], *conns: Connection) -> None:
    """End the server; the waiter then kills what the server's code started and left, and ends too
    (else, after a few seconds, the whole session is killed)."""
    for pid in server:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5 if server else 0)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)  # its session: the waiter, the server, what they started
        proc.kill()
        proc.wait()
    for c in conns:
        c.close()


def _ending(proc: subprocess.Popen) -> str:
    try:
        return how_it_ended(proc.wait(timeout=1))
    except subprocess.TimeoutExpired:
        return "it closed its pipe, or ran another program"


# ---------------------------------------------------------------- the answers


def _pack(value: Any) -> bytes:
    """``value`` as JSON, its arrays in an .npz after it (numbers, text, lists, dicts, StepRecords)."""
    arrays: list[np.ndarray] = []

    def tree(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            arrays.append(v)
            return {"__array__": len(arrays) - 1}
        if isinstance(v, np.generic):
            return v.item()
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {"__steps__": {f.name: tree(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        if isinstance(v, dict):
            return {str(k): tree(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [tree(x) for x in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return shorten(repr(v), 200)

    head = json.dumps({"value": tree(value)}).encode()
    buf = io.BytesIO()
    if arrays:
        np.savez(buf, *arrays)
    return len(head).to_bytes(8, "little") + head + buf.getvalue()


def _error(exc: BaseException) -> bytes:
    kind = ("user" if isinstance(exc, UserError) else "memory" if isinstance(exc, MemoryError)
            else "other")
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - an exception whose str() raises
        message = "(its message cannot be printed)"
    head = json.dumps({"error": {"kind": kind, "type": str(type(exc).__name__)[:80],
                                 "message": shorten(message, 1000)}}).encode()
    return len(head).to_bytes(8, "little") + head


def _unpack(raw: bytes) -> Any:
    from bench.backends.api import StepRecords

    try:
        size = int.from_bytes(raw[:8], "little")
        doc = json.loads(raw[8:8 + size])
        arrays = np.load(io.BytesIO(raw[8 + size:]), allow_pickle=False) if len(raw) > 8 + size else {}
    except (ValueError, OSError, EOFError) as exc:
        raise BackendProcessError(f"its process sent an answer that cannot be read ({shorten(str(exc), 100)})"
                                  ) from None
    if "error" in doc:
        err = doc["error"]
        if err["kind"] == "user":
            raise UserError(shorten(str(err["message"]), 1000))
        base = MemoryError if err["kind"] == "memory" else RemoteError
        raise type(shorten(str(err["type"]), 80), (base,), {})(shorten(str(err["message"]), 1000))

    def tree(v: Any) -> Any:
        if isinstance(v, dict):
            if set(v) == {"__array__"}:
                return arrays[f"arr_{v['__array__']}"]
            if set(v) == {"__steps__"}:
                return StepRecords(**{k: tree(x) for k, x in v["__steps__"].items()})
            return {k: tree(x) for k, x in v.items()}
        return [tree(x) for x in v] if isinstance(v, list) else v

    return tree(doc.get("value"))


# ---------------------------------------------------------------- the child


def _die_with_parent(signum: int) -> None:
    """``signum`` when this process's parent ends (``PR_SET_PDEATHSIG``); first to go when memory runs out."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux
        ctypes.CDLL(None).prctl(1, int(signum))
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")  # out of memory, the kernel ends this process first, never the harness


def wait_and_serve(rfd: int, wfd: int) -> None:
    """The child: it forks the server and waits for it, so that a signal the user's code sends "to its
    parent" reaches this waiter, not the harness. It is the child subreaper of all the server starts:
    when the server ends, or the harness does (SIGTERM), it kills every process the server's code left,
    then ends as the server ended. The server keeps the default signal dispositions (it has a session of
    its own: no terminal sends it any), so what its code starts inherits no ignored signal."""
    become_subreaper()
    pid = os.fork()
    if pid == 0:
        _die_with_parent(signal.SIGKILL)
        serve(rfd, wfd)
    os.close(rfd)
    os.close(wfd)

    def end(signum, frame):  # noqa: ARG001 - the harness ended: nothing of the code's outlives it
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # gone: what it started is this process's now
        kill_orphans(keep=set())
        os._exit(1)

    for name in IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, end)
    _die_with_parent(signal.SIGTERM)
    while True:
        ended, status = os.waitpid(-1, 0)
        if ended == pid:
            break
    kill_orphans(keep=set())
    if os.WIFSIGNALED(status):  # end as the server ended: by its signal
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's cannot be set, and is the default
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def serve(rfd: int, wfd: int) -> None:
    """The server's loop: one message in, at most one answer out, until the harness closes the pipe."""
    import bench.provenance  # noqa: F401 - the originals, before any user code

    for fd in (rfd, wfd):  # a program the code runs (exec) does not hold the harness's pipes open
        os.set_inheritable(fd, False)
    inbox, out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    me = os.getpid()
    _bound_memory(MEMORY_HEADROOM)  # its import and constructor too
    out.send_bytes(_pack(me))
    state: dict[str, Any] = {"pending": None}
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            os._exit(0)
        if os.getpid() != me:  # a copy the code forked came back here: only the server answers
            os._exit(0)
        op = message[0]
        if op in ASYNC:
            if state["pending"] is None:
                try:
                    getattr(state["backend"], op)(state["order"][message[1]:message[2]])
                except BaseException as exc:  # noqa: BLE001 - answered at the next wait
                    state["pending"] = exc
            continue
        try:
            if state["pending"] is not None:
                exc, state["pending"] = state["pending"], None
                raise exc
            reply = _pack(_handle(op, message[1:], state, inbox))
        except BaseException as exc:  # noqa: BLE001 - every failure is the backend's, sent back
            reply = _error(exc)
        if os.getpid() != me:
            os._exit(0)
        try:
            out.send_bytes(reply)
        except OSError:
            os._exit(0)


_INHERITED: list[int] = []  # the data-size limit this process was started with (ulimit -d)


def _bound_memory(extra: int) -> None:
    """Limit this process's data (its heap and private writable mappings: every array; not the
    address space a library reserves, such as torch's) to its size now plus ``extra`` bytes, never
    above the limit it inherited: code that leaks or allocates without end (at import, in its
    constructor, in a step) fails its own run (a MemoryError: ``oom``) before the machine's memory is gone."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if not _INHERITED:
        _INHERITED.append(soft)
    status = open("/proc/self/status").read()
    used = int(status.split("VmData:")[1].split()[0]) * 1024 if "VmData:" in status else 0
    want = min(x for x in (used + extra, _INHERITED[0], hard) if x != resource.RLIM_INFINITY)
    resource.setrlimit(resource.RLIMIT_DATA, (want, hard))


def _handle(op: str, args: tuple, state: dict[str, Any], inbox: Connection) -> Any:
    import importlib

    from bench import backends

    if op == "probe":  # in the main thread: the harness bounds the whole probe
        impl, module, cls, device = args
        try:
            found = importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: unavailable, with why
            return False, f"import {module} raised {type(exc).__name__}: {shorten(str(exc), 300)}"
        klass = getattr(found, cls, None)
        if not isinstance(klass, type):
            return False, f"{module} has no class {cls}"
        check = getattr(found, "available", None) or getattr(klass, "available", None)
        what = f"{impl}: available({device!r})"
        try:
            return backends._answer(check(device), what) if check is not None else (True, "")
        except backends.Unavailable as exc:
            return False, str(exc)
        except BaseException as exc:  # noqa: BLE001
            return False, f"{what} raised {type(exc).__name__}: {shorten(str(exc), 300)}"
    if op == "build":
        module, cls, config, device = args
        state["backend"] = b = getattr(importlib.import_module(module), cls)(config, device)
        return {"describe": backends.options_of(b), "gather": callable(getattr(b, "gather", None))}
    if op == "threads":
        from threadpoolctl import threadpool_limits

        state["threads"] = threadpool_limits(limits=args[0])  # held for the process's life
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(args[0])
        return None
    if op == "load_data":
        kind, meta, shapes = args
        _bound_memory(MEMORY_HEADROOM + 3 * sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                                                 for shape, dtype in shapes.values()))  # room for the data
        arrays = {}
        for name, (shape, dtype) in shapes.items():
            arrays[name] = a = np.empty(shape, np.dtype(dtype))
            if a.nbytes:
                inbox.recv_bytes_into(memoryview(a).cast("B"))
            else:
                inbox.recv_bytes()
        state["backend"].load_data(kind(**meta, **arrays))
        return _bound_memory(max(MEMORY_HEADROOM, 2 * sum(a.nbytes for a in arrays.values())))
    if op == "replaced":
        from bench.provenance import replaced

        return replaced()
    name, call_args = args
    if name not in SERVED:
        raise ValueError(f"no backend call {name!r}")
    value = getattr(state["backend"], name)(*call_args)
    if name == "device_indices":
        state["order"], value = value, None
    return value
