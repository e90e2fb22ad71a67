"""distill.verify.sandbox: limits, and hostile programs contained in every isolation mode this machine offers.

Every hostile program is bounded so that even run unsandboxed it does no lasting harm: the fork bomb stops
at 200 sleeping children that exit after 30 s, the memory bomb asks for 2 GiB of untouched memory, writes
go to a directory the test owns, the network probe connects to the test's own listener. Where a mode lacks
a protection (the `none` fallback has no network isolation), the test checks that `missing()` says so
instead of running the part that would reach the host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import dataclasses

import pytest

from distill.verify.sandbox import CPU_EXIT, ISOLATIONS, Limits, Sandbox, SandboxError

# A generous wall clock: a loaded 2-core machine can take seconds just to start Python in a sandbox.
# The wall-clock test uses its own short limit (SHORT_WALL).
LIMITS = Limits(wall_s=15.0, cpu_s=1, memory_mb=256, nproc=16, fsize_mb=1, output_bytes=64 << 10, tmpfs_mb=8)
SHORT_WALL = 2.0


@pytest.fixture(scope="module", params=ISOLATIONS)
def box(request) -> Sandbox:
    sandbox = Sandbox(LIMITS, isolation=request.param)
    try:
        sandbox.describe()
    except SandboxError as e:
        pytest.skip(f"isolation {request.param!r} is not available here: {e}")
    return sandbox


def _has(box: Sandbox, *protections: str) -> bool:
    return any(box.protections()[p] for p in protections)


# --- plain runs --------------------------------------------------------------------------------------------


def test_stdin_stdout_exit_status_and_a_scrubbed_environment(box, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_canary")
    r = box.run_python("import os, sys\nprint(sum(map(int, sys.stdin.read().split())))\nprint(sorted(os.environ))\nsys.exit(3)", "1 2 3\n")
    assert r.returncode == 3 and not r.timed_out and not r.output_truncated and not r.ok
    total, env = r.stdout.splitlines()
    assert total == "6"
    assert set(eval(env)) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PWD"}
    assert box.run_python("print('hi')").ok


def test_describe_names_isolation_protections_and_what_is_missing(box):
    d = box.describe()
    assert d["isolation"] == box.isolation and os.path.isfile(d["python"])
    redundant = {"separate_uid"} if box.isolation == "bwrap" else set()  # bwrap's mounts and pid namespace cover it
    assert set(d["missing"]) == {k for k, v in d["protections"].items() if not v} - redundant
    always = ("process_group_kill", "temp_dir", "scrubbed_env", "wall_timeout", "output_cap", "cpu_limit", "memory_limit", "file_size_limit")
    assert all(d["protections"][k] for k in always)
    assert d["protections"]["no_network"] == d["protections"]["pid_isolation"] == (box.isolation != "none")
    assert d["protections"]["readonly_filesystem"] == (box.isolation == "bwrap")
    if os.geteuid() == 0:  # root: programs run as nobody, or RLIMIT_NPROC would not apply
        assert d["uid"] == 65534 and d["protections"]["separate_uid"] and d["protections"]["process_limit"]


def test_auto_picks_the_strongest_mode_that_works():
    order = {m: i for i, m in enumerate(ISOLATIONS)}
    auto = Sandbox(LIMITS).isolation
    for mode in ISOLATIONS[: order[auto]]:
        with pytest.raises(SandboxError):
            Sandbox(LIMITS, isolation=mode).describe()


def test_unavailable_isolation_or_interpreter_is_an_error():
    with pytest.raises(ValueError, match="unknown isolation"):
        Sandbox(isolation="docker")
    with pytest.raises(SandboxError, match="no usable sandbox"):
        Sandbox(LIMITS, isolation="none", python="/nonexistent/python3").describe()


def test_own_directory_is_writable_and_gone_afterwards(box):
    r = box.run_python("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.path.abspath('scratch.txt'))")
    assert r.ok, r.stderr
    if box.isolation == "bwrap":
        assert r.stdout.startswith("/box/work/")  # a tmpfs that vanished with the sandbox
    else:
        assert not os.path.exists(r.stdout.strip())


# --- hostile programs --------------------------------------------------------------------------------------


def test_infinite_loop_hits_the_cpu_limit(box):
    # The exit status says which limit fired (CPU_EXIT is the launcher's status for SIGXCPU), so the test
    # does not depend on how fast the machine is; a generous wall limit keeps a loaded machine from
    # reaching the wall clock before 1 s of CPU time.
    roomy = Sandbox(dataclasses.replace(LIMITS, wall_s=120.0), isolation=box.isolation)
    r = roomy.run_python("while True:\n    pass")
    assert r.timed_out and not r.ok
    assert r.returncode == CPU_EXIT, r  # the CPU limit stopped it, not the wall clock


def test_sleeping_forever_hits_the_wall_clock_limit(box):
    short = Sandbox(dataclasses.replace(LIMITS, wall_s=SHORT_WALL), isolation=box.isolation)
    r = short.run_python("import time\ntime.sleep(60)")
    assert r.timed_out and SHORT_WALL <= r.wall_s < SHORT_WALL + 5


def test_fork_bomb_is_capped_and_leaves_nothing_behind(box):
    marker = f"29.{uuid.uuid4().int % 10**9}"  # a unique `sleep` argument to find survivors by
    source = f"""
