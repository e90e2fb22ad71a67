"""Kernel guards for distill.verify.sandbox beyond namespaces and rlimits.

- `seccomp_filter()`: a classic-BPF seccomp program (bwrap loads it with `--seccomp FD`, with no-new-privs)
  that makes the syscalls a solution never needs and an attacker would use fail with EPERM: ptrace and
  process_vm_* (no debugging of the sandbox's pid 1 to escape its limits), memfd_create / memfd_secret /
  shmget (anonymous shared memory outside RLIMIT_AS), io_uring (runs work outside the filter), bpf,
  perf_event_open, userfaultfd, keyrings, mounts and namespaces, module and kexec loading. Written by hand
  (no libseccomp binding is installed): x86_64 and aarch64; other architectures get None (reported missing).
  A foreign-architecture syscall (x32, i386 on x86_64) kills the process.
- `landlock_rules()`: the Landlock rules the launcher applies in the weak isolation modes (only the system
  directories and the run's program readable, only its working directory writable; see sandbox_run.LAUNCHER).
- `Cgroup`: a per-run memory + pids cgroup when this machine delegates one (cgroup v1 hierarchies we may
  write, or a cgroup v2 subtree with both controllers enabled); the sandbox's total memory (tmpfs and shared
  memory included) and task count are then capped as a whole.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shlex
import signal
import struct
import time
import uuid

__all__ = ["Cgroup", "landlock_abi", "landlock_rules", "seccomp_filter"]

# (x86_64, aarch64) numbers, from the kernel's unistd tables.
_BLOCKED = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "kcmp": (312, 272),
    "pidfd_getfd": (438, 438), "process_madvise": (440, 440),
    "memfd_create": (319, 279), "memfd_secret": (447, 447), "shmget": (29, 194), "mq_open": (240, 180),
    "userfaultfd": (323, 282), "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427), "bpf": (321, 280), "perf_event_open": (298, 241),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "setns": (308, 268), "unshare": (272, 97),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264), "fanotify_init": (300, 262),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "swapon": (167, 224), "swapoff": (168, 225),
    "acct": (163, 89), "quotactl": (179, 60), "syslog": (103, 116), "vhangup": (153, 58),
}  # fmt: skip
_ARCHES = {"x86_64": (0, 0xC000003E), "amd64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7), "arm64": (1, 0xC00000B7)}

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_EPERM = 1


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)  # struct sock_filter


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The compiled filter for this machine's architecture (struct sock_filter[]), or None when unknown."""
    arch = _ARCHES.get((machine or platform.machine()).lower())
    if arch is None:
        return None
    col, audit_arch = arch
    prog = [
        _insn(_LD_W_ABS, 4),  # seccomp_data.arch
        _insn(_JEQ_K, audit_arch, 1, 0),
        _insn(_RET_K, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0),  # seccomp_data.nr
    ]
    if col == 0:  # x32 syscalls carry bit 30 on x86_64
        prog += [_insn(_JGE_K, 0x40000000, 0, 1), _insn(_RET_K, _RET_KILL_PROCESS)]
    for nrs in _BLOCKED.values():
        prog += [_insn(_JEQ_K, nrs[col], 0, 1), _insn(_RET_K, _RET_ERRNO | _EPERM)]
    prog.append(_insn(_RET_K, _RET_ALLOW))
    return b"".join(prog)


def landlock_rules(readable: list[str], code_dir: str, writable: list[str]) -> list[list[str]]:
    """[path, access] pairs for the launcher: system paths and the run's own program readable, its working
    directory (and private /dev/shm) read-write, the harmless devices usable; nothing else is reachable."""
    rules = [[p, "read"] for p in [*readable, code_dir]]
    rules += [["/dev/null", "dev"], ["/dev/zero", "read"], ["/dev/urandom", "read"], ["/dev/random", "read"]]
    return rules + [[p, "rw"] for p in writable]


