"""Per-row limits for verifiers: every row's parse and comparison runs in a worker process with a deadline.

One completion can hang Math-Verify for good (`\\Gamma(10^{12})`, `\\exp(\\exp(\\exp(20)))`, a sum to `n` of
`k^{10^6}`), and Math-Verify's own timeouts use SIGALRM, which works only in the main thread (Prefect runs tasks
in threads; TRL calls rewards wherever it is). So the limit is a process: `BoundedPool.map` sends each row to a
worker and waits at most `time_s`; a worker over the limit is SIGKILLed and replaced, that row's result is an
`Overrun` (the caller makes it an unverifiable verdict with the reason), and the other rows go on. Each worker
also runs under an address-space limit (`memory_mb` above what it holds when it starts).

Workers are forked by a zygote: one clean Python process (started with subprocess, so no thread or state of the
caller's is copied, and the caller's main module is never re-run) that imports the verifiers and makes one warm-up
call, then forks a worker per request on a socket. A worker starts in milliseconds with everything loaded, so a
replaced one costs nothing like an import. Workers die with the zygote (PR_SET_PDEATHSIG) and the zygote exits
when its socket to this process closes, which the kernel does when this process dies, SIGKILL included: nothing
is left behind.

Before a row is sent, a cheap text screen (distill.verify.screen) refuses answers that are absurd on their face
(600 nested parentheses, `\\Gamma(10^{12})`) at once instead of waiting out the deadline; the deadline bounds
everything else.
"""

from __future__ import annotations

import atexit
import base64
import importlib
import json
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

from distill.core.workers import die_with_parent
from distill.core.progress import quiet_unactionable_loggers

ROW_TIME_S = 10.0  # Math-Verify's own defaults are 5 s to parse and 5 s to compare
ROW_MEMORY_MB = 1024  # address space a worker may add to what it holds when it starts
START_TIME_S = 120.0  # the zygote's imports and a worker's start; not charged to any row
PRELOAD = ("distill.verify", "sympy", "math_verify")  # imported by the zygote (a missing one is skipped)


@dataclass(frozen=True)
class Overrun:
    """A row that did not finish within its limits (or whose worker died): `reason` says which."""

    reason: str


def _cap_memory(memory_mb: int | None) -> None:
    if not memory_mb:
        return
    with open("/proc/self/status") as f:
        held_kb = next((int(line.split()[1]) for line in f if line.startswith("VmSize:")), 0)
    cap = (held_kb << 10) + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _serve(conn: Connection, memory_mb: int | None) -> None:
    """A worker: say ("ready", pid), then answer each (fn, args) with ("ok", fn(*args)) or ("error", reason)."""
    die_with_parent(os.getppid(), watch=False)  # SIGKILL with the zygote; without prctl, EOF on the socket ends it
    _cap_memory(memory_mb)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        try:
            out: tuple = ("ok", fn(*args))
        except MemoryError:
            out = ("error", "memory_limit")
        except RecursionError:
            out = ("error", "recursion_limit")
        except Exception as e:  # noqa: BLE001 - one row's failure is that row's result
            out = ("error", f"error: {type(e).__name__}")
        conn.send(out)


