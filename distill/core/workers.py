"""Worker processes that die with their parent, SIGKILL included (a killed `distill curate` left its spawned
workers running, ~230 MB each, because each holds both ends of the pool's queues and never sees EOF).

    fn, args = tied_initializer(_init_worker, cfg_json, loaded)
    ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=fn, initargs=args)

or call `die_with_parent(parent_pid)` first thing in your own initializer. On Linux the kernel sends the worker
SIGKILL when its parent goes (prctl PR_SET_PDEATHSIG; with the forkserver start method the parent is the
fork server, which ends with the pool's owner); a daemon thread also checks every `POLL_SECONDS` that the
owner is alive, so the worker leaves within that time where prctl is missing. Note PR_SET_PDEATHSIG fires when the *thread*
that started the worker ends: create pools from a thread that outlives them (ProcessPoolExecutor and
multiprocessing.Pool start workers from the thread that submits or from their own long-lived threads).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any, Callable

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's (cannot be: it is our parent), so alive
        return True
    return True


def _watch(parent_pid: int, direct: int) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        if os.getppid() != direct or not _alive(parent_pid):
            os._exit(1)  # the parent is gone: no clean-up is owed to anyone


def die_with_parent(parent_pid: int, watch: bool = True) -> None:
    """Make this process exit when process `parent_pid` (its parent) dies. Call it in the worker.

    watch=False leaves out the polling thread, for a worker that ends by itself when its parent goes (one
    serving a socket sees EOF: distill/verify/limits.py) and that should stay single-threaded."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watch thread alone
        pass
    direct = os.getppid()  # `parent_pid` itself, or a fork server it started (which dies with it)
    if direct == 1 or not _alive(parent_pid):  # the parent died before the signal was armed
        os._exit(1)
    if watch:
        threading.Thread(target=_watch, args=(parent_pid, direct), name="die-with-parent", daemon=True).start()


def _tied(parent_pid: int, init: Callable[..., Any] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if init is not None:
        init(*initargs)


def tied_initializer(init: Callable[..., Any] | None = None, *initargs: Any) -> tuple[Callable[..., None], tuple]:
    """(initializer, initargs) for a process pool whose workers die with this process; `init(*initargs)`
    (a module-level function, picklable for spawn) runs after. Call it in the parent that creates the pool."""
    return _tied, (os.getpid(), init, initargs)
