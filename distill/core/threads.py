"""How many OpenMP/torch threads a run uses, and how they wait, chosen before torch starts its thread pools.

On a 2-core machine one CPU-bound neighbour made training 5-10x slower with 2 threads, not 2x: torch's
OpenMP here is GNU libgomp, every parallel region ends at a barrier, and the thread that waits there for
the one whose core the neighbour holds spins, burning the time the late thread needs. The default is
therefore every usable core with OpenMP threads that sleep when they wait (`OMP_WAIT_POLICY=PASSIVE`).

scripts/bench_threads.py measured the choices on our shared 2-core machine (load average 12-19, so every
setting ran "busy"): with the spinning default a tiny Llama's LoRA step took 2.8-4.6 s against 0.06-0.19 s
with passive waits (GOMP_SPINCOUNT=0 and Intel OpenMP with KMP_BLOCKTIME=0 did as well); on a 6-layer
SmolLM2-shaped model, 2 passive threads took 3.4 s a step beside the benchmark's own busy neighbour and
1 thread (the cores free at start) 6.6 s. Fewer threads only gave up the cores' share, so the thread
count stays at the cores; `free_cores` is what the benchmark compares it with.

Precedence: the recipe's `threads`, then OMP_NUM_THREADS from the environment, then the usable cores; a
wait policy set in the environment is kept.
"""

from __future__ import annotations

import os
import time
from typing import Mapping


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_env(recipe_threads: int | None, env: Mapping[str, str], cores: int) -> dict[str, str]:
    """The variables to set: OMP_NUM_THREADS (the recipe's, else an explicit environment value, else the
    cores) and a passive OpenMP wait policy unless the environment already names one."""
    out: dict[str, str] = {}
    if recipe_threads:
        out["OMP_NUM_THREADS"] = str(recipe_threads)
    elif not env.get("OMP_NUM_THREADS"):
        out["OMP_NUM_THREADS"] = str(max(1, cores))
    if not env.get("OMP_WAIT_POLICY"):
        out["OMP_WAIT_POLICY"] = "PASSIVE"
    return out


def choose_threads(recipe_threads: int | None = None) -> dict[str, str]:
    """Apply `thread_env` to this process's environment; return what was set."""
    chosen = thread_env(recipe_threads, os.environ, usable_cores())
    os.environ.update(chosen)
    return chosen


# --- what the benchmark compares the default with: the cores free when a run starts ----------------------------


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
    """Cores kept busy by other processes: /proc/stat over `interval` seconds (this process sleeps meanwhile),
    capped by the 1-minute load average so that a short blip does not count; None where /proc is missing."""
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


def free_cores(cores: int, busy: float | None) -> int:
    """Cores left when neighbours keep `busy` cores busy (rounded to whole cores), at least one."""
    if busy is None:
        return cores
    return max(1, min(cores, cores - int(busy + 0.5)))
