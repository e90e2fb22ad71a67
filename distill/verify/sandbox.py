"""Run untrusted Python (model-written solutions) with limits, for the `code` verifier.

Every run gets its own process group and temporary directory, a scrubbed environment (PATH, LANG, HOME,
TMPDIR and nothing else: no HF_TOKEN, no AWS_*), resource limits set inside the sandbox before the program
starts (CPU seconds, address space, processes, file size, open files), a wall-clock timeout that kills the
whole process group, and a cap on the output read back. On top of that, the best isolation this machine
allows (probed once per process, strongest first):

- `bwrap` (bubblewrap): new user, pid, network, ipc and uts namespaces; a read-only view of /usr and the
  interpreter only (no /home, /root, /etc secrets, no run directory); size-capped private tmpfs for /tmp and
  the working directory; the sandbox dies with its parent.
- `unshare` (util-linux): new network and pid namespaces (and a user namespace when not root), a private
  /proc; the filesystem is the host's, limited only by the sandbox's uid.
- `none`: limits only; no network or filesystem isolation.

Clusters may forbid namespaces; then the probe falls back and `Sandbox.describe()` names the protections
that are missing (the verify stage records them). When the caller is root, the program runs as `nobody`
(uid 65534): RLIMIT_NPROC does not apply to root, and a separate uid keeps it out of root's files and
processes even without namespaces (if `nobody` cannot run any interpreter, e.g. Python lives only under
/root, it runs as root instead and the process limit is reported missing). RLIMIT_NPROC counts a user's processes, not a sandbox's: inside a
fresh user namespace the kernel counts per namespace, so the limit is per sandbox; without one the launcher
allows the uid's current task count plus the limit.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

ISOLATIONS = ("bwrap", "unshare", "none")
NOBODY = 65534
CPU_EXIT = 128 + signal.SIGXCPU  # the launcher's exit status when the program ran out of CPU time
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Where things are inside a bwrap sandbox.
_BOX_CODE = "/box/code"  # read-only: the launcher, the program
_BOX_WORK = "/box/work"  # writable tmpfs: the program's working directory and HOME


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # whole run, including interpreter start
    cpu_s: int = 5  # per process (RLIMIT_CPU); SIGXCPU, then SIGKILL a second later
    memory_mb: int = 1024  # address space per process (RLIMIT_AS)
    nproc: int = 32  # processes and threads (RLIMIT_NPROC), launcher included
    fsize_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    nofile: int = 64  # open file descriptors (RLIMIT_NOFILE)
    output_bytes: int = 1 << 20  # stdout + stderr read back; more kills the run
    tmpfs_mb: int = 64  # bwrap only: size of each private tmpfs (/tmp and the working directory)


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


class SandboxError(RuntimeError):
    """The sandbox itself could not run (no usable interpreter, a requested isolation is unavailable)."""


# Runs inside the sandbox as the sandbox's uid: apply the limits, then fork the program and wait, so the
# program's parent is this launcher (never the verifier) and its death by signal is reported as 128+N.
_LAUNCHER = r'''
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


def _scrubbed_env(home: str, tmp: str) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home, "TMPDIR": tmp}


def _interpreter_prefix(python: str) -> str:
    """The directory tree an interpreter needs: `<prefix>/bin/python3.11` -> `<prefix>`."""
    return os.path.dirname(os.path.dirname(os.path.realpath(python)))


def _bwrap_fs_args(python: str) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = _interpreter_prefix(python)
    if prefix not in ("/usr", "/"):
        args += ["--ro-bind", prefix, prefix]
    # the dynamic linker's cache; nothing else from /etc (it can hold credentials)
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


_PROBED: dict[tuple, bool] = {}
_PROBE_LOCK = threading.Lock()


class Sandbox:
    """Runs Python programs under `limits` with the strongest `isolation` available (or the one named).

    `python`: the interpreter for programs (default: this one if the sandbox uid can run it, else
    /usr/bin/python3). `uid`: run programs as this uid; default `nobody` when the caller is root, else the
    caller's own (which cannot change it).
    """

    def __init__(self, limits: Limits | None = None, isolation: str = "auto", python: str | None = None, uid: int | None = None):
        if isolation not in ("auto", *ISOLATIONS):
            raise ValueError(f"unknown isolation {isolation!r} (known: auto, {', '.join(ISOLATIONS)})")
        self.limits = limits or Limits()
        self.requested = isolation
        self.python_requested = python
        self.uid = uid if uid is not None else (NOBODY if os.geteuid() == 0 else os.geteuid())
        self._uid_defaulted = uid is None
        self._mode: str | None = None
        self._python: str | None = None

    # --- isolation ------------------------------------------------------------------------------------

    @property
    def dropping_uid(self) -> bool:
        return self.uid != os.geteuid()

    def _user_namespace(self, mode: str) -> bool:
        """Does `mode` put the program in a fresh user namespace (so RLIMIT_NPROC counts per sandbox)?
        Root (not dropping its uid) needs none to unshare, and gets none."""
        return mode in ("bwrap", "unshare") and self.uid != 0

    def _resolve(self) -> tuple[str, str]:
        if self._mode is None:
            modes = ISOLATIONS if self.requested == "auto" else (self.requested,)
            pythons = [self.python_requested] if self.python_requested else list(
                dict.fromkeys([os.path.realpath(sys.executable), shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"])
            )
            errors = []
            for mode in modes:
                if mode == "bwrap" and not shutil.which("bwrap") or mode == "unshare" and not shutil.which("unshare"):
                    errors.append(f"{mode}: not installed")
                    continue
                for py in pythons:
                    ok, why = self._probe(mode, py)
                    if ok:
                        self._mode, self._python = mode, py
                        break
                    errors.append(f"{mode} with {py}: {why}")
                if self._mode:
                    break
            if self._mode is None and self._uid_defaulted and self.dropping_uid:
                # nobody cannot run any interpreter here (e.g. Python only under /root): run as the caller,
                # which loses the process limit and the separate uid (reported below)
                self.uid, self._uid_defaulted = os.geteuid(), False
                return self._resolve_again(errors)
            if self._mode is None:
                raise SandboxError("no usable sandbox: " + "; ".join(errors))
            missing = self.missing()
            if missing:
                tried = f" (stronger options failed: {'; '.join(errors)})" if errors else ""
                log.warning("sandbox: isolation %r, running as uid %d; missing protections: %s%s", self._mode, self.uid, ", ".join(missing), tried)
        return self._mode, self._python  # type: ignore[return-value]

    def _resolve_again(self, errors: list[str]) -> tuple[str, str]:
        try:
            return self._resolve()
        except SandboxError as e:
            raise SandboxError(f"{e}; as uid {NOBODY}: " + "; ".join(errors)) from None

    def _probe(self, mode: str, python: str) -> tuple[bool, str]:
        key = (mode, python, self.uid)
        with _PROBE_LOCK:
            if key in _PROBED:
                return _PROBED[key], "failed before"
            try:
                r = self._run(mode, python, [python, "-I", "-S", "-c", "print(6 * 7)"], "", probe=True)
                ok, why = r.stdout.strip() == "42", (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            except OSError as e:
                ok, why = False, str(e)
            _PROBED[key] = ok
            return ok, why

    @property
    def isolation(self) -> str:
        return self._resolve()[0]

    @property
    def python(self) -> str:
        return self._resolve()[1]

    def protections(self) -> dict[str, bool]:
        """Which protections are in force, by name."""
        mode = self.isolation
        ns = mode in ("bwrap", "unshare")
        return {
            "process_group_kill": True,
            "temp_dir": True,
            "scrubbed_env": True,
            "wall_timeout": True,
            "output_cap": True,
            "cpu_limit": True,
            "memory_limit": True,
            "file_size_limit": True,
            # RLIMIT_NPROC never applies to a process whose real uid is root
            "process_limit": self.uid != 0,
            "no_network": ns,
            "pid_isolation": ns,  # cannot see or signal host processes, nor read their /proc/<pid>/environ
            "readonly_filesystem": mode == "bwrap",  # only its own tmpfs is writable; no home dirs, no /etc
            "separate_uid": self.dropping_uid,  # root runs programs as nobody; other callers cannot
        }

    def missing(self) -> list[str]:
        """Protections not in force. A separate uid is not needed under bwrap: its mounts and pid namespace
        already keep the program away from the caller's files and processes."""
        redundant = {"separate_uid"} if self.isolation == "bwrap" else set()
        return [k for k, v in self.protections().items() if not v and k not in redundant]

    def describe(self) -> dict:
        return {
            "isolation": self.isolation,
            "python": self.python,
            "uid": self.uid,
            "process_limit_scope": "sandbox" if self._user_namespace(self.isolation) else "uid",
            "limits": asdict(self.limits),
            "protections": self.protections(),
            "missing": self.missing(),
        }

    def __getstate__(self) -> dict:  # resolved once in the parent, reused by pool workers
        if self._mode is None:
            try:
                self._resolve()
            except SandboxError:
                pass
        return self.__dict__.copy()

    # --- running --------------------------------------------------------------------------------------

    def run_python(self, source: str, stdin: str = "") -> RunResult:
        """Run `source` as a Python program with `stdin`; never raises for anything the program does."""
        mode, python = self._resolve()
        return self._run(mode, python, None, stdin, source=source)

    def _run(self, mode: str, python: str, argv: list[str] | None, stdin: str, source: str | None = None, probe: bool = False) -> RunResult:
        lim = self.limits
        # a uid we drop to must reach the directory: the caller's TMPDIR may sit inside a private home
        base = "/tmp" if self.dropping_uid and os.path.isdir("/tmp") else None
        host = tempfile.mkdtemp(prefix="distill-sandbox-", dir=base)
        try:
            in_box = mode == "bwrap"
            code_dir = _BOX_CODE if in_box else host
            work_dir = _BOX_WORK if in_box else host
            tmp_dir = "/tmp" if in_box else host
            with open(os.path.join(host, "launch.py"), "w") as f:
                f.write(_LAUNCHER)
            if source is not None:
                with open(os.path.join(host, "main.py"), "w", encoding="utf-8") as f:
                    f.write(source)
                argv = [python, "-I", os.path.join(code_dir, "main.py")]
            stdin_path = os.path.join(host, ".stdin")
            with open(stdin_path, "w", encoding="utf-8") as f:
                f.write(stdin)
            os.chmod(host, 0o755)
            if self.dropping_uid:
                for p in (host, *(os.path.join(host, n) for n in os.listdir(host))):
                    os.chown(p, self.uid, self.uid)
            cfg = {
                "argv": argv,
                "cpu_s": lim.cpu_s,
                "rlimits": {
                    "RLIMIT_CPU": lim.cpu_s,
                    "RLIMIT_AS": lim.memory_mb << 20,
                    "RLIMIT_FSIZE": lim.fsize_mb << 20,
                    "RLIMIT_NOFILE": lim.nofile,
                    "RLIMIT_CORE": 0,
                },
                "nproc": lim.nproc if self.uid != 0 else None,
                "nproc_per_namespace": self._user_namespace(mode),
            }
            launch = [python, "-I", "-S", os.path.join(code_dir, "launch.py"), json.dumps(cfg)]
            cmd = self._wrap(mode, python, host, launch)
            env = _scrubbed_env(work_dir, tmp_dir)
            result = self._execute(cmd, stdin_path, host, env, lim.wall_s if not probe else max(lim.wall_s, 10.0))
            if mode == "none":
                _sweep(host)
            return result
        finally:
            shutil.rmtree(host, ignore_errors=True)

    def _wrap(self, mode: str, python: str, host: str, launch: list[str]) -> list[str]:
        if mode == "none":
            return launch
        if mode == "unshare":
            user = ["--user", "--map-root-user"] if self.uid != 0 else []
            return ["unshare", *user, "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc", *launch]
        userns = ["--unshare-user", "--disable-userns"] if self.uid != 0 else ["--cap-drop", "ALL"]
        mb = self.limits.tmpfs_mb << 20
        return [
            "bwrap", "--unshare-all", *userns, "--die-with-parent", "--new-session",
            *_bwrap_fs_args(python),
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(mb), "--tmpfs", "/tmp",
            "--ro-bind", host, _BOX_CODE,
            "--size", str(mb), "--tmpfs", _BOX_WORK,
            "--chdir", _BOX_WORK,
            *launch,
        ]  # fmt: skip

    def _execute(self, cmd: list[str], stdin_path: str, cwd: str, env: dict, wall_s: float) -> RunResult:
        cap = self.limits.output_bytes
        ids = {"user": self.uid, "group": self.uid, "extra_groups": []} if self.dropping_uid else {}
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
                    _kill_group(proc.pid)  # stragglers the program left behind in its group
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
            _kill_group(proc.pid)
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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep(host: str) -> None:
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
