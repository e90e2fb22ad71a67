"""How many OpenMP/torch threads a run uses, chosen before torch starts its thread pools.

On a 2-core machine one CPU-bound neighbour made training 5-10x slower with 2 threads, not 2x: torch's
OpenMP (GNU libgomp here) keeps a thread per core, every parallel region ends at a barrier, and a thread
whose core is taken by the neighbour holds up the other, which spins while it waits. The default is
therefore the cores free when the run starts (sampled from /proc/stat for a fraction of a second, capped by
the 1-minute load average so a passing blip does not count), and OpenMP threads that sleep instead of spinning when they
wait (`OMP_WAIT_POLICY=PASSIVE`), which keeps a neighbour that arrives later from costing more than its
share. scripts/bench_threads.py measures the choices; its numbers are in docs/operations.md.

Precedence: the recipe's `threads`, then OMP_NUM_THREADS from the environment, then the free cores.
"""

from __future__ import annotations

import os
import time
from typing import Mapping


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies over all CPUs from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(interval: float = 0.25) -> float | None:
    """Cores kept busy by other processes: what /proc/stat shows over `interval` seconds (this process sleeps
    meanwhile), but no more than the 1-minute load average, so that a short blip at start (another command
    finishing) does not cost the run a core for hours; None where /proc is missing."""
    a = cpu_times()
    if a is None:
        return None
    time.sleep(interval)
    b = cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    sampled = (b[0] - a[0]) / (b[1] - a[1]) * usable_cores()
    try:
        return min(sampled, os.getloadavg()[0])
    except OSError:
        return sampled


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(cores: int, busy: float | None) -> int:
    """Cores left for the run: the cores neighbours keep busy, rounded to the nearest whole core, are taken."""
    if busy is None:
        return cores
    return max(1, min(cores, cores - int(busy + 0.5)))


def thread_env(recipe_threads: int | None, env: Mapping[str, str], cores: int, busy: float | None) -> dict[str, str]:
    """The variables to set: OMP_NUM_THREADS (recipe, else an explicit environment value, else the free
    cores) and a passive OpenMP wait policy unless the environment already says otherwise."""
    out: dict[str, str] = {}
    if recipe_threads:
        out["OMP_NUM_THREADS"] = str(recipe_threads)
    elif not env.get("OMP_NUM_THREADS"):
        out["OMP_NUM_THREADS"] = str(free_cores(cores, busy))
    if not env.get("OMP_WAIT_POLICY"):
        out["OMP_WAIT_POLICY"] = "PASSIVE"
    return out


def choose_threads(recipe_threads: int | None = None) -> dict[str, str]:
    """Apply `thread_env` to this process's environment (sampling the CPUs only when it has to); what was set."""
    sample = not recipe_threads and not os.environ.get("OMP_NUM_THREADS")
    chosen = thread_env(recipe_threads, os.environ, usable_cores(), busy_cores() if sample else None)
    os.environ.update(chosen)
    return chosen
