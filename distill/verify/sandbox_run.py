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
try:
    pid = os.fork()
except OSError as e:
    sys.stderr.write("sandbox launcher: fork failed: %s\n" % e)
    os._exit(126)
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


def execute(cmd: list[str], stdin_path: str, cwd: str, env: dict, wall_s: float, output_bytes: int, uid: int | None = None) -> RunResult:
    """Run `cmd` in its own session with stdin from `stdin_path`, as `uid` when given; kill its process group
    after `wall_s` or once stdout + stderr exceed `output_bytes`."""
    cap = output_bytes
    ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    start = time.monotonic()
    with open(stdin_path, "rb") as stdin:
        proc = subprocess.Popen(
            cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
            start_new_session=True, close_fds=True, **ids,
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


def sweep(host: str) -> None:
    """Best effort without a pid namespace: kill what escaped the process group (setsid) and still carries
    this run's HOME or sits in its directory. A program that also changes both is not found."""
    marker = f"HOME={host}".encode()
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
