"""Training on several processes: when a stage goes through `accelerate launch`, the command, and what the
launched processes share (one main process does the one-off work; every process gets its result).

A stage whose hardware section asks for several GPUs (students[].hardware, teacher.hardware) trains under
`accelerate launch` started from the stage itself (`launch_stage`), which waits for the processes and leaves
the manifest to the main one; one GPU or none trains in-process. `distill launch` (distill/launch.py) builds
the same command for a node of a multi-node run.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from distill.config.hardware import HardwareConfig

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def accelerate_config(hw: HardwareConfig, field: str = "students[].hardware") -> Path:
    """The accelerate config file: the recipe's own path (relative to the working directory or the
    repository), else configs/accelerate/<strategy>.yaml."""
    name = hw.accelerate_config or f"configs/accelerate/{hw.strategy}.yaml"
    for base in (Path.cwd(), REPO_ROOT):
        p = (base / name).resolve()
        if p.is_file():
            return p
    raise FileNotFoundError(f"accelerate config {name!r} ({field}.accelerate_config) not found")


def accelerate_argv(hw: HardwareConfig, *, nodes: int, per_node: int, port: int, machine_rank: str = "0",
                    main_process_ip: str = "127.0.0.1", field: str = "students[].hardware") -> list[str]:
    """`accelerate launch ...` up to the program: config file, machines, processes, rendezvous."""
    cfg = accelerate_config(hw, field)
    cfg_arg = str(cfg.relative_to(Path.cwd())) if cfg.is_relative_to(Path.cwd()) else str(cfg)
    cmd = ["accelerate", "launch", "--config_file", cfg_arg, "--num_machines", str(nodes), "--num_processes", str(nodes * per_node)]
    if nodes > 1:
        return cmd + ["--machine_rank", machine_rank, "--main_process_ip", main_process_ip, "--main_process_port", str(port), "--same_network"]
    # (no `--cpu`: accelerate then starts a single process; on a machine without GPUs the DDP and FSDP
    # configs run their processes on CPU over gloo, which is how the tests exercise this path)
    return cmd + ["--main_process_port", str(port)]


def cuda_devices() -> int:
    import torch  # heavy: only to count this machine's GPUs

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def distributed() -> bool:
    """Whether this process is one of several (accelerate launch and torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_processes(hw: HardwareConfig | None, field: str) -> int:
    """How many processes a stage trains on from `distill run` on this machine: 1 is in-process.

    `hardware.launch`: auto launches where CUDA shows more than one device (as many processes as the
    recipe's GPUs per node, at most those visible), always launches `gpus_per_node` processes (on CPU: gloo,
    the rehearsal), never stays in-process. Several nodes need `distill launch` on each node."""
    if hw is None or hw.launch == "never" or hw.gpus <= 1 or distributed():
        return 1
    visible = cuda_devices() if hw.launch == "auto" else hw.gpus_per_node
    if visible <= 1:
        return 1
    if hw.nodes > 1:
        raise ValueError(f"{field}.nodes is {hw.nodes}: `distill run` trains on this node only; start "
                         f"`distill launch --config RECIPE --nodes {hw.nodes}` on each node (--dry-run prints the command)")
    if visible < hw.gpus_per_node:
        log.warning("%s asks for %d GPUs per node, %d visible: training on %d processes (the global batch shrinks)",
                    field, hw.gpus_per_node, visible, visible)
    return min(hw.gpus_per_node, visible)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_stage(recipe, run_dir: Path, hw: HardwareConfig, processes: int, worker_args: list[str], field: str) -> None:
    """Run `python -m distill.launch <worker_args>` under `accelerate launch` on `processes` processes of
    this machine and wait; the recipe goes to the run directory (.launch/recipe.yaml) for the workers."""
    spec = Path(run_dir) / ".launch" / "recipe.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    cmd = accelerate_argv(hw, nodes=1, per_node=processes, port=free_port(), field=field)
    cmd += ["-m", "distill.launch", "--config", str(spec), "--run-dir", str(run_dir), *worker_args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    log.info("launching: %s", " ".join(cmd))
    free_memory()  # the launched processes need this process's GPU memory
    # the same launcher through this interpreter: `accelerate` need not be on PATH
    rc = subprocess.call([sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]], env=env)
    if rc != 0:
        raise RuntimeError(f"{' '.join(worker_args)}: `accelerate launch` on {processes} processes exited with {rc} (its output is above)")


def is_main_process() -> bool:
    return not distributed() or int(os.environ.get("RANK", "0")) == 0


def process_state():
    """accelerate's PartialState of this launched process. Without CUDA it must be asked for CPU processes:
    a plain PartialState() there sees no process group (each process believes it is the main one, alone)."""
    from accelerate import PartialState  # heavy (torch): only in a launched process

    return PartialState(cpu=cuda_devices() == 0)


def on_main_process(fn: Callable[[], T]) -> T:
    """`fn()` on the main process only; every process gets its result (broadcast), or its error."""
    if not distributed():
        return fn()
    from accelerate.utils import broadcast_object_list  # heavy (torch): only in a launched process

    state = process_state()
    box: list[Any] = [None]
    error = None
    if state.is_main_process:
        try:
            box = [("ok", fn())]
        except Exception as e:  # noqa: BLE001 - re-raised on every process, so none waits forever
            error, box = e, [("error", f"{type(e).__name__}: {e}")]
    broadcast_object_list(box, from_process=0)
    status, value = box[0]
    if error is not None:
        raise error
    if status == "error":
        raise RuntimeError(f"on the main process: {value}")
    return value


def free_memory() -> None:
    """Drop what a finished stage left (trainers and models sit in reference cycles) and hand the cached
    GPU memory back, so the next stage (or a launched process) has it."""
    gc.collect()
    import torch  # heavy: only after a stage that loaded a model

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
