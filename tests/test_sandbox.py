"""distill.verify.sandbox: limits, and hostile programs contained in every isolation mode this machine offers.

Every hostile program is bounded so that even run unsandboxed it does no lasting harm: the fork bomb stops
at 200 sleeping children that exit after 30 s, the memory bomb asks for 2 GiB of untouched memory, writes
go to a directory the test owns, the network probe connects to the test's own listener. Where a mode lacks
a protection (the `none` fallback has no network isolation), the test checks that `missing()` says so
instead of running the part that would reach the host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distill.config.verify import VerifyConfig
from distill.verify.code import CodeVerifier
from distill.verify.sandbox import CPU_EXIT, SETTING, Limits, Sandbox, SandboxError
from distill.verify.sandbox_guard import Cgroup, seccomp_filter

# A generous wall clock: a loaded 2-core machine can take seconds just to start Python in a sandbox.
# The wall-clock test uses its own short limit (SHORT_WALL).
LIMITS = Limits(wall_s=15.0, cpu_s=1, memory_mb=256, nproc=16, fsize_mb=1, output_bytes=64 << 10, tmpfs_mb=8)
SHORT_WALL = 2.0


MODES = ("bwrap", "weak-unshare", "weak-none")  # every mode a recipe may ask for (the weak ones by opt-in)


@pytest.fixture(scope="module", params=MODES)
def box(request) -> Sandbox:
    sandbox = Sandbox(LIMITS, isolation=request.param)
    try:
        sandbox.describe()
    except SandboxError as e:
        pytest.skip(f"isolation {request.param!r} is not available here: {e}")
    return sandbox


@pytest.fixture
def open_dir():
    """A world-writable directory in /tmp (pytest's own tmp_path sits under a 0700 directory, which a
    sandbox running as nobody could not reach anyway)."""
    d = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


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
    assert d["protections"]["no_ip_network"] == d["protections"]["pid_isolation"] == (box.isolation != "none")
    # only bwrap hides the host's path unix sockets (unshare's network namespace does not)
    assert d["protections"]["no_network"] == (box.isolation == "bwrap")
    assert all(d["protections"][k] for k in ("private_directory", "host_files_hidden", "readonly_filesystem", "no_ptrace"))
    if os.geteuid() == 0:  # root: programs run as nobody, or RLIMIT_NPROC would not apply
        assert d["uid"] == 65534 and d["protections"]["separate_uid"] and d["protections"]["process_limit"]


def test_auto_refuses_without_bubblewrap_naming_the_setting(monkeypatch, tmp_path):
    # bwrap absent from PATH (as on a machine without bubblewrap): 5639c99 fell back to unshare/none with a warning
    monkeypatch.setenv("PATH", str(tmp_path))
    for isolation in ("auto", "bwrap"):
        with pytest.raises(SandboxError, match=f"needs bubblewrap.*{SETTING}: weak-unshare or weak-none"):
            Sandbox(LIMITS, isolation=isolation).describe()


def test_a_bubblewrap_that_cannot_start_is_refused_with_its_reason(monkeypatch, open_dir):
    # installed but unusable (user namespaces off, an AppArmor rule): its own error, no weaker fallback
    fake = open_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{open_dir}:/usr/bin:/bin")
    with pytest.raises(SandboxError, match=f"needs bubblewrap.*{SETTING}.*No permissions to create new namespace"):
        Sandbox(LIMITS).describe()


def test_weaker_modes_are_opt_in_by_name():
    for weak in ("unshare", "none"):
        with pytest.raises(ValueError, match=f"weak-{weak}"):
            Sandbox(LIMITS, isolation=weak)
        with pytest.raises(ValueError, match=f"weak-{weak}"):
            VerifyConfig(verifier="code", code={"isolation": weak})
    assert VerifyConfig(verifier="code").code.isolation == "auto"
    assert VerifyConfig(verifier="code", code={"isolation": "weak-none"}).code.isolation == "weak-none"


def test_unavailable_isolation_or_interpreter_is_an_error():
    with pytest.raises(ValueError, match="unknown isolation"):
        Sandbox(isolation="docker")
    with pytest.raises(SandboxError, match="no usable sandbox"):
        Sandbox(LIMITS, isolation="weak-none", python="/nonexistent/python3").describe()


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
    roomy = Sandbox(dataclasses.replace(LIMITS, wall_s=120.0), isolation=box.requested)
    r = roomy.run_python("while True:\n    pass")
    assert r.timed_out and not r.ok
    assert r.returncode == CPU_EXIT, r  # the CPU limit stopped it, not the wall clock


def test_sleeping_forever_hits_the_wall_clock_limit(box):
    short = Sandbox(dataclasses.replace(LIMITS, wall_s=SHORT_WALL), isolation=box.requested)
    r = short.run_python("import time\ntime.sleep(60)")
    assert r.timed_out and SHORT_WALL <= r.wall_s < SHORT_WALL + 5


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "no-cgroup"])
def test_fork_bomb_is_capped_and_leaves_nothing_behind(box, cgroup):
    if cgroup and not box.protections()["sandbox_memory_cgroup"]:
        pytest.skip("no delegated cgroup here")
    if not cgroup:  # as on a machine without one: the pid namespace, or (weak-none) the sweep, must do it
        box = Sandbox(box.limits, isolation=box.requested, cgroup=False)
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


def test_writing_outside_its_directory_fails(box, open_dir):
    target = open_dir / "pwned.txt"  # a directory whose permissions would let the sandbox's uid in
    r = box.run_python(f"open({str(target)!r}, 'w').write('x')\nprint('wrote')")
    assert r.returncode != 0 and "wrote" not in r.stdout
    assert not target.exists()
    if box.isolation == "bwrap":  # and the system is read-only
        r = box.run_python("open('/usr/pwned', 'w')")
        assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_network_access_fails(box):
    if not box.protections()["no_ip_network"]:
        assert "no_ip_network" in box.missing()
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
try:
    pids = os.listdir('/proc')
except OSError:  # the weak modes' Landlock fence leaves /proc out
    pids = []
for pid in pids:
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


# --- issue 15 item 8: rows cannot read the answer key or reach each other -------------------------------------


def _code(source: str) -> str:
    return f"```python\n{source}\n```"


def test_a_solution_that_reads_the_answer_key_is_judged_incorrect(box, open_dir):
    # the verify input on disk, readable by anyone (as a run directory usually is); the wrong solution looks
    # its test up there and prints the expected output. 5639c99's unshare/none modes judged it correct.
    tests = [{"input": "", "output": f"secret-{uuid.uuid4().hex}\n"}]
    key = open_dir / "verify_input.jsonl"
    key.write_text(json.dumps({"id": "r1", "answer": json.dumps(tests)}) + "\n")
    key.chmod(0o644)
    cheat = f"""
