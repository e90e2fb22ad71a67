"""How a run ends: every way (success, error, SIGTERM, SIGINT, SIGHUP) takes down the processes it started.

Python's default SIGTERM kills the interpreter on the spot: no `finally`, no `atexit`, so the temporary
Prefect server (a uvicorn subprocess Prefect starts on the first API call and stops only at exit) was left
running, orphaned. `ending_cleanly()` turns SIGTERM and SIGHUP into `SystemExit(128 + signal)` raised in the
main thread (Prefect's own SIGTERM bridge marks the flow run crashed first, then hands the signal back to
us), so the stack unwinds through every `finally` (engines close, workers stop); on the way out it stops
the Prefect server and reaps finished child processes. A second signal while unwinding is ignored, so the
clean-up is not cut short. For SIGKILL, which no handler sees, `start_prefect_server` starts the server as a
child the kernel stops when this process dies.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _State:
    stopping = False


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _State.stopping:  # already unwinding: let the clean-up finish
        os.write(2, f"distill: {name} ignored while stopping (SIGKILL stops at once)\n".encode())
        return
    _State.stopping = True
    os.write(2, f"distill: {name} received: stopping the run and what it started\n".encode())  # no logging locks here
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def prefect_servers() -> dict[int, object]:
    """The temporary Prefect servers this process runs, by their process id (none when Prefect is not loaded)."""
    server_mod = sys.modules.get("prefect.server.api.server")
    instances = getattr(getattr(server_mod, "SubprocessASGIServer", None), "_instances", {})
    return {s.server_process.pid: s for s in list(instances.values()) if getattr(s, "server_process", None) is not None}


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent():
    """A `preexec_fn`: in the child, between fork and exec, ask for SIGTERM when the thread that started it
    ends. prctl is looked up here, in the parent: the child of a threaded process must not call dlopen."""
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return preexec


def start_prefect_server() -> bool:
    """Start Prefect's temporary server now, from the main thread, as a child that the kernel stops when this
    process dies, SIGKILL included (PR_SET_PDEATHSIG; tied to the starting thread, hence the main one).

    Prefect would start the same server on its first API call (the flow run reuses this one: one instance
    per process) and stop it only at exit. Nothing happens when PREFECT_API_URL names a server, or off Linux.
    Returns whether a server was started."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return False
    from prefect.server.api import server as server_mod  # prefect is slow to import: only `distill run` needs it
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE  # prefect: as above

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return False
    real = server_mod.subprocess

    class _Subprocess:  # the module's `subprocess`, with Popen starting a child that dies with us
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def Popen(*args, **kwargs):
            kwargs.setdefault("preexec_fn", _die_with_parent())
            return real.Popen(*args, **kwargs)

    server_mod.subprocess = _Subprocess()
    try:
        server_mod.SubprocessASGIServer().start()
    finally:
        server_mod.subprocess = real
    return True


def stop_prefect_server(keep: frozenset[int] = frozenset(), drain_timeout: float = 20.0) -> None:
    """Stop the temporary Prefect servers this process started, except those whose process id is in `keep`.

    Prefect's log and event workers send what they hold first: drained at interpreter exit instead, they
    would retry against a stopped server (a 40 s hang seen here) and the run's last records were lost."""
    servers = [s for pid, s in prefect_servers().items() if pid not in keep]
    if not servers:
        return
    for module, worker in (("prefect.logging.handlers", "APILogWorker"), ("prefect.events.worker", "EventsWorker")):
        service = getattr(sys.modules.get(module), worker, None)
        if service is not None:
            try:
                service.drain_all(timeout=drain_timeout)
            except Exception as e:  # noqa: BLE001 - best effort on the way out
                log.debug("could not drain Prefect's %s: %s", worker, e)
    for server in servers:
        try:
            server.stop()  # terminate, wait 5 s, kill
        except Exception as e:  # noqa: BLE001 - best effort on the way out
            log.warning("could not stop the temporary Prefect server: %s", e)


def reap_children() -> None:
    """Wait for this process's multiprocessing children that have exited, so that none is left defunct."""
    multiprocessing.active_children()  # joins every finished child as a side effect


@contextmanager
def ending_cleanly() -> Iterator[None]:
    """Run the body with SIGTERM/SIGINT/SIGHUP turned into exceptions; stop what it started however it ends."""
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS} if main else {}
    _State.stopping = False
    servers_before = frozenset(prefect_servers())  # a caller's server (tests run the CLI in-process) stays up
    try:
        yield
    finally:
        _State.stopping = True  # from here on a signal does not interrupt the clean-up
        try:
            stop_prefect_server(keep=servers_before)
            reap_children()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            _State.stopping = False