import os
n = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.setsid()  # leave the process group, as a real bomb would
        try:
            os.execv("/bin/sleep", ["sleep", "{marker}"])
        finally:
            os._exit(0)
    n += 1
print(n)
"""
    r = box.run_python(source)
    forked = int(r.stdout.strip() or 0)
    assert forked < LIMITS.nproc, r  # RLIMIT_NPROC stopped it, far below 200
    time.sleep(0.3)
    survivors = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    survivors.append(int(pid))
        except (OSError, ValueError):
            pass
    for pid in survivors:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} children outlived the sandbox"
    assert subprocess.run(["true"]).returncode == 0  # and the host can still start processes


def test_process_limit_is_per_sandbox_not_per_user(box):
    if box.describe()["process_limit_scope"] != "sandbox":
        pytest.skip("without a user namespace RLIMIT_NPROC counts the whole uid (reported as process_limit_scope)")
    # two sandboxes at once, each using most of its process budget: a per-uid count would fail one of them
    source = f"""
import os, time
kids = []
for _ in range({LIMITS.nproc - 4}):
    pid = os.fork()
    if pid == 0:
        time.sleep(1.0)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
print(len(kids))
"""
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: box.run_python(source), range(2)))
    assert [r.stdout.strip() for r in results] == [str(LIMITS.nproc - 4)] * 2, results


def test_memory_bomb_fails_with_memory_error(box):
    r = box.run_python("chunks = []\nfor _ in range(32):\n    chunks.append(bytearray(64 << 20))\nprint(len(chunks))")
    assert r.returncode != 0 and "MemoryError" in r.stderr


def test_output_flood_is_cut_off(box):
    r = box.run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert r.output_truncated and not r.ok and len(r.stdout) <= LIMITS.output_bytes


def test_big_file_is_refused(box):
    r = box.run_python("open('big', 'wb').write(b'x' * (4 << 20))")
    assert r.returncode != 0 and "File too large" in r.stderr


def test_writing_outside_its_directory_fails(box, tmp_path):
    target = tmp_path / "pwned.txt"  # the test's own directory, outside the sandbox's
    if not _has(box, "readonly_filesystem", "separate_uid"):
        assert {"readonly_filesystem", "separate_uid"} <= set(box.missing())
        pytest.skip("this mode runs as the caller with the host filesystem: reported missing")
    r = box.run_python(f"open({str(target)!r}, 'w').write('x')\nprint('wrote')")
    assert r.returncode != 0 and "wrote" not in r.stdout
    assert not target.exists()
    if box.isolation == "bwrap":  # and the system is read-only
        r = box.run_python("open('/usr/pwned', 'w')")
        assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_network_access_fails(box):
    if not box.protections()["no_network"]:
        assert "no_network" in box.missing()
        pytest.skip("no network namespace in this mode: reported missing")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    r = box.run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
    t.join()
    server.close()
    assert r.returncode != 0 and "connected" not in r.stdout and not accepted


def test_secrets_in_the_callers_environment_are_not_visible(box, monkeypatch):
    canary = f"hf_canary_{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_TOKEN", canary)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    source = f"""
import os
hits = [k for k, v in os.environ.items() if {canary!r} in v]
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            if {canary!r}.encode() in open('/proc/%s/environ' % pid, 'rb').read():
                hits.append(pid)
        except OSError:
            pass
print(hits)
"""
    r = box.run_python(source)
    assert r.ok, r.stderr
    assert canary not in r.stdout
    if _has(box, "pid_isolation", "separate_uid"):
        assert r.stdout.strip() == "[]"  # not through /proc/<verifier>/environ either


def test_killing_its_parent_does_not_reach_the_caller(box):
    r = box.run_python("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('sent')")
    assert not r.ok or r.stdout.strip() == "sent"  # the launcher died, or pid 1 of its namespace ignored it
    if not _has(box, "pid_isolation", "separate_uid"):
        pytest.skip("same uid, host pid namespace: it could signal the caller by pid (reported missing)")
    # by pid, and everything it may signal: still not the test process
    r = box.run_python(f"import os, signal\ntry:\n    os.kill({os.getpid()}, signal.SIGKILL)\nexcept OSError as e:\n    print(type(e).__name__)")
    assert r.stdout.strip() in ("ProcessLookupError", "PermissionError")
    if box.protections()["pid_isolation"]:
        r = box.run_python("import os, signal\nos.kill(-1, signal.SIGKILL)")
        assert r.returncode is not None
    assert os.getpid() > 0  # we are still here