import json
try:
    row = json.loads(open({str(key)!r}).read())
    print(json.loads(row["answer"])[0]["output"], end="")
except OSError as e:
    print("blocked:", type(e).__name__)
"""
    verdict = CodeVerifier(box)(_code(cheat), json.dumps(tests))
    assert verdict.correct is False and verdict.reason == "incorrect", verdict
    assert "blocked" in box.run_python(cheat).stdout


def test_a_solution_cannot_overwrite_another_rows_program(box):
    # a neighbour row's directory as the sandbox lays it out (same uid, its program inside); 5639c99's none
    # mode let one row rewrite another's main.py while rows ran in parallel
    probe = Sandbox(LIMITS, isolation=box.requested)
    neighbour = Path(tempfile.mkdtemp(prefix="distill-sandbox-", dir="/tmp" if probe.dropping_uid else None))
    try:
        program = neighbour / "main.py"
        program.write_text("print(0)\n")
        os.chmod(neighbour, 0o755)
        if probe.dropping_uid:
            os.chown(neighbour, probe.uid, probe.uid)
            os.chown(program, probe.uid, probe.uid)
        attack = f"""
import os
wrote = 0
try:
    with open({str(program)!r}, "w") as f:
        f.write("print(42)\\n")
    wrote += 1
except OSError as e:
    print(type(e).__name__)
try:
    print("listed", len([n for n in os.listdir({str(neighbour.parent)!r}) if n.startswith("distill-sandbox-")]))
except OSError as e:
    print("list", type(e).__name__)
