"""Check one implementation in a process of its own, with a time and a memory limit.

Student code is untrusted: an endless loop, a 50 GB allocation, ``os._exit``
or ``sys.exit``, a signal sent to its parent or to its process group must
cost one result, never the command. :func:`check_isolated` runs the check in
a child process and keeps nothing from it but what the child writes to a
result file: one JSON line per phase (``loading``, ``checking
LinearModule``, ...) and a last line with the check's document. No result
line means no result: exiting at import, even with status 0, is never a pass.

Children are forked by a small server (``python -m bench.checks.sandbox``,
started once per command, ended when the command closes its input) that
imported NumPy, torch and the checks once and runs one BLAS thread: a class
of submissions does not pay torch's import per submission. Each child starts
a new session, points stdin, stdout and stderr at /dev/null and forks again:
the grandchild alone runs the user's code, under an address-space limit of
its size after the imports plus ``memory_bytes`` (an allocation beyond it is
a ``MemoryError`` in the user's call: a failed check), a CPU-time and a
file-size limit, each capped at the hard limit the command inherited; its
parent only waits for it and passes its status on, so a signal the user's code
sends "to its parent" reaches that waiter, not the command. After ``timeout``
seconds the whole session is killed. The server is the child subreaper of
every process a check starts: one that leaves the session (``setsid``) and
loses its parent comes back to the server, which kills it before it says the
check is over, so no process the user's code started outlives its check.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.io import read_bounded
from bench.reaper import become_subreaper, how_it_ended, kill_orphans

RESULT_BYTES = 4 * 2**20      # more than any document a check writes
FILE_BYTES = 64 * 2**20       # the largest file the user's code may write
SERVER_START_S = 300.0        # how long the server may take to import torch on a busy machine
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Limits:
    timeout: float        # seconds of wall-clock time per implementation
    memory_bytes: int     # address space the user's code may add to the checker's own


class Running:
    """The checking processes running now (by pid); :meth:`stop` kills them, and any started later."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def add(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
            stopped = self._stopped
        if stopped:
            _kill(pid)

    def discard(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            pids = list(self._pids)
        for pid in pids:
            _kill(pid)


def check_isolated(target: str, seed: int, limits: Limits, live: Running | None = None) -> dict[str, Any]:
    """The check's document for ``target`` (see :func:`bench.checks.runner.check_target`), or, when the
    checking process ended without one, a document with ``exit`` 2 (it ended while loading the code)
    or 1 and an ``error`` saying how it ended. ``live`` holds the process while it runs."""
    live = live if live is not None else Running()
    with tempfile.TemporaryDirectory(prefix="mlpbench-check-") as tmp:
        result = Path(tmp) / "result.jsonl"
        result.touch()
        replies = _SERVER.submit({"target": target, "seed": seed, "result": str(result),
                                  "limits": asdict(limits), "cwd": os.getcwd()})
        pid, status, timed_out, start = None, None, False, time.monotonic()
        try:
            while status is None:
                wait = SERVER_START_S if pid is None else limits.timeout - (time.monotonic() - start)
                try:
                    reply = replies.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    timed_out = True
                    break
                if "pid" in reply:
                    pid, start = reply["pid"], time.monotonic()
                    live.add(pid)
                status = reply.get("status", status)
                if reply.get("gone"):
                    break
        finally:
            if pid is not None:
                _kill(pid)
                live.discard(pid)
        seconds = time.monotonic() - start
        phases, doc = _read(result)
    if doc is not None and status == 0:  # a result counts only from a process that ended as it should
        return {**doc, "seconds": seconds}
    phase = phases[-1] if phases else "starting"
    if pid is None and not timed_out:  # no checking process: the checker failed, not the code
        return {"target": target, "exit": 1, "passed": False, "seconds": seconds,
                "error": f"{target}: the checker could not start its checking process (its server "
                         "ended while importing NumPy and torch; too little memory under `ulimit -v`?)"}
    if timed_out:
        how = f"did not finish within {limits.timeout:g} s (while {phase}: an endless loop, or far too slow)"
    else:
        how = f"ended the checking process while {phase} ({_status(status)}), before any result"
    loading = phase in ("starting", "loading")  # the code does not load: as a load error, exit 2
    return {"target": target, "exit": 2 if loading else 1, "passed": False, "error": f"{target}: {how}",
            "seconds": seconds}


def _kill(pid: int) -> None:
    """SIGKILL the checking process's session: the user's code and whatever it started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # not yet a session of its own, or gone
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _status(code: int | None) -> str:
    """How the checking process ended: killed by a signal (the waiter exits 128 + N), or its status."""
    return "the checking server ended" if code is None else how_it_ended(code, shifted=True)


def _read(path: Path) -> tuple[list[str], dict | None]:
    """The phases and the document the child wrote (the first document, when several)."""
    phases, doc = [], None
    try:  # the one bounded reader: the child's code could have swapped the file for a FIFO or a link
        text = read_bounded(path, RESULT_BYTES, "the check's result file")
    except (OSError, UserError):
        return phases, None
    for line in text.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("phase"), str):
            phases.append(item["phase"])
        elif isinstance(item, dict) and isinstance(item.get("result"), dict) and doc is None:
            doc = item["result"]
    return phases, doc


class _Server:
    """The command's side of the fork server: requests as JSON lines in, replies routed by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._waiting: dict[int, queue.Queue] = {}
        self._ids = itertools.count()

    def submit(self, request: dict[str, Any]) -> queue.Queue:
        """Send ``request``; its replies ({"pid"}, then {"status"}, or {"gone"}) arrive on the queue."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            rid, replies = next(self._ids), queue.Queue()
            self._waiting[rid] = replies
            try:
                self._proc.stdin.write(json.dumps({**request, "id": rid}) + "\n")
                self._proc.stdin.flush()
            except OSError:
                replies.put({"gone": True})
        return replies

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **{k: "1" for k in THREADS}, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "bench.checks.sandbox"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        threading.Thread(target=self._read, args=(self._proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                replies = self._waiting.get(reply.get("id"))
                if "status" in reply:
                    self._waiting.pop(reply.get("id"), None)
            if replies is not None:
                replies.put(reply)
        with self._lock:  # the server ended: nobody waits for it any longer
            gone, self._waiting = list(self._waiting.values()), {}
        for replies in gone:
            replies.put({"gone": True})


_SERVER = _Server()


# ---------------------------------------------------------------- the server and its children


def serve() -> None:
    """Import the checks once, then fork a checking process per request line until stdin closes."""
    import bench.checks.runner  # noqa: F401 - what every check needs, imported before any fork

    become_subreaper()

    children: dict[int, int] = {}
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.05)
        if ready:
            chunk = os.read(0, 65536)
            if not chunk:  # the command ended: so do the checks it started, and all they started
                for pid in children:
                    _kill(pid)
                for pid in children:
                    os.waitpid(pid, 0)
                kill_orphans(keep=set())
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _checking_process(request)
                children[pid] = request["id"]
                _reply({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in children:  # not an orphan the server reaped: a checking process ended
                kill_orphans(keep=set(children))  # what its code started and left, before the check is over
                _reply({"id": children.pop(pid), "status": os.waitstatus_to_exitcode(status)})


def _reply(item: dict) -> None:
    os.write(1, (json.dumps(item) + "\n").encode())


def _checking_process(request: dict[str, Any]) -> None:
    """A new session; the grandchild checks, this process waits for it and exits with its status."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    pid = os.fork()
    if pid:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        os._exit(128 - code if code < 0 else code)
    try:
        _check(request["target"], request["seed"], request["result"], Limits(**request["limits"]),
               request["cwd"])
    finally:
        os._exit(0)


def _check(target: str, seed: int, result: str, limits: Limits, cwd: str) -> None:
    def write(item: dict) -> None:  # opened anew each time: the user's code may close descriptors
        with open(result, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(item) + "\n")

    phase = ["starting"]

    def progress(name: str) -> None:
        phase[0] = name
        write({"phase": name})

    progress("starting")
    from bench.checks.runner import check_target

    os.chdir(cwd)
    sys.path[0] = cwd  # as for python -m run there: a package there imports by name
    used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    for name, value in (("RLIMIT_AS", used + limits.memory_bytes), ("RLIMIT_CPU", int(limits.timeout) + 5),
                        ("RLIMIT_FSIZE", FILE_BYTES), ("RLIMIT_CORE", 0)):
        which = getattr(resource, name)
        hard = resource.getrlimit(which)[1]  # an inherited hard limit (ulimit -v) is never exceeded
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as exc:  # the checker's failure, not the student's code
            write({"result": {"target": target, "exit": 1, "passed": False,
                              "error": f"{target}: the checker could not set {name} to {value} ({exc})"}})
            return
    try:
        doc = check_target(target, seed, progress=progress)
    except BaseException as exc:  # noqa: BLE001 - the check's own failure, e.g. out of memory
        doc = {"target": target, "exit": 1, "passed": False,
               "error": f"{target}: the check failed while {phase[0]}: {type(exc).__name__}: {exc}"}
    write({"result": doc})


if __name__ == "__main__":
    serve()
