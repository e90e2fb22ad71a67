"""`distill launch`: the sft stage on many GPUs and nodes under `accelerate launch`.

    distill launch --config recipes/r1-distill-qwen2.5-32b.yaml                 # one node, runs it
    distill launch --config R --nodes 4 --dry-run                               # prints the per-node command

The command is built from the student's `hardware` section (GPUs per node, nodes, strategy → the
accelerate config under configs/accelerate/) and starts this module on every process:

    accelerate launch --config_file configs/accelerate/zero3.yaml --num_machines N --num_processes N*G
        --machine_rank $MACHINE_RANK --main_process_ip $MAIN_PROCESS_IP --main_process_port 29500
        -m distill.launch --config R --student S [--run-dir D] [key=value ...]

Each process runs the pipeline's own `sft_stage` (distill/stage_fns.py; same fingerprint, same checkpoints, so a relaunch after
a kill resumes from the last checkpoint); only the main process prepares the stage directory and writes
the manifest. The stages before sft (through merge) must have run: `distill merge --config R`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from functools import cached_property
from pathlib import Path

from distill.config.hardware import HardwareConfig
from distill.config.recipe import Recipe, load_recipe
from distill.core.run import Run
from distill.core.storage import read_manifest
from distill.stage_fns import SUBDIRS, sft_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 29500


def accelerate_config(hw: HardwareConfig) -> Path:
    """The accelerate config file: the recipe's own path (relative to the working directory or the
    repository), else configs/accelerate/<strategy>.yaml."""
    name = hw.accelerate_config or f"configs/accelerate/{hw.strategy}.yaml"
    for base in (Path.cwd(), REPO_ROOT):
        p = (base / name).resolve()
        if p.is_file():
            return p
    raise FileNotFoundError(f"accelerate config {name!r} (students[].hardware.accelerate_config) not found")


def student_of(recipe: Recipe, name: str | None):
    if name is None:
        if len(recipe.students) > 1:
            raise ValueError(f"the recipe has {len(recipe.students)} students: pick one with --student "
                             f"({', '.join(s.name for s in recipe.students)})")
        return recipe.students[0]
    for s in recipe.students:
        if s.name == name:
            return s
    raise ValueError(f"no student {name!r} in the recipe (students: {', '.join(s.name for s in recipe.students)})")


def launch_command(config: str, recipe: Recipe, *, student: str | None = None, run_dir: str | None = None,
                   overrides: list[str] | None = None, nodes: int | None = None, gpus_per_node: int | None = None,
                   machine_rank: str = "${MACHINE_RANK}", main_process_ip: str = "${MAIN_PROCESS_IP}",
                   port: int = DEFAULT_PORT) -> list[str]:
    """The `accelerate launch` argv for one node of the student's sft stage."""
    st = student_of(recipe, student)
    hw = st.hardware
    nodes = nodes or hw.nodes
    per_node = gpus_per_node or hw.gpus_per_node
    cfg = accelerate_config(hw)
    cfg_arg = str(cfg.relative_to(Path.cwd())) if cfg.is_relative_to(Path.cwd()) else str(cfg)
    cmd = ["accelerate", "launch", "--config_file", cfg_arg,
           "--num_machines", str(nodes), "--num_processes", str(nodes * per_node)]
    if nodes > 1:
        cmd += ["--machine_rank", machine_rank, "--main_process_ip", main_process_ip,
                "--main_process_port", str(port), "--same_network"]
    else:
        cmd += ["--main_process_port", str(port)]
    # (no `--cpu`: accelerate then starts a single process; on a machine without GPUs the DDP config
    # already runs its processes on CPU over gloo, which is how tests/test_plan.py exercises this path)
    cmd += ["-m", "distill.launch", "--config", config, "--student", st.name]
    if run_dir:
        cmd += ["--run-dir", run_dir]
    return cmd + list(overrides or [])


def format_command(cmd: list[str], nodes: int) -> str:
    text = shlex.join(cmd).replace("'${MACHINE_RANK}'", "${MACHINE_RANK}").replace("'${MAIN_PROCESS_IP}'", "${MAIN_PROCESS_IP}")
    if nodes <= 1:
        return text
    return (
        f"# run on each of the {nodes} nodes, with MACHINE_RANK = 0..{nodes - 1} and MAIN_PROCESS_IP = node 0's address;\n"
        "# under SLURM: srun --nodes=N --ntasks-per-node=1 bash -c 'MACHINE_RANK=$SLURM_NODEID "
        "MAIN_PROCESS_IP=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) <command>'\n" + text
    )


class DistributedRun(Run):
    """A Run whose stages execute on every process of an `accelerate launch`: the stage body (training)
    runs everywhere; clearing stale work, the started marker and the manifest are the main process's."""

    @cached_property
    def _state(self):
        from accelerate import PartialState  # heavy (torch): only inside a launched process

        return PartialState()

    def is_main_process(self) -> bool:
        return self._state.is_main_process

    def wait_for_everyone(self) -> None:
        self._state.wait_for_everyone()

    def manifest_extras(self) -> dict:
        return {"processes": self._state.num_processes}


def run_worker(argv: list[str] | None = None) -> int:
    """What every launched process runs: the sft stage of one student."""
    p = argparse.ArgumentParser(prog="python -m distill.launch")
    p.add_argument("--config", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--run-dir")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    recipe = load_recipe(args.config, args.overrides)
    run = DistributedRun(recipe, args.run_dir)
    merge_m = read_manifest(run.dir / SUBDIRS["merge"])
    if not merge_m:
        raise SystemExit(f"distill launch: no finished merge stage in {run.dir / SUBDIRS['merge']}: "
                         f"run `distill merge --config {args.config}` first")
    m = sft_stage(run, merge_m, student_of(recipe, args.student).name)
    if run.is_main_process():
        print(f"sft:{args.student}: {'reused' if m['cached'] else 'trained'} -> {m.get('model')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_worker())