print("wrote", wrote)
"""
        r = box.run_python(attack)
        assert "wrote 0" in r.stdout, r
        assert program.read_text() == "print(0)\n"
        assert "listed 0" in r.stdout or "list PermissionError" in r.stdout, r  # nor find others by listing
    finally:
        shutil.rmtree(neighbour, ignore_errors=True)


def test_rows_running_at_once_keep_their_own_programs(box):
    # the real race: an attacker row rewrites every sandbox program it can find while a wrong row runs its
    # tests; the wrong row stays incorrect and the attacker reaches nothing
    pattern = os.path.join("/tmp" if box.dropping_uid else tempfile.gettempdir(), "distill-sandbox-*", "main.py")
    attack = f"""
import glob, os, time
wrote, end = 0, time.time() + 2.5
while time.time() < end:
    time.sleep(0.003)
    for victim in glob.glob({pattern!r}):
        if not victim.startswith(os.getcwd()):
            try:
                open(victim, "w").write("print(42)\\n")
                wrote += 1
            except OSError:
                pass
print("wrote", wrote)
"""
    with ThreadPoolExecutor(1) as pool:
        attacker = pool.submit(box.run_python, attack)
        time.sleep(0.3)
        verdict = CodeVerifier(box)(_code("print(0)"), json.dumps([{"input": str(i), "output": "42"} for i in range(8)]))
        r = attacker.result()
    assert verdict.reason == "incorrect", verdict
    assert r.stdout.strip() == "wrote 0", r


def test_isolation_report_matches_what_a_unix_socket_can_reach(box, open_dir):
    # a path unix socket of the host: bwrap does not mount it; unshare's network namespace does not hide
    # it (5639c99 reported no_network: true there), Landlock lets the connect through
    path = str(open_dir / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(1)
    try:
        r = box.run_python(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\nprint('connected')")
    finally:
        server.close()
    reached = "connected" in r.stdout
    assert box.protections()["no_network"] == (not reached)
    assert ("no_network" in box.missing()) == reached


# --- issue 15 item 9: the whole bwrap sandbox is bounded and cannot be debugged --------------------------------


@pytest.fixture(scope="module")
def bwrap_box() -> Sandbox:
    sandbox = Sandbox(LIMITS, isolation="bwrap")
    try:
        sandbox.describe()
    except SandboxError as e:
        pytest.skip(f"bubblewrap is not usable here: {e}")
    return sandbox


def test_every_writable_mount_is_capped(box):
    # 630 MB in 512 KB files (each under RLIMIT_FSIZE) wherever it can write: the root and /dev are read-only,
    # /tmp, /dev/shm and the working directory stop at their tmpfs size. On 5639c99 bwrap's root and /dev took it all.
    if not box.protections()["capped_writable_mounts"]:
        assert "capped_writable_mounts" in box.missing()
        pytest.skip("weak-none writes to the host's disk (files under RLIMIT_FSIZE): reported missing")
    source = """
import os
for where in ("/", "/dev", "/dev/shm", "/tmp", "."):
    total = 0
    try:
        for i in range(1260):
            with open(os.path.join(where, "fill%d" % i), "wb") as f:
                f.write(b"x" * (512 << 10))
            total += 512 << 10
    except OSError as e:
        pass
    print(where, total)
"""
    r = box.run_python(source)
    written = dict(line.split() for line in r.stdout.splitlines())
    assert set(written) == {"/", "/dev", "/dev/shm", "/tmp", "."}, r
    assert written["/"] == written["/dev"] == "0"
    assert all(int(n) <= LIMITS.tmpfs_mb << 20 for n in written.values()), written
    assert int(written["."]) > 0  # and its own directory does take files


def test_memfd_and_sysv_shared_memory_are_refused(box):
    # shared memory is not address space: on 5639c99 memfd pages went past RLIMIT_AS (here at most 600 MB)
    source = """
import ctypes, os
held, fds = 0, []
try:
    while held < (600 << 20):
        fd = os.memfd_create("m")
        os.write(fd, b"x" * (512 << 10))
        fds.append(fd)
        held += 512 << 10
except OSError as e:
    print("memfd", e.errno)
