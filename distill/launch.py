"""`distill launch`: the teacher or an sft stage on many GPUs and nodes under `accelerate launch`.

    distill launch --config recipes/r1-distill-qwen2.5-32b.yaml                 # one node, runs it
    distill launch --config R --nodes 4 --dry-run                               # prints the per-node command
    distill launch --config R --stage teacher                                   # the teacher (cold start + GRPO)

The command is built from the stage's `hardware` section (students[].hardware, teacher.hardware: GPUs per
node, nodes, strategy → the accelerate config under configs/accelerate/) and starts this module on every
process:

    accelerate launch --config_file configs/accelerate/zero3.yaml --num_machines N --num_processes N*G
        --machine_rank $MACHINE_RANK --main_process_ip $MAIN_PROCESS_IP --main_process_port 29500
        -m distill.launch --config R --stage sft --student S [--run-dir D] [key=value ...]

Each process runs the pipeline's own stage function (distill/stage_fns.py; same fingerprint, same
checkpoints, so a relaunch after a kill resumes from the last checkpoint) with a DistributedRun: only the
main process prepares the stage directory and writes the manifest; the trained model is saved through the
Trainer's gather (ZeRO-3 / FSDP shards) on every process (distill.training.common.save_trained). The stages
before it must have run: `distill merge --config R` for sft; the prompts stage, which this runs first, for
the teacher. `distill run` starts the same command itself when a stage's hardware asks for several GPUs
on this node (distill.training.distributed.launch_processes).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from functools import cached_property

from distill.config.hardware import HardwareConfig
from distill.config.recipe import Recipe, load_recipe
from distill.core.run import Run
from distill.core.storage import read_manifest
from distill.stage_fns import SUBDIRS, prompts_stage, sft_stage, teacher_stage
from distill.training.distributed import accelerate_argv, accelerate_config, process_state

__all__ = ["DistributedRun", "LAUNCHABLE", "accelerate_config", "format_command", "launch_command", "prepare", "run_worker", "stage_hardware", "student_of"]

DEFAULT_PORT = 29500
LAUNCHABLE = ("sft", "teacher")


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


def stage_hardware(recipe: Recipe, stage: str, student: str | None = None) -> tuple[HardwareConfig, str]:
    """The hardware section a launched stage trains on, and its field name for messages."""
    if stage == "teacher":
        if not recipe.teacher.enabled:
            raise ValueError("teacher.enabled is false: there is no teacher training to launch")
        if recipe.teacher.hardware is None:
            raise ValueError("teacher.hardware is not set: give it gpus_per_node, nodes and strategy (as students[].hardware) to launch the teacher")
        return recipe.teacher.hardware, "teacher.hardware"
    if stage != "sft":
        raise ValueError(f"distill launch runs the stages {', '.join(LAUNCHABLE)}, not {stage!r}")
    st = student_of(recipe, student)
    return st.hardware, f"students[{recipe.students.index(st)}].hardware"


def launch_command(config: str, recipe: Recipe, *, student: str | None = None, run_dir: str | None = None,
                   overrides: list[str] | None = None, nodes: int | None = None, gpus_per_node: int | None = None,
                   machine_rank: str = "${MACHINE_RANK}", main_process_ip: str = "${MAIN_PROCESS_IP}",
                   port: int = DEFAULT_PORT, stage: str = "sft") -> list[str]:
    """The `accelerate launch` argv for one node of a stage: the teacher, or a student's sft."""
    hw, field = stage_hardware(recipe, stage, student)
    cmd = accelerate_argv(hw, nodes=nodes or hw.nodes, per_node=gpus_per_node or hw.gpus_per_node, port=port,
                          machine_rank=machine_rank, main_process_ip=main_process_ip, field=field)
    cmd += ["-m", "distill.launch", "--config", config]
    cmd += ["--student", student_of(recipe, student).name] if stage == "sft" else ["--stage", stage]
    if run_dir:
        cmd += ["--run-dir", run_dir]
    return cmd + list(overrides or [])


def prepare(recipe: Recipe, stage: str, run_dir: str | None = None, nodes: int = 1) -> None:
    """What a launch needs before its processes start, run here once: the teacher's prompts stage. On
    several nodes each node runs `distill launch`, so nothing runs here: `distill prompts` first."""
    if stage == "teacher" and nodes == 1:
        prompts_stage(Run(recipe, run_dir))


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

    distributed = True

    @cached_property
    def _state(self):
        return process_state()

    def is_main_process(self) -> bool:
        return self._state.is_main_process

    def wait_for_everyone(self) -> None:
        self._state.wait_for_everyone()

    def manifest_extras(self) -> dict:
        return {"processes": self._state.num_processes}


def _finished(run: Run, stage: str, config: str) -> dict:
    m = read_manifest(run.dir / SUBDIRS[stage])
    if not m:
        raise SystemExit(f"distill launch: no finished {stage} stage in {run.dir / SUBDIRS[stage]}: "
                         f"run `distill {stage} --config {config}` first")
    return m


def run_worker(argv: list[str] | None = None) -> int:
    """What every launched process runs: the teacher stage, or the sft stage of one student."""
    p = argparse.ArgumentParser(prog="python -m distill.launch")
    p.add_argument("--config", required=True)
    p.add_argument("--stage", choices=LAUNCHABLE, default="sft")
    p.add_argument("--student")
    p.add_argument("--run-dir")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe = load_recipe(args.config, args.overrides)
    run = DistributedRun(recipe, args.run_dir)
    if args.stage == "teacher":
        label, m = "teacher", teacher_stage(run, _finished(run, "prompts", args.config))
    else:
        label = f"sft:{student_of(recipe, args.student).name}"
        m = sft_stage(run, _finished(run, "merge", args.config), student_of(recipe, args.student).name)
    if run.is_main_process():
        print(f"{label}: {'reused' if m['cached'] else 'trained'} -> {m.get('model')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_worker())
