"""The pipeline's stages in order: the one table the pipeline loop, the CLI's stage commands and the Prefect
flows (one flow per stage, the progress denominator) all read.

    prompts ─▶ teacher ─▶ sample ─▶ verify ─▶ curate ─▶ select ─▶ merge ─▶ sft (per student) ─▶ eval ─▶ report ─▶ publish

A stage's `inputs` name the stages whose manifests it is called with, in order: a per-student stage's
name gives {student: manifest}, ALL gives every manifest so far. A per-student stage runs once per student
as `<name>:<student>`, with the student's name after its inputs. A stage that is not `enabled` for a recipe
is skipped (and not counted); `distill <name>` stops after it all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from distill.config.recipe import Recipe
from distill.engines.factory import gpus_for
from distill.publish.hub import publish_stage
from distill.report.summary import write_report
from distill.stage_fns import (SUBDIRS, curate_stage, eval_stage, merge_stage, prompts_stage, sample_stage, select_stage,
                               sft_stage, teacher_stage, verify_stage)

ALL = "*"  # as an input: every manifest so far, by stage label


def always(recipe: Recipe) -> bool:
    return True


def no_gpus(recipe: Recipe) -> int:
    return 0


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[..., dict]  # fn(run, *input manifests[, student]) -> manifest
    inputs: tuple[str, ...] = ()
    subdir: str | None = None  # where it writes under the run directory (None: files at its top)
    enabled: Callable[[Recipe], bool] = always
    per_student: bool = False
    command: bool = True  # a `distill <name>` command runs the pipeline up to it
    gpus: Callable[[Recipe], int] = no_gpus  # accelerators it holds while it runs (Prefect's `gpu` concurrency slots)

    def labels(self, recipe: Recipe) -> list[str]:
        """What the stage is called in manifests, reports and Prefect: `sft:<student>` per student."""
        return [f"{self.name}:{s.name}" for s in recipe.students] if self.per_student else [self.name]


STAGES: tuple[Stage, ...] = (
    Stage("prompts", prompts_stage, (), SUBDIRS["prompts"]),
    Stage("teacher", teacher_stage, ("prompts",), SUBDIRS["teacher"], gpus=lambda r: 1 if r.teacher.enabled else 0),
    Stage("sample", sample_stage, ("prompts", "teacher"), SUBDIRS["sample"], gpus=lambda r: gpus_for(r.sampling, data_parallel=True)),
    Stage("verify", verify_stage, ("sample",), SUBDIRS["verify"]),
    Stage("curate", curate_stage, ("verify",), SUBDIRS["curate"]),
    Stage("select", select_stage, ("verify", "curate"), SUBDIRS["select"]),
    Stage("merge", merge_stage, ("select",), SUBDIRS["merge"]),
    Stage("sft", sft_stage, ("merge",), SUBDIRS["sft"], per_student=True, gpus=lambda r: 1),
    Stage("eval", eval_stage, ("prompts", "teacher", "sft"), SUBDIRS["eval"], enabled=lambda r: r.eval.enabled, gpus=lambda r: gpus_for(r.eval)),
    Stage("report", write_report, (ALL,)),
    # `distill publish RUN_DIR` publishes a finished run (its own command, other arguments)
    Stage("publish", publish_stage, (ALL,), enabled=lambda r: r.publish.enabled, command=False),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}
COMMANDS = tuple(s.name for s in STAGES if s.command)


def stage_of(label: str) -> Stage:
    """The stage of a label: sft:<student> -> sft."""
    return BY_NAME[label.split(":", 1)[0]]


def check_only(only: str | None) -> None:
    if only is not None and only not in BY_NAME:
        raise ValueError(f"unknown stage {only!r} (stages: {', '.join(STAGE_NAMES)})")


def schedule(recipe: Recipe, only: str | None = None) -> Iterator[tuple[Stage, str, str | None]]:
    """(stage, label, student) for every stage call a run makes, in order, stopping after `only`."""
    check_only(only)
    for st in STAGES:
        if st.enabled(recipe):
            students = [s.name for s in recipe.students] if st.per_student else [None]
            for label, student in zip(st.labels(recipe), students):
                yield st, label, student
        if st.name == only:
            return


def planned_stages(recipe: Recipe, only: str | None = None) -> list[str]:
    """The labels of the stage calls a run will make, in order (the Prefect progress denominator)."""
    return [label for _, label, _ in schedule(recipe, only)]


def stage_args(st: Stage, recipe: Recipe, manifests: dict[str, dict], student: str | None) -> list:
    """The manifests (and student) a stage is called with, after the run."""
    args: list = []
    for name in st.inputs:
        if name == ALL:
            args.append(dict(manifests))
        elif BY_NAME[name].per_student:
            args.append({s.name: manifests[f"{name}:{s.name}"] for s in recipe.students})
        else:
            args.append(manifests[name])
    return args + ([student] if student is not None else [])
