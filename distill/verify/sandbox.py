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

This module picks the isolation and lays out each run; running the command itself (the launcher script, the
capped read-back, the process-group kill) is distill.verify.sandbox_run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass

from distill.verify.sandbox_run import CPU_EXIT, LAUNCHER, RunResult, bwrap_fs_args, execute, scrubbed_env, sweep

__all__ = ["CPU_EXIT", "ISOLATIONS", "NOBODY", "Limits", "RunResult", "Sandbox", "SandboxError"]

log = logging.getLogger(__name__)

ISOLATIONS = ("bwrap", "unshare", "none")
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
    tmpfs_mb: int = 64  # bwrap only: size of each private tmpfs (/tmp and the working directory)


class SandboxError(RuntimeError):
    """The sandbox itself could not run (no usable interpreter, a requested isolation is unavailable)."""


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
                f.write(LAUNCHER)
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
            env = scrubbed_env(work_dir, tmp_dir)
            wall_s = lim.wall_s if not probe else max(lim.wall_s, 10.0)
            result = execute(cmd, stdin_path, host, env, wall_s, lim.output_bytes, self.uid if self.dropping_uid else None)
            if mode == "none":
                sweep(host)
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
            *bwrap_fs_args(python),
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(mb), "--tmpfs", "/tmp",
            "--ro-bind", host, _BOX_CODE,
            "--size", str(mb), "--tmpfs", _BOX_WORK,
            "--chdir", _BOX_WORK,
            *launch,
        ]  # fmt: skip
