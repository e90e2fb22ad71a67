"""Run lifecycle and thread defaults (issue 17), the fast parts: signals become a clean exit, finished
children are reaped, a run on its temporary Prefect server asks for no GPU limit, and the thread settings
(the selection logic; the timings are scripts/bench_threads.py's job).
The end-to-end checks (SIGTERM/SIGINT to `distill run`, by PID) are in test_run_lifecycle.py."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from distill.core import threads
from distill.core.lifecycle import ending_cleanly, reap_children


def test_sigterm_and_sighup_become_a_clean_exit_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    for sig, expected in ((signal.SIGTERM, SystemExit), (signal.SIGHUP, SystemExit), (signal.SIGINT, KeyboardInterrupt)):
        cleaned = []
        with pytest.raises(expected) as info:
            try:
                with ending_cleanly():
                    os.kill(os.getpid(), sig)
                    time.sleep(5)  # the handler raises at the next bytecode
                    raise AssertionError("the signal did not stop the body")
            finally:
                cleaned.append(True)
        if expected is SystemExit:
            assert info.value.code == 128 + sig
        assert cleaned
    assert {s: signal.getsignal(s) for s in before} == before


def _exit_now() -> None:
    os._exit(0)


def test_finished_children_are_reaped():
    p = multiprocessing.get_context("spawn").Process(target=_exit_now)
    p.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Path(f"/proc/{p.pid}/stat").read_text().split(") ", 1)[1][0] != "Z":
        time.sleep(0.1)  # exited, not yet waited for: <defunct>, as vLLM's EngineCore was after the sample stage
    # a thread-group leader can show Z while the child's other threads still exit, and waitpid does not reap it
    # before they have (the likely cause of a rare failure here): call again for a short while; nothing else reaps it
    deadline = time.monotonic() + 10
    reap_children()
    while Path(f"/proc/{p.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        reap_children()
    assert not Path(f"/proc/{p.pid}").exists()


def test_a_temporary_prefect_server_is_not_asked_for_a_gpu_limit(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.stages import gpu_slots

    with temporary_settings({PREFECT_API_URL: None}):
        assert isinstance(gpu_slots(2), nullcontext)  # no "Concurrency limits ['gpu'] do not exist" per stage
    assert isinstance(gpu_slots(0), nullcontext)


@pytest.mark.parametrize("cores,busy,free", [(2, None, 2), (2, 0.0, 2), (2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 1.9, 1),
                                            (2, 5.0, 1), (8, 2.2, 6), (8, 0.49, 8), (1, 1.0, 1)])
def test_free_cores(cores, busy, free):
    assert threads.free_cores(cores, busy) == free


def test_thread_env_precedence():
    # nothing set: every core, passive waits (a spinning wait made a busy neighbour cost 5-10x)
    assert threads.thread_env(None, {}, 2) == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.thread_env(None, {}, 0)["OMP_NUM_THREADS"] == "1"
    # the recipe's `threads` wins over the environment; an explicit environment value wins over the cores
    assert threads.thread_env(3, {"OMP_NUM_THREADS": "1"}, 2)["OMP_NUM_THREADS"] == "3"
    assert "OMP_NUM_THREADS" not in threads.thread_env(None, {"OMP_NUM_THREADS": "1"}, 2)
    # a wait policy the user chose stays
    assert "OMP_WAIT_POLICY" not in threads.thread_env(None, {"OMP_WAIT_POLICY": "ACTIVE"}, 2)


def test_choose_threads_sets_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.choose_threads(None) == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert threads.choose_threads(4) == {"OMP_NUM_THREADS": "4"}


def test_pin_threads_sets_a_passive_wait_policy(monkeypatch):
    """5639c99 set only OMP_NUM_THREADS (2 on the demo): libgomp's threads then spin while they wait."""
    from distill.config.recipe import pin_threads, recipe_from_dict

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pin_threads(recipe_from_dict({"name": "t", "threads": 2}))
    assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_busy_cores_reads_this_machine():
    busy = threads.busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= threads.usable_cores() + 1e-6


def test_the_cli_leaves_the_thread_count_to_the_recipe():
    """`distill` no longer pins OMP_NUM_THREADS to every core before the recipe is read (5639c99 did)."""
    from distill import cli

    saved = dict(os.environ)  # _set_environment sets PREFECT_HOME and more: none of it outlives this test
    try:
        for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
            os.environ.pop(key, None)
        cli._set_environment()
        assert "OMP_NUM_THREADS" not in os.environ and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_ctrl_c_in_a_command_is_one_line_and_status_130(monkeypatch, capsys):
    import distill.cli as cli  # here, not at the top: the spawned child of the reaping test imports this module

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert cli.main(["plan", "recipes/demo.yaml"]) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