libc = ctypes.CDLL(None, use_errno=True)
print("shmget", libc.shmget(0, 1 << 20, 0o1600), ctypes.get_errno())
print("held", held)
"""
    r = box.run_python(source)
    assert "memfd 1" in r.stdout and "shmget -1 1" in r.stdout and "held 0" in r.stdout, r


def test_the_launcher_carries_the_limits_and_cannot_be_traced(box):
    # on 5639c99 bwrap's pid 1 was bwrap itself, without the limits: PTRACE_ATTACH to it (or a write to its
    # /proc/1/mem), then fork from inside it with no memory or process limit
    source = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
parent = os.getppid()
print("ppid", parent)
print("attach", libc.ptrace(16, parent, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
try:
    open("/proc/%d/mem" % parent, "r+b")
    print("mem open")
except OSError as e:
    print("mem", type(e).__name__)
try:
    print([l for l in open("/proc/%d/limits" % parent) if l.startswith("Max address space")])
except OSError as e:
    print("limits", type(e).__name__)
"""
    r = box.run_python(source)
    assert "attach -1 1" in r.stdout and "mem PermissionError" in r.stdout, r
    if box.isolation != "none":
        assert "ppid 1" in r.stdout, r  # the launcher is the first process of the sandbox
    if "limits PermissionError" not in r.stdout:  # readable: the launcher's own limits
        assert str(LIMITS.memory_mb << 20) in r.stdout, r


def test_memory_of_the_whole_sandbox_is_capped_where_a_cgroup_is_delegated(bwrap_box):
    if not bwrap_box.protections()["sandbox_memory_cgroup"]:
        assert "sandbox_memory_cgroup" in bwrap_box.missing()
        pytest.skip("no delegated cgroup here: per-process RLIMIT_AS only (reported missing)")
    # 6 processes x 100 MB touched, each under its RLIMIT_AS (256 MB), together past the sandbox's cgroup
    source = """
import os
kids = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        b = bytearray(100 << 20)
        for i in range(0, len(b), 4096):
            b[i] = 1
        import time; time.sleep(1.5)
        os._exit(0)
    kids.append(pid)
print(sorted(os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids))
"""
    r = bwrap_box.run_python(source)
    codes = eval(r.stdout.strip())
    assert codes.count(-signal.SIGKILL) >= 2, r  # the cgroup's OOM killer stopped the excess


def test_weak_modes_refuse_without_landlock(monkeypatch):
    # without Landlock nothing would keep rows out of each other's directories: refused, not run weaker still
    monkeypatch.setattr("distill.verify.sandbox.landlock_abi", lambda: 0)
    for weak in ("weak-unshare", "weak-none"):
        with pytest.raises(SandboxError, match="needs Landlock"):
            Sandbox(LIMITS, isolation=weak).describe()


def test_seccomp_filter_layout():
    x86, arm = seccomp_filter("x86_64"), seccomp_filter("aarch64")
    assert seccomp_filter("riscv64") is None  # unknown: no filter, reported missing
    for prog, arch in ((x86, 0xC000003E), (arm, 0xC00000B7)):
        assert len(prog) % 8 == 0 and len(prog) // 8 < 4096  # struct sock_filter[], under BPF_MAXINSNS
        insns = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
        assert insns[1][3] == arch and insns[-1] == (0x06, 0, 0, 0x7FFF0000)  # arch check first, allow last
        assert (0x15, 0, 1, 101 if arch == 0xC000003E else 117) in insns  # ptrace -> EPERM


def test_no_delegated_cgroup_is_reported_not_fatal(monkeypatch, tmp_path):
    monkeypatch.setattr(Cgroup, "ROOT", str(tmp_path / "nowhere"))
    cg = Cgroup(1 << 28, 8)
    assert not cg.available() and cg.enter_argv(["true"]) == ["true"]
    cg.close()


def test_distill_verify_refuses_code_rows_without_bubblewrap(tmp_path):
    # through the CLI: one line naming the setting, rc 2, nothing written (5639c99 judged the rows in `none`)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    tests = json.dumps([{"input": "", "output": "3"}])
    src.write_text(json.dumps({"id": "a", "completion": _code("print(3)"), "answer": tests, "task": "code"}) + "\n")
    env = {**os.environ, "PATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "distill.cli", "verify", "--input", str(src), "--output", str(out), "--verifier", "code"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and f"{SETTING}: weak-unshare or weak-none" in r.stderr
    assert not out.exists()
