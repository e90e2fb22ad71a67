"""The generation ledger and what it adds up to: tokens, engine time, GPU-hours and cost.

Every generated shard and every engine start is appended to a ledger (`_ledger-<host>-<pid>.jsonl`, one
file per process); the accounting sums them, so work done before a crash is counted too.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LEDGER_PREFIX = "_ledger-"  # _ledger-<host>-<pid>.jsonl


def ledger_path(out_dir: Path) -> Path:
    # one file per process: appends from several hosts to one file on a shared filesystem (NFS) can interleave
    return Path(out_dir) / f"{LEDGER_PREFIX}{socket.gethostname()}-{os.getpid()}.jsonl"


def ledger_append(out_dir: Path, event: dict) -> None:
    """One JSON line, appended and fsynced."""
    line = json.dumps(event | {"time": round(time.time(), 3), "host": socket.gethostname(), "pid": os.getpid()}) + "\n"
    fd = os.open(ledger_path(out_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(out_dir: Path) -> list[dict]:
    """Every process's events, oldest first."""
    events = []
    for path in sorted(Path(out_dir).glob(f"{LEDGER_PREFIX}*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill: the work it describes is redone anyway
                continue
    return sorted(events, key=lambda e: e.get("time", 0))


def ledger_totals(out_dir: Path) -> dict:
    """Everything this directory's generation ever cost, reruns and regenerated shards included."""
    ev = read_ledger(out_dir)
    shards = [e for e in ev if e.get("event") == "shard"]
    starts = [e for e in ev if e.get("event") == "engine_start"]
    return {
        "completion_tokens": sum(e.get("completion_tokens", 0) for e in shards),
        "prompt_tokens": sum(e.get("prompt_tokens", 0) for e in shards),
        "samples": sum(e.get("rows", 0) for e in shards),
        "engine_seconds": round(sum(e.get("engine_seconds", 0.0) for e in shards), 2),
        "engine_start_seconds": round(sum(e.get("seconds", 0.0) for e in starts), 2),
        "engine_starts": len(starts),
        "shards_written": len(shards),
    }


def accounting(out_dir: Path, *, gpus: int, cost, samples: int, correct: int | None = None) -> dict:
    """Totals from the ledger, GPU-hours (engine start + generation, × GPUs per engine) and cost.

    `cost` is a recipe `CostConfig`: GPU-hours × gpu_hour_usd plus tokens × API prices."""
    t = ledger_totals(out_dir)
    gpu_hours = gpus * (t["engine_seconds"] + t["engine_start_seconds"]) / 3600
    usd = (
        gpu_hours * cost.gpu_hour_usd
        + t["prompt_tokens"] / 1e6 * cost.input_usd_per_mtok
        + t["completion_tokens"] / 1e6 * cost.output_usd_per_mtok
    )
    out = {
        "total_completion_tokens": t["completion_tokens"],
        "total_prompt_tokens": t["prompt_tokens"],
        "total_engine_seconds": t["engine_seconds"],
        "total_engine_start_seconds": t["engine_start_seconds"],
        "engine_starts": t["engine_starts"],
        "gpus": gpus,
        "gpu_hours": round(gpu_hours, 6),
        "cost_usd": round(usd, 6),
        "cost_per_sample_usd": round(usd / samples, 8) if samples else None,
    }
    if correct is not None:
        out["cost_per_correct_sample_usd"] = round(usd / correct, 8) if correct else None
    return out
