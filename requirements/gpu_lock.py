"""Resolve and check the GPU lock (Linux x86_64, CUDA, CPython 3.11 and 3.12) with pip's own resolver.

    python requirements/gpu_lock.py lock                    # gpu.in -> gpu.lock (exact pins), then check it
    python requirements/gpu_lock.py check [--python 3.12]   # gpu.lock resolves, wheels only, and is complete

pip runs in dry-run mode for the target platform (`--platform ... --only-binary=:all: --target <tmp>`): nothing
is installed, no GPU is needed, the package registry is. One lock serves both Pythons; `check` resolves it for
each and fails unless pip would install exactly the lock's pins (no package missing, none at another version).

Platform: glibc >= 2.31 (llguidance, a vLLM dependency, ships manylinux_2_31 wheels only; Ubuntu 20.04+,
Debian 11+, RHEL 9). pip does not widen `--platform manylinux_2_31_x86_64` to the older manylinux tags most
wheels carry, so every tag down to manylinux1 is passed.

This machine's pip configuration may add a local find-links folder (a CPU torch 2.13.0+cpu wheel would satisfy
`torch==2.13.0`) and a constraints file: the resolution ignores pip's configuration files and those variables.
Set PIP_INDEX_URL to resolve against a mirror.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "gpu.lock"
SOURCE = HERE / "gpu.in"
BUILD = HERE / "gpu-build.txt"
PYTHONS = ("3.11", "3.12")
GLIBC_MINOR = 31
TIMEOUT_S = 900


class ResolveError(RuntimeError):
    pass


def platforms() -> list[str]:
    tags = [f"manylinux_2_{m}_x86_64" for m in range(GLIBC_MINOR, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def pip_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.setdefault("PIP_DEFAULT_TIMEOUT", "60")
    return env


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a lock (comments and blank lines skipped), keyed by normalised name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{path.name}: {line!r} is not an exact `name==version` pin")
            pins[norm(name.split("[")[0])] = version.strip()
    return pins


def resolve(requirements: Path, python: str, timeout: float = TIMEOUT_S) -> dict[str, tuple[str, str]]:
    """What pip would install from `requirements` on Linux x86_64 for CPython `python`, wheels only:
    {normalised name: (name as published, version)}. Raises ResolveError with pip's own message."""
    with tempfile.TemporaryDirectory(prefix="gpu-lock-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "--target", str(Path(tmp) / "target"),
               "--report", str(report), "--quiet", "--disable-pip-version-check", "-r", str(requirements)]
        for tag in platforms():
            cmd += ["--platform", tag]
        try:
            proc = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ResolveError(f"pip did not resolve {requirements.name} for Python {python} within {timeout:.0f} s "
                               "(is the package registry reachable?)") from e
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise ResolveError(f"{requirements.name} does not resolve for Linux x86_64 / CPython {python} "
                               f"(wheels only):\n{tail}")
        items = json.loads(report.read_text())["install"]
    return {norm(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in items}


def check(python: str, lock: Path = LOCK, timeout: float = TIMEOUT_S) -> int:
    """Resolve the lock for `python`; raise ResolveError unless pip would install exactly its pins."""
    pins = read_pins(lock)
    got = resolve(lock, python, timeout)
    extra = sorted(f"{n}=={v}" for k, (n, v) in got.items() if k not in pins)
    missing = sorted(k for k in pins if k not in got)
    other = sorted(f"{k}: lock {pins[k]}, pip {got[k][1]}" for k in pins if k in got and got[k][1] != pins[k])
    if extra or missing or other:
        raise ResolveError(f"{lock.name} is not a complete, consistent set for CPython {python}: "
                           f"pulled in {extra or 'nothing'}; not installed {missing or 'none'}; "
                           f"at another version {other or 'none'}")
    return len(pins)


HEADER = """\
# GPU machines: Linux x86_64 (glibc >= 2.31), CUDA 13 (NVIDIA driver >= 580), CPython 3.11 and 3.12.
# The complete resolved set of requirements/gpu.in, wheels only, exact pins; one lock for both Pythons.
# Generated by `python requirements/gpu_lock.py lock` (pip's resolver, dry run for that platform); checked by
# tests/test_gpu_env.py. Install with scripts/setup-gpu.sh (`make setup-gpu`): torch first, then this file
# with --no-deps, then requirements/gpu-build.txt (the sdist-only pins, built on the machine).
"""


def lock() -> None:
    got = resolve(SOURCE, PYTHONS[0])
    lines = [f"{name}=={version}" for name, version in sorted(got.values(), key=lambda nv: norm(nv[0]))]
    LOCK.write_text(HEADER + "\n".join(lines) + "\n")
    print(f"wrote {LOCK.name}: {len(lines)} pins (resolved for CPython {PYTHONS[0]})")
    for py in PYTHONS:
        print(f"CPython {py}: {check(py)} pins resolve as locked")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("lock", "check"))
    ap.add_argument("--python", nargs="+", default=list(PYTHONS), help="Python versions to check (default: both)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per resolution")
    args = ap.parse_args(argv)
    try:
        if args.command == "lock":
            lock()
        else:
            for py in args.python:
                print(f"CPython {py}: {check(py, timeout=args.timeout)} pins resolve as locked")
    except ResolveError as e:
        print(f"gpu_lock: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
