"""Run untrusted Python (model-written solutions) with limits, for the `code` verifier.

Every run gets its own process group and private directory, a scrubbed environment (PATH, LANG, HOME,
TMPDIR and nothing else: no HF_TOKEN, no AWS_*), resource limits set inside the sandbox before the program
starts (CPU seconds, address space, processes, file size, open files), a wall-clock timeout that kills the
whole process group, a cap on the output read back, and, where this machine delegates one, a cgroup that
caps the whole sandbox's memory (tmpfs and shared memory included) and tasks. Isolation (`isolation`):

- `auto` / `bwrap` (bubblewrap), the only mode used unless a recipe opts out: new user, pid, network, ipc,
  uts and cgroup namespaces; a read-only view of /usr and the interpreter only (no /home, /root, /etc
  secrets, no run directory, no verify input); size-capped private tmpfs for /tmp, /dev/shm and the working
  directory, the root and /dev read-only; the launcher that applies the limits is the sandbox's pid 1 (so
  nothing in the sandbox runs without them) and cannot be debugged (not dumpable, and a seccomp filter makes
  ptrace, process_vm_*, memfd_create, SysV shm, io_uring, bpf, mounts and namespaces fail); the sandbox
  dies with its parent. When bwrap is not usable, the sandbox refuses to run (SandboxError naming
  `verify.code.isolation`) instead of silently running weaker.
- `weak-unshare` (opt-in; util-linux unshare): new network (IP only: path unix sockets of the host stay
  reachable), pid, mount, ipc and uts namespaces; size-capped tmpfs on the working directory and /dev/shm;
  the Landlock fence and seccomp filter below.
- `weak-none` (opt-in): the Landlock fence, the seccomp filter and the limits only; the working directory is
  on the host's disk (each file under RLIMIT_FSIZE, their number unbounded), no /dev/shm, the host's network.

The Landlock fence (kernel 5.13+, required by both weak modes): only the system directories and the run's
program are readable and only its working directory is writable, so a solution can neither read the answer
key nor write another row's program; where the kernel's ABI has them, TCP, signals and abstract unix sockets
outside the run are refused too. Both weak modes load the same seccomp filter from the launcher. `Sandbox.protections()` reports what holds and `describe()` what is missing (the verify stage
records it). When the caller is root, the program runs as `nobody` (uid 65534): RLIMIT_NPROC does not apply
to root (if `nobody` cannot run any interpreter, e.g. Python lives only under /root, it runs as root instead
and the process limit is reported missing). RLIMIT_NPROC counts a user's processes: inside a fresh user
namespace per sandbox, otherwise the launcher allows the uid's current task count plus the limit.

This module picks the isolation and lays out each run; running the command itself (the launcher script, the
capped read-back, the process-group kill) is distill.verify.sandbox_run, the kernel guards (seccomp filter,
Landlock rules, cgroup) distill.verify.sandbox_guard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass

from distill.verify.sandbox_guard import Cgroup, landlock_abi, landlock_rules, seccomp_filter
from distill.verify.sandbox_run import CPU_EXIT, LAUNCHER, RunResult, bwrap_fs_args, execute, scrubbed_env, sweep, system_paths

__all__ = ["CPU_EXIT", "ISOLATIONS", "NOBODY", "SETTING", "WEAK", "Limits", "RunResult", "Sandbox", "SandboxError"]

log = logging.getLogger(__name__)

ISOLATIONS = ("bwrap", "unshare", "none")  # the modes, strongest first
WEAK = {"weak-unshare": "unshare", "weak-none": "none"}  # the opt-in names of the weaker modes
SETTING = "verify.code.isolation"  # the recipe setting that picks the mode
NOBODY = 65534

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
    tmpfs_mb: int = 64  # bwrap only: size of each private tmpfs (/tmp, /dev/shm and the working directory)


class SandboxError(RuntimeError, ValueError):
    """The sandbox itself could not run (no usable interpreter, a requested isolation is unavailable). A
    ValueError too: the configured `verify.code.isolation` cannot be honoured here (the CLI's one-line error)."""


def _no_bwrap(errors: list[str]) -> str:
    return (
        f"code verification needs bubblewrap (bwrap): install it, or opt into weaker isolation with {SETTING}:"
        f" weak-unshare or weak-none ({'; '.join(errors)})"
    )


_PROBED: dict[tuple, tuple[bool, str]] = {}
_PROBE_LOCK = threading.Lock()


class Sandbox:
    """Runs Python programs under `limits` with `isolation`: `auto`/`bwrap` (bubblewrap or SandboxError), or
    one of the weaker modes by its opt-in name (`weak-unshare`, `weak-none`).

    `python`: the interpreter for programs (default: this one if the sandbox uid can run it, else
    /usr/bin/python3). `uid`: run programs as this uid; default `nobody` when the caller is root, else the
    caller's own (which cannot change it). `cgroup`: cap each run's memory and tasks in a cgroup of its own
    where this machine delegates one (False: rlimits only, as on machines without one).
    """

    def __init__(
        self, limits: Limits | None = None, isolation: str = "auto", python: str | None = None, uid: int | None = None, cgroup: bool = True
    ):
        if isolation in WEAK.values():
            raise ValueError(f"isolation {isolation!r} is weaker than bubblewrap: opt in by naming it weak-{isolation} ({SETTING})")
        if isolation not in ("auto", "bwrap", *WEAK):
            raise ValueError(f"unknown isolation {isolation!r} (known: auto, bwrap, {', '.join(WEAK)})")
        self.limits = limits or Limits()
        self.requested = isolation
        self.python_requested = python
        self.uid = uid if uid is not None else (NOBODY if os.geteuid() == 0 else os.geteuid())
        self._uid_defaulted = uid is None
        self._mode: str | None = None
        self._python: str | None = None
        self._cgroup_ok = False
        self.cgroup = cgroup

    # --- isolation ------------------------------------------------------------------------------------

    @property
    def dropping_uid(self) -> bool:
        return self.uid != os.geteuid()

    @staticmethod
    def _tool(mode: str) -> str | None:
        """The wrapper binary of `mode` as this caller's PATH finds it (run by that absolute path)."""
        return shutil.which(mode) if mode in ("bwrap", "unshare") else None

    def _user_namespace(self, mode: str) -> bool:
        """Does `mode` put the program in a fresh user namespace (so RLIMIT_NPROC counts per sandbox)?
        Root (not dropping its uid) needs none to unshare, and gets none."""
        return mode in ("bwrap", "unshare") and self.uid != 0

    def _resolve(self) -> tuple[str, str]:
        if self._mode is None:
            modes = (WEAK.get(self.requested, "bwrap"),)  # auto never falls back to a weaker mode
            pythons = [self.python_requested] if self.python_requested else list(
                dict.fromkeys([os.path.realpath(sys.executable), shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"])
            )
            errors = []
            for mode in modes:
                if mode != "none" and not self._tool(mode):
                    errors.append(f"{mode}: not installed")
                    continue
                if mode != "bwrap" and landlock_abi() < 1:
                    errors.append(f"{mode}: needs Landlock (Linux 5.13+ with landlock enabled) to keep rows apart")
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
            if self._mode is None and modes == ("bwrap",):
                raise SandboxError(_no_bwrap(errors))
            if self._mode is None:
                raise SandboxError("no usable sandbox: " + "; ".join(errors))
            if self.cgroup:
                trial = Cgroup(1 << 30, 64, self.uid if self.dropping_uid else None)
                self._cgroup_ok = trial.available()
                trial.close()
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
        key = (mode, self._tool(mode), python, self.uid)
        with _PROBE_LOCK:
            if key in _PROBED:
                return _PROBED[key]
            try:
                r = self._run(mode, python, [python, "-I", "-S", "-c", "print(6 * 7)"], "", probe=True)
                ok, why = r.stdout.strip() == "42", (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            except OSError as e:
                ok, why = False, str(e)
            _PROBED[key] = ok, why
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
        ns, bw = mode in ("bwrap", "unshare"), mode == "bwrap"
        fence = 0 if bw else landlock_abi()  # the weak modes' Landlock ABI (their resolve required one)
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
            # the limits are set in the launcher, which is the first process of the sandbox (bwrap's pid 1)
            "limits_on_every_process": True,
            "sandbox_memory_cgroup": self._cgroup_ok,  # memory (tmpfs, shared memory) and tasks of the whole run
            "private_directory": True,  # no other row can write it (a tmpfs of its own, or Landlock)
            "host_files_hidden": True,  # the run directory and verify input (the answer key) are unreadable
            "readonly_filesystem": True,  # only its own directory (and bwrap's capped /tmp, /dev/shm) is writable
            # weak-none writes to the host's disk (each file under RLIMIT_FSIZE); unshare mounts capped tmpfs
            "capped_writable_mounts": ns,
            "no_network": bw,  # unshare's network namespace leaves the host's path unix sockets reachable
            "no_ip_network": ns,
            "pid_isolation": ns,  # cannot see or signal host processes, nor read their /proc/<pid>/environ
            "no_signals_out": ns or fence >= 6,
            # the seccomp filter (every mode, on x86_64 and aarch64); Landlock also keeps ptrace inside the row
            "no_ptrace": seccomp_filter() is not None or fence >= 1,
            "shared_memory_bounded": seccomp_filter() is not None or self._cgroup_ok,  # memfd, SysV shm
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
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, host, ignore_errors=True)
            in_box = mode == "bwrap"
            code_dir = _BOX_CODE if in_box else host
            work_dir = _BOX_WORK if in_box else os.path.join(host, "work")  # weak modes: writable, the rest read-only
            tmp_dir = "/tmp" if in_box else work_dir
            if not in_box:
                os.mkdir(work_dir, 0o700)
            with open(os.path.join(host, "launch.py"), "w") as f:
                f.write(LAUNCHER)
            if source is not None:
                with open(os.path.join(host, "main.py"), "w", encoding="utf-8") as f:
                    f.write(source)
                argv = [python, "-I", os.path.join(code_dir, "main.py")]
            stdin_path = os.path.join(host, ".stdin")
            with open(stdin_path, "w", encoding="utf-8") as f:
                f.write(stdin)
            os.chmod(host, 0o700)
            shm = ["/dev/shm"] if mode == "unshare" and os.path.isdir("/dev/shm") else []
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
                # weak modes: only the system paths and this run's directory are reachable (Landlock)
                "landlock": None if in_box else landlock_rules(system_paths(python), host, [work_dir, *shm]),
                # weak-unshare: its mount namespace gets size-capped tmpfs on the working directory and /dev/shm
                "tmpfs": [[p, lim.tmpfs_mb << 20] for p in [work_dir, *shm]] if mode == "unshare" else [],
                "cwd": None if in_box else work_dir,
                "undumpable": True,
            }
            bpf = seccomp_filter()
            if bpf is not None and not in_box:
                cfg["seccomp"], bpf = bpf.hex(), None  # the launcher loads it; bwrap loads it for its own
            launch = [python, "-I", "-S", os.path.join(code_dir, "launch.py"), json.dumps(cfg)]
            if bpf is not None:
                filt = stack.enter_context(tempfile.TemporaryFile())
                filt.write(bpf)
                filt.flush()
                filt.seek(0)
            cmd = self._wrap(mode, python, host, launch, filt.fileno() if bpf is not None else None)
            if self._cgroup_ok:  # the whole sandbox: processes' memory, tmpfs and shared memory pages, tasks
                total = (lim.memory_mb + 3 * lim.tmpfs_mb) << 20  # one process's worth plus the three tmpfs
                cg = Cgroup(total, lim.nproc + 4, self.uid if self.dropping_uid else None)
                stack.callback(cg.close)
                cmd = cg.enter_argv(cmd)
            env = scrubbed_env(work_dir, tmp_dir)
            wall_s = lim.wall_s if not probe else max(lim.wall_s, 10.0)
            fds = (filt.fileno(),) if bpf is not None else ()
            result = execute(cmd, stdin_path, host, env, wall_s, lim.output_bytes, self.uid if self.dropping_uid else None, fds)
            if mode == "none":
                sweep(host, work_dir)
            return result

    def _wrap(self, mode: str, python: str, host: str, launch: list[str], seccomp_fd: int | None = None) -> list[str]:
        if mode == "none":
            return launch
        if mode == "unshare":
            user = ["--user", "--map-root-user"] if self.uid != 0 else []
            return [self._tool(mode) or "unshare", *user, "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc", *launch]
        userns = ["--unshare-user", "--disable-userns"] if self.uid != 0 else ["--cap-drop", "ALL"]
        mb = str(self.limits.tmpfs_mb << 20)
        seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
        # the launcher is pid 1 (--as-pid-1): no process of the sandbox runs without its limits; every writable
        # mount is a size-capped tmpfs, the root and /dev are read-only
        return [
            self._tool(mode) or "bwrap", "--unshare-all", *userns, "--die-with-parent", "--new-session", "--as-pid-1",
            *bwrap_fs_args(python),
            "--proc", "/proc", "--dev", "/dev",
            "--size", mb, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", mb, "--tmpfs", "/tmp",
            "--ro-bind", host, _BOX_CODE,
            "--size", mb, "--tmpfs", _BOX_WORK,
            "--chdir", _BOX_WORK, *seccomp, "--remount-ro", "/",
            *launch,
        ]  # fmt: skip