class Cgroup:
    """One run's cgroup (memory + pids), or `available() == False` when this machine delegates none.

    `enter_argv(argv)` prefixes a command so that it joins the cgroup before it starts (a /bin/sh that writes
    its own pid, then execs); `close()` kills what is left and removes it."""

    ROOT = "/sys/fs/cgroup"

    def __init__(self, memory_bytes: int, pids: int, owner: int | None = None):
        self.dirs: list[str] = []
        self.procs: list[str] = []
        try:
            self._make(memory_bytes, pids, owner)
        except OSError:
            self.close()
            self.dirs, self.procs = [], []

    def available(self) -> bool:
        return bool(self.procs)

    @classmethod
    def _own(cls, controller: str) -> str | None:
        """Our cgroup directory in the v1 hierarchy of `controller`, or ('') in the v2 unified hierarchy."""
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if controller and controller in ctrls.split(","):
                    d = os.path.join(cls.ROOT, controller) + path.rstrip("/")
                    return d if os.path.isdir(d) else None
                if not controller and ctrls == "":
                    for base in (cls.ROOT, os.path.join(cls.ROOT, "unified")):
                        if os.path.isfile(base + path.rstrip("/") + "/cgroup.subtree_control"):
                            return base + path.rstrip("/")
        return None

    def _make(self, memory_bytes: int, pids: int, owner: int | None) -> None:
        name = f"distill-sandbox-{uuid.uuid4().hex[:12]}"
        mem, pid = self._own("memory"), self._own("pids")
        if mem and pid:  # cgroup v1: one directory per hierarchy
            self._child(mem, name, {"memory.limit_in_bytes": memory_bytes, "memory.swappiness": 0}, "memory.limit_in_bytes")
            self._child(pid, name, {"pids.max": pids}, "pids.max")
        else:
            # v2 moves need write access at the common ancestor (ours): only without a uid change
            v2 = self._own("") if owner is None else None
            if not v2:
                return
            with open(os.path.join(v2, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
            if not {"memory", "pids"} <= set(enabled):
                return
            self._child(v2, name, {"memory.max": memory_bytes, "memory.swap.max": 0, "pids.max": pids}, "memory.max")
        if owner is not None:
            for p in self.procs:
                os.chown(p, owner, -1)

    _swept: set[str] = set()

    @classmethod
    def _sweep(cls, parent: str) -> None:
        """Once per process and parent: remove empty run cgroups over an hour old (their caller was killed)."""
        if parent in cls._swept:
            return
        cls._swept.add(parent)
        for name in os.listdir(parent):
            d = os.path.join(parent, name)
            try:
                if name.startswith("distill-sandbox-") and time.time() - os.stat(d).st_mtime > 3600:
                    os.rmdir(d)  # refused while it still holds a task
            except OSError:
                pass

    def _child(self, parent: str, name: str, settings: dict, required: str) -> None:
        self._sweep(parent)
        d = os.path.join(parent, name)
        os.mkdir(d)
        self.dirs.append(d)
        for key, value in settings.items():
            try:
                with open(os.path.join(d, key), "w") as f:
                    f.write(str(value))
            except OSError:
                if key == required:
                    raise
        self.procs.append(os.path.join(d, "cgroup.procs"))

    def enter_argv(self, argv: list[str]) -> list[str]:
        if not self.procs:
            return argv
        writes = " && ".join(f"echo $$ > {shlex.quote(p)}" for p in self.procs)
        return ["/bin/sh", "-c", f'{writes} && exec "$@"', "sh", *argv]

    def oom_killed(self) -> bool:
        """Did the memory limit kill something in this run?"""
        for d in self.dirs:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                try:
                    with open(os.path.join(d, name)) as f:
                        fields = dict(line.split() for line in f if len(line.split()) == 2)
                except OSError:
                    continue
                if int(fields.get(key, 0)):
                    return True
        return False

    def close(self) -> None:
        for d in self.dirs:
            for _ in range(100):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for p in f.read().split():
                            try:
                                os.kill(int(p), signal.SIGKILL)
                            except OSError:
                                pass
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # its last tasks are still exiting
        self.dirs = []


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers (0: none)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        v = libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(v), 0) if platform.machine().lower() in _ARCHES else 0