def _zygote(ctrl_fd: int, memory_mb: int, warm_b64: str) -> None:
    """The zygote's main: import, warm up, then fork a worker for each socket received on `ctrl_fd`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    # a fresh interpreter: the console's quieting of Math-Verify's "Timeout is disabled" (its own timeouts are
    # off on purpose: these workers are the bound) is not inherited, and it printed once per worker start
    quiet_unactionable_loggers()
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    warm = pickle.loads(base64.b64decode(warm_b64))
    if warm is not None:
        try:
            warm[0](*warm[1])
        except Exception:  # noqa: BLE001 - the warm-up only loads what the real calls need
            pass
    ctrl = socket.socket(fileno=ctrl_fd)
    while True:
        msg, fds, _, _ = socket.recv_fds(ctrl, 1, 1)
        if not msg:  # the caller is gone
            os._exit(0)
        if not fds:
            continue
        if os.fork() == 0:
            ctrl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _serve(Connection(fds[0]), memory_mb or None)
            finally:
                os._exit(0)
        os.close(fds[0])


class _Zygote:
    def __init__(self, memory_mb: int | None, warm: tuple | None):
        self._lock = threading.Lock()
        self.ctrl, theirs = socket.socketpair()
        code = "import sys, json; sys.path[:] = json.loads(sys.argv[1]); from distill.verify.limits import _zygote; " \
               "_zygote(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])"
        warm_b64 = base64.b64encode(pickle.dumps(warm)).decode()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(sys.path), str(theirs.fileno()), str(memory_mb or 0), warm_b64],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
        )
        theirs.close()

    def fork(self) -> Connection:
        """A new worker's end of its socket (it sends ("ready", pid) once started)."""
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                socket.send_fds(self.ctrl, [b"w"], [theirs.fileno()])
        finally:
            theirs.close()
        return Connection(ours.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.ctrl.close()  # the zygote exits at EOF; its workers follow it
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Worker:
    def __init__(self, zygote: _Zygote):
        self.conn = zygote.fork()
        self.pid: int | None = None  # known once it says it is ready

    def kill(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()


class BoundedPool:
    """Worker processes that run calls under a per-call time limit; safe to use from several threads at once
    (each `map` checks workers out; idle ones are kept for the next call). `warm`, (fn, args), is called
    once in the zygote so that workers start with what the calls load lazily."""

    def __init__(self, memory_mb: int | None = ROW_MEMORY_MB, warm: tuple | None = None):
        self.memory_mb, self.warm = memory_mb, warm
        self._pid = os.getpid()  # a forked child must not close its parent's workers (atexit runs in both)
        self._zygote: _Zygote | None = None
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def _new_worker(self) -> _Worker:
        for attempt in range(2):
            with self._lock:
                if self._zygote is None or not self._zygote.alive() or attempt:
                    self._zygote = _Zygote(self.memory_mb, self.warm)
                zygote = self._zygote
            try:
                return _Worker(zygote)
            except OSError:  # the zygote died under us (killed, out of memory): one fresh start
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _checkout(self, n: int) -> list[_Worker]:
        with self._lock:
            got, self._idle[:] = self._idle[:n], self._idle[n:]
        return got + [self._new_worker() for _ in range(n - len(got))]

    def _checkin(self, workers: list[_Worker]) -> None:
        with self._lock:
            self._idle.extend(workers)

    def close(self) -> None:
        if os.getpid() != self._pid:
            return
        with self._lock:
            workers, self._idle[:] = list(self._idle), []
            zygote, self._zygote = self._zygote, None
        for w in workers:
            w.close()
        if zygote is not None:
            zygote.close()

    def map(self, fn: Callable, rows: Sequence[tuple], workers: int = 1, time_s: float | None = None) -> list[Any]:
        """fn(*row) for each row, in order, on up to `workers` processes; a row over `time_s` seconds (default
        ROW_TIME_S), or whose worker died, gives an Overrun instead. `fn` must pickle (a module-level function)."""
        time_s = ROW_TIME_S if time_s is None else time_s
        out: list[Any] = [None] * len(rows)
        if not rows:
            return out
        todo = deque(range(len(rows)))
        free: list[_Worker] = []
        busy: dict[Connection, tuple[_Worker, int | None, float]] = {}  # row None: starting up
        now = time.monotonic()
        for w in self._checkout(max(1, min(workers, len(rows)))):
            (free.append(w) if w.pid is not None else busy.__setitem__(w.conn, (w, None, now + START_TIME_S)))
        try:
            while todo or any(i is not None for _, i, _ in busy.values()):
                while todo and free:
                    w, i = free.pop(), todo.popleft()
                    try:
                        w.conn.send((fn, rows[i]))
                    except OSError:  # it died idle: the row waits for a new worker
                        todo.appendleft(i)
                        self._replace(w, busy)
                        continue
                    busy[w.conn] = (w, i, time.monotonic() + time_s)
                if not busy:
                    raise RuntimeError("verify workers could not start")
                ready = wait(list(busy), max(0.0, min(d for _, _, d in busy.values()) - time.monotonic()))
                for conn in ready:
                    w, i, _ = busy.pop(conn)
                    try:
                        status, value = conn.recv()
                    except (EOFError, OSError):
                        if i is None:  # died starting up: not replaced, so a broken start cannot loop
                            w.kill()
                            continue
                        out[i] = Overrun("worker_died")
                        self._replace(w, busy)
                        continue
                    if i is None:  # a started worker is ready
                        w.pid = value
                    else:
                        out[i] = value if status == "ok" else Overrun(value)
                    if status == "error" and value == "memory_limit":  # its heap may be in pieces
                        self._replace(w, busy)
                    else:
                        free.append(w)
                now = time.monotonic()
                for conn, (w, i, deadline) in list(busy.items()):
                    if deadline <= now:
                        del busy[conn]
                        if i is not None:
                            out[i] = Overrun(f"time_limit: over {time_s:g} s")
                            self._replace(w, busy)
                        else:
                            w.kill()  # could not even start; the others carry on
        finally:
            for w, i, _ in busy.values():
                (w.kill() if i is not None else free.append(w))
            self._checkin(free)
        return out

    def _replace(self, w: _Worker, busy: dict) -> None:
        w.kill()
        new = self._new_worker()
        busy[new.conn] = (new, None, time.monotonic() + START_TIME_S)


_POOL: BoundedPool | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def shared_pool(warm: tuple | None = None) -> BoundedPool:
    """The process's pool (created on first use, with the first caller's `warm`; closed at exit). A forked
    child gets a pool of its own: the parent's workers and zygote socket are the parent's."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL, _POOL_PID = BoundedPool(warm=warm), os.getpid()
            atexit.register(_POOL.close)
        return _POOL
