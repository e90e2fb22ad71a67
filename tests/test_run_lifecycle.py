"""Every way `distill run` ends takes down what it started (issue 17): the temporary Prefect server (uvicorn)
and any engine process. Processes are found by walking /proc for the run's descendants while it runs and
checked by PID (and start time, so a reused PID is not mistaken for a survivor) after it ended.

The run samples from tests/echo_server.py: in "hang" mode it never answers, so the run is reliably inside
its sample stage when the signal arrives; in "echo" mode it fails the stage (HTTP 401).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from echo_server import EchoServer, distill_run_argv

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")]


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))):
            children.setdefault(st[0], []).append(int(d.name))
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is None:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = ""
        out[pid] = (st[2], cmd)
        todo += children.get(pid, [])
    return out


def survivors(seen: dict[int, tuple[int, str]]) -> list[str]:
    """The recorded processes still there (same PID and start time), zombies included."""
    left = []
    for pid, (start, cmd) in seen.items():
        st = _stat(pid)
        if st is not None and st[2] == start:
            left.append(f"{pid} [{st[1]}] {cmd[:160]}")
    return left


def _start_run(tmp_path: Path, model: Path, server: EchoServer) -> subprocess.Popen:
    from test_pipeline import tiny_recipe

    recipe = tiny_recipe(model, tmp_path / "run")
    recipe["teacher"] = {"enabled": False, "model": str(model)}
    recipe["sampling"].update(engine="openai", openai={"base_url": server.base_url, "endpoint": "chat", "model": "echo-model",
                                                      "max_retries": 0, "timeout": 600})
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "OMP_NUM_THREADS": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}
    # not a session of its own: the signal goes to this PID only, as `kill PID` or a scheduler's stop does
    return subprocess.Popen(distill_run_argv(config), cwd=tmp_path,
                            env=env, stdout=open(tmp_path / "run.log", "w"), stderr=subprocess.STDOUT)


def _record(seen: dict, root: int) -> None:
    """Add `root`'s live descendants to `seen`, with the last non-empty command line read (a child shows its
    parent's until it execs, a zombie an empty one)."""
    for pid, (start, cmd) in descendants(root).items():
        if pid not in seen or seen[pid][0] != start or cmd:
            seen[pid] = (start, cmd)


def _watch(proc: subprocess.Popen, seen: dict, until, timeout: float) -> None:
    """Record `proc`'s descendants every 0.2 s until `until()` holds or it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not until():
        _record(seen, proc.pid)
        time.sleep(0.2)
    _record(seen, proc.pid)


def _kill_survivors(seen: dict) -> None:
    for pid in [int(x.split()[0]) for x in survivors(seen)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _check_nothing_left(proc: subprocess.Popen, seen: dict, tmp_path: Path) -> None:
    log = (tmp_path / "run.log").read_text()
    assert any("uvicorn" in cmd for _, cmd in seen.values()), f"the run's Prefect server was never seen: {seen}\n{log[-3000:]}"
    left = survivors(seen)
    deadline = time.monotonic() + 10  # a process on its way out
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = survivors(seen)
    _kill_survivors(seen)  # leave nothing running for the next test
    assert not left, f"left behind by `distill run` (rc {proc.returncode}):\n" + "\n".join(left) + f"\n{log[-3000:]}"


def _end_if_running(proc: subprocess.Popen, seen: dict[int, tuple[int, str]]) -> None:
    """A run that did not end (a failed assertion, a timeout) is killed with what it started: nothing is left
    behind for the next test."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        _kill_survivors(seen)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_stage_leaves_no_process(sig, tiny_llama, tmp_path):
    seen: dict[int, tuple[int, str]] = {}
    with EchoServer("hang") as server:
        proc = _start_run(tmp_path, tiny_llama, server)
        try:
            _watch(proc, seen, until=lambda: any(m == "POST" for m, _, _ in server.requests), timeout=400)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert any(m == "POST" for m, _, _ in server.requests), "the run never reached its sample stage"
            time.sleep(1)
            _record(seen, proc.pid)
            proc.send_signal(sig)
            rc = proc.wait(timeout=120)
        finally:
            _end_if_running(proc, seen)
    _check_nothing_left(proc, seen, tmp_path)
    assert rc == 128 + sig  # a clean exit with the conventional status, not a death by signal
    log = (tmp_path / "run.log").read_text()
    assert "distill: SIG" in log
    if sig == signal.SIGINT:  # Ctrl-C ends in one line, not a KeyboardInterrupt traceback
        assert "interrupted" in log


def test_sigkill_during_a_stage_takes_the_prefect_server_with_it(tiny_llama, tmp_path):
    """No handler sees SIGKILL: the temporary server is started as a child the kernel stops when the run dies."""
    seen: dict[int, tuple[int, str]] = {}
    with EchoServer("hang") as server:
        proc = _start_run(tmp_path, tiny_llama, server)
        try:
            _watch(proc, seen, until=lambda: any(m == "POST" for m, _, _ in server.requests), timeout=400)
            assert proc.poll() is None and any(m == "POST" for m, _, _ in server.requests), (tmp_path / "run.log").read_text()[-3000:]
            _record(seen, proc.pid)
            proc.kill()
            proc.wait(timeout=60)
        finally:
            _end_if_running(proc, seen)
    _check_nothing_left(proc, seen, tmp_path)


def test_a_failed_run_leaves_no_process(tiny_llama, tmp_path):
    seen: dict[int, tuple[int, str]] = {}
    with EchoServer("echo") as server:
        proc = _start_run(tmp_path, tiny_llama, server)
        try:
            _watch(proc, seen, until=lambda: False, timeout=400)
            rc = proc.wait(timeout=120)
        finally:
            _end_if_running(proc, seen)
    assert rc not in (0, None) and any(m == "POST" for m, _, _ in server.requests)
    _check_nothing_left(proc, seen, tmp_path)


def test_a_closed_vllm_engine_leaves_no_defunct_engine_core(tiny_llama, monkeypatch):
    """vLLM terminates its EngineCore on shutdown without waiting for it: it stayed <defunct> until the run ended.
    On CPU the engine core now runs in-process (configure_cpu_vllm); GPUs keep the separate process, so it is
    asked for here."""
    pytest.importorskip("vllm")
    from distill.config.sampling import VLLMSettings
    from distill.engines.vllm import VLLMEngine, configure_cpu_vllm

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    configure_cpu_vllm()
    before = set(descendants(os.getpid()))
    engine = VLLMEngine(str(tiny_llama), VLLMSettings(max_model_len=512, kv_cache_space_gb=1, dtype="float32"))
    cores = {pid: v for pid, v in descendants(os.getpid()).items() if pid not in before and "EngineCore" in v[1]}
    assert cores, descendants(os.getpid())
    engine.close()
    time.sleep(1)
    left = [f"{pid} [{st[1]}]" for pid, (start, _) in cores.items() if (st := _stat(pid)) and st[2] == start]
    assert not left, f"EngineCore still there after close ([Z]: defunct): {left}"


def test_a_finished_run_leaves_no_process(tiny_run):
    """The whole tiny pipeline ran to the end (conftest's `tiny_run`): no process of it is left. Its PIDs were not
    recorded, so a survivor is found by what it inherited: the run's own PREFECT_HOME in its environment."""
    marker = f"PREFECT_HOME={tiny_run['prefect_home']}".encode()
    left = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "environ").read_bytes().split(b"\0"):
                    left.append(f"{d.name} {(d / 'cmdline').read_bytes().replace(bytes(1), b' ').decode(errors='replace')[:160]}")
            except OSError:  # gone meanwhile, or not ours to read
                pass
    assert not left, left
