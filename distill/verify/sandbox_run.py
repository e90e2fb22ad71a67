"""Running one sandboxed command for distill.verify.sandbox: the launcher script that applies the limits
inside the sandbox, the filesystem view bwrap gets, the scrubbed environment, and the capped read-back of
stdout/stderr with the process-group kill (and, without a pid namespace, the sweep for escaped processes).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

CPU_EXIT = 128 + signal.SIGXCPU  # the launcher's exit status when the program ran out of CPU time
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class RunResult:
    returncode: int | None  # the program's exit status; 128+N when it died of signal N; None if never reaped
    stdout: str
    stderr: str
    timed_out: bool  # the wall-clock or the CPU limit was hit
    output_truncated: bool  # output_bytes was exceeded and the run was killed
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_truncated


# Runs inside the sandbox as the sandbox's uid: apply the limits, then fork the program and wait, so the
# program's parent is this launcher (never the verifier) and its death by signal is reported as 128+N.
LAUNCHER = r'''
import json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])

def user_tasks(uid):
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/status" % p) as f:
                    st = f.read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in st.splitlines() if ":" in line)
            if int(fields.get("Uid", "-1 ").split()[0]) == uid:
                n += int(fields.get("Threads", "1").strip() or 1)
    return n

limits = dict(cfg["rlimits"])
if cfg["nproc"] is not None:
    # a user namespace counts its own processes only; otherwise the whole uid's count must fit under the limit
    base = 0 if cfg["nproc_per_namespace"] else user_tasks(os.getuid())
    limits["RLIMIT_NPROC"] = base + cfg["nproc"]
for name, value in limits.items():
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later if the program catches it
    resource.setrlimit(getattr(resource, name), (value, value + 1 if name == "RLIMIT_CPU" else value))

def fail(msg):
    sys.stderr.write("sandbox launcher: %s\n" % msg)
    os._exit(126)

def landlock(rules):
    # only the listed paths stay reachable, for this launcher and everything it starts; TCP, signals and
    # abstract unix sockets outside the sandbox are refused where the kernel's Landlock ABI has them
    import ctypes, stat, struct
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    sc = lambda *a: libc.syscall(*[ctypes.c_long(x) if isinstance(x, int) else x for x in a])
    abi = sc(444, None, 0, 1)
    if abi < 1:
        fail("Landlock is not available (errno %d)" % ctypes.get_errno())
    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    attr = struct.pack("=QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = sc(444, buf, len(attr), 0)
    if ruleset < 0:
        fail("landlock_create_ruleset: errno %d" % ctypes.get_errno())
    access = {"read": 1 | 4 | 8, "dev": 2 | 4, "rw": fs}
    file_rights = 1 | 2 | 4 | (1 << 14) | (1 << 15)
    for path, kind in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        allowed = access[kind] & fs & (~0 if stat.S_ISDIR(os.fstat(fd).st_mode) else file_rights)
        rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
        if sc(445, ruleset, 1, rule, 0) != 0:
            fail("landlock_add_rule %s: errno %d" % (path, ctypes.get_errno()))
        os.close(fd)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or sc(446, ruleset, 0) != 0:  # PR_SET_NO_NEW_PRIVS, restrict_self
        fail("landlock_restrict_self: errno %d" % ctypes.get_errno())
    os.close(ruleset)

if cfg.get("tmpfs"):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for path, size in cfg["tmpfs"]:
        opts = "size=%d,mode=%s" % (size, "1777" if path == "/dev/shm" else "700")
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", 2 | 4, opts.encode()) != 0:  # MS_NOSUID | MS_NODEV
            fail("tmpfs on %s: errno %d" % (path, ctypes.get_errno()))
if cfg.get("cwd"):
    os.chdir(cfg["cwd"])  # after the mounts: the tmpfs, not the directory under it
if cfg.get("landlock"):
    landlock(cfg["landlock"])
if cfg.get("undumpable"):
    # the sandbox's pid 1: its children (same uid, no capabilities) may not open its /proc/1/mem
    import ctypes
    if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        fail("prctl(PR_SET_DUMPABLE) failed")
if cfg.get("seccomp"):
    # the weak modes load the filter bwrap gets with --seccomp (distill.verify.sandbox_guard), last
    import ctypes
    class FProg(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = bytes.fromhex(cfg["seccomp"])
    insns = ctypes.create_string_buffer(prog, len(prog))
    fprog = FProg(len(prog) // 8, ctypes.cast(insns, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # NO_NEW_PRIVS, SET_SECCOMP
        fail("seccomp filter: errno %d" % ctypes.get_errno())
try:
    pid = os.fork()
except OSError as e:
    fail("fork failed: %s" % e)
if pid == 0:
    try:
        os.execv(cfg["argv"][0], cfg["argv"])
    finally:
        os._exit(127)
while True:
    try:
        _, status, usage = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
cpu = usage.ru_utime + usage.ru_stime
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= cfg["cpu_s"]):
        os._exit(CPU_EXIT)
    os._exit(128 + sig)
os._exit(os.WEXITSTATUS(status))
'''.replace("CPU_EXIT", str(CPU_EXIT))


def scrubbed_env(home: str, tmp: str) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home, "TMPDIR": tmp}


def interpreter_prefix(python: str) -> str:
    """The directory tree an interpreter needs: `<prefix>/bin/python3.11` -> `<prefix>`."""
    return os.path.dirname(os.path.dirname(os.path.realpath(python)))


def system_paths(python: str) -> list[str]:
    """What a program may read: the system's binaries and libraries, the interpreter's tree, the linker cache."""
    tops = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", interpreter_prefix(python), "/etc/ld.so.cache"]
    return [p for p in dict.fromkeys(tops) if os.path.exists(p)]


def bwrap_fs_args(python: str) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = interpreter_prefix(python)
    if prefix not in ("/usr", "/"):
        args += ["--ro-bind", prefix, prefix]
    # the dynamic linker's cache; nothing else from /etc (it can hold credentials)
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def execute(
    cmd: list[str], stdin_path: str, cwd: str, env: dict, wall_s: float, output_bytes: int, uid: int | None = None, pass_fds: tuple = ()
) -> RunResult:
    """Run `cmd` in its own session with stdin from `stdin_path`, as `uid` when given; kill its process group
    after `wall_s` or once stdout + stderr exceed `output_bytes`."""
    cap = output_bytes
    ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    start = time.monotonic()
    with open(stdin_path, "rb") as stdin:
        proc = subprocess.Popen(
            cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
            start_new_session=True, close_fds=True, pass_fds=pass_fds, **ids,
        )  # fmt: skip
    out = {1: bytearray(), 2: bytearray()}
    timed_out = truncated = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, 1)
    sel.register(proc.stderr, selectors.EVENT_READ, 2)
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now - start > wall_s:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                kill_group(proc.pid)  # stragglers the program left behind in its group
            if exited_at is not None and now - exited_at > 0.5:
                break  # something outside the group holds the pipes open (an escaped descendant)
            for key, _ in sel.select(timeout=0.05):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                out[key.data] += chunk
                if len(out[1]) + len(out[2]) > cap:
                    truncated = True
                    break
            if truncated:
                break
    finally:
        kill_group(proc.pid)
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
    if rc == CPU_EXIT:
        timed_out = True
    elif rc is not None and rc < 0:
        rc = 128 - rc  # the wrapper itself died of a signal (our kill): report it like a shell does
    return RunResult(
        rc,
        out[1][:cap].decode("utf-8", "replace"),
        out[2][:cap].decode("utf-8", "replace"),
        timed_out,
        truncated,
        round(time.monotonic() - start, 3),
    )


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def sweep(host: str, home: str) -> None:
    """Best effort without a pid namespace (and without a cgroup, which kills all of a run's tasks): kill what
    escaped the process group (setsid) and still carries this run's HOME or sits in its directory. A program
    that also changes both is not found."""
    marker = f"HOME={home}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                hit = marker in f.read().split(b"\0")
            hit = hit or os.readlink(f"/proc/{pid}/cwd").startswith(host)
        except OSError:
            continue
        if hit:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
