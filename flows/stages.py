"""One Prefect flow per stage of distill/stages.py's table: the stage function as a retried task inside it.

A stage flow is what the UI shows as one box of the pipeline (its own flow run, logs, artifacts), and
each one can also be deployed and run on its own. No logic lives here: reuse is decided by the run
directory's manifests (`distill.core.run.Run.stage`), so it survives a lost Prefect database too.

Prefect adds:
- retries with backoff (10, 20, 40 s) on transient failures only: a dropped connection, a timeout, an
  HTTP 429/5xx, a Ray worker that died. A bad recipe or a bug fails at once instead of three more times.
- a global concurrency limit on accelerators (`gpu` by default, R1_DISTILL_GPU_LIMIT to rename it):
  stages that hold GPUs (teacher, sample, sft, eval) take as many slots as they use, so two flow runs
  never oversubscribe a node. `prefect gcl create gpu --limit 8` sets it; a server without the limit is
  told once, and `distill run`'s temporary server (this run alone) is not asked for one.
- artifacts: the curation funnel as a table, each stage's summary as markdown.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import nullcontext
from typing import Any, Callable

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from distill.config.recipe import Recipe
from distill.core import secrets
from distill.core.run import Run
from distill.engines.factory import devices_per_engine
from distill.stages import BY_NAME, STAGES, stage_of
from flows.ray_sampling import RaySampler, RaySettings
from flows.retry import RETRY_DELAYS, retry_on_transient

log = logging.getLogger(__name__)


def stage_task(name: str, fn: Callable[..., dict]):
    """A stage function as a Prefect task: no Prefect result caching (the manifests decide reuse, and
    inputs are run directories, not data), retried with backoff on transient failures. A failure's text
    is scrubbed of secret values before Prefect makes it a state message, a log line and an event."""

    @functools.wraps(fn)
    def scrubbed(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as e:
            secrets.scrub_exception(e)
            raise

    return task(
        scrubbed, name=name, cache_policy=NO_CACHE, persist_result=False,
        retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient,
    )


# --- accelerators ---------------------------------------------------------------------------------------------


def gpu_limit_name() -> str:
    return os.environ.get("R1_DISTILL_GPU_LIMIT", "gpu")


def stage_gpus(stage: str, recipe: Recipe) -> int:
    """Accelerators a stage holds while it runs on this recipe (0: none, no slot taken): the table's `gpus`."""
    return BY_NAME[stage].gpus(recipe)


def gpu_limit_exists(name: str) -> bool:
    """Whether the run's Prefect server has the accelerator limit. A temporary server (`distill run` with no
    PREFECT_API_URL) serves this run alone and has none: nothing to share, nothing to ask for. A real server
    without it is said once per process, with the command that creates it."""
    from prefect.settings import PREFECT_API_URL  # prefect is slow to import; only flows need it

    url = PREFECT_API_URL.value()
    if not url:
        return False
    if (url, name) not in _LIMITS_SEEN:
        from prefect.client.orchestration import get_client  # prefect is slow to import; only flows need it
        from prefect.exceptions import ObjectNotFound  # prefect is slow to import; only flows need it

        try:
            with get_client(sync_client=True) as client:
                client.read_global_concurrency_limit_by_name(name)
            _LIMITS_SEEN[(url, name)] = True
        except ObjectNotFound:
            _LIMITS_SEEN[(url, name)] = False
            log.warning("the Prefect server at %s has no global concurrency limit %r: GPU stages of different flow runs are not "
                        "kept apart (`prefect gcl create %s --limit <GPUs>` sets one)", url, name, name)
    return _LIMITS_SEEN[(url, name)]


_LIMITS_SEEN: dict[tuple[str, str], bool] = {}


def gpu_slots(n: int):
    """Hold `n` slots of the accelerator limit for the duration of a stage (when the server has the limit)."""
    name = gpu_limit_name()
    return concurrency(name, occupy=n) if n > 0 and gpu_limit_exists(name) else nullcontext()


# --- artifacts -------------------------------------------------------------------------------------------------


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    raw = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")


def funnel_rows(funnel: dict) -> list[dict]:
    """The curation funnel as table rows: one per measure, in the order they are applied."""
    return [
        {"measure": m["measure"], "rows_in": m["rows_in"], "dropped": m["dropped"], "rows_out": m["rows_out"],
         "reasons": ", ".join(f"{r}: {funnel.get('primary_reasons', {}).get(r, 0)}" for r in m["reasons"])}
        for m in funnel.get("measures", [])
    ]


def _stage_summary(stage: str, m: dict) -> str:
    lines = [f"### stage `{stage}`", "", "| rows in | rows out | seconds | reused |", "|---:|---:|---:|:--|",
             f"| {m.get('rows_in', 0)} | {m.get('rows_out', 0)} | {m.get('seconds', 0)} | {'yes' if m.get('cached') else 'no'} |"]
    for key in ("verdicts", "selection", "mix", "generation"):
        if isinstance(m.get(key), dict):
            lines += ["", f"**{key}**", "", "| key | value |", "|:--|:--|"]
            lines += [f"| {k} | {v} |" for k, v in m[key].items() if not isinstance(v, (dict, list))]
    return "\n".join(lines)


def stage_artifacts(recipe: Recipe, stage: str, m: dict) -> None:
    base = artifact_key(recipe.name, stage)
    create_markdown_artifact(_stage_summary(stage, m), key=f"{base}-summary", description=f"r1-distill stage {stage}")
    if stage == "curate" and m.get("funnel"):
        create_table_artifact(funnel_rows(m["funnel"]), key=f"{base}-funnel", description="curation funnel: rows dropped per measure")


# --- the stage flows ----------------------------------------------------------------------------------------------


def base_stage(name: str) -> str:
    return stage_of(name).name  # sft:<student> -> sft


# log_prints stays off: with it on, Prefect's print patch logs what a library prints into a captured stdout
# (dill's `nestedglobals`, which datasets' fingerprinting calls while TRL builds its dataset, disassembles
# each function there) - 878 lines of bytecode in the demo's console, and dill then finds no globals.
def make_stage_flow(stage: str, fn: Callable[..., dict]):
    """The flow for one stage: `fn(run, *inputs)` as a retried task, holding the stage's GPU slots."""
    the_task = stage_task(stage, fn)

    def body(recipe: Recipe, run_dir: str, inputs: list[Any] | None = None) -> dict:
        run = Run(recipe, run_dir)
        return run_stage(run, stage, the_task, list(inputs or []))

    body.__doc__ = (fn.__doc__ or f"The `{stage}` stage.").strip().split("\n")[0]
    return flow(body, name=f"distill-{stage}", persist_result=False, log_prints=False)


def run_stage(run: Run, stage: str, the_task, inputs: list[Any]) -> dict:
    """Inside a stage flow: take the GPU slots, run the task, publish the artifacts."""
    secrets.install()  # also where a Prefect worker runs the flow, not `distill run`
    label = f"{stage}:{inputs[-1]}" if BY_NAME[stage].per_student else stage  # a per-student stage's last input: the student
    with gpu_slots(stage_gpus(stage, run.recipe)):
        m = the_task.with_options(name=label)(run, *inputs)
    stage_artifacts(run.recipe, label, m)
    return m


_sample_task = stage_task("sample", BY_NAME["sample"].fn)


@flow(name="distill-sample", persist_result=False, log_prints=False)
def sample_flow(recipe: Recipe, run_dir: str, inputs: list[Any] | None = None, ray: RaySettings | None = None) -> dict:
    """Rejection sampling from the teacher: on this machine, or with `ray` its shards mapped over a Ray cluster."""
    sampler = None
    if ray is not None:
        sampler = RaySampler(ray, devices_per_engine=devices_per_engine(recipe.sampling.vllm),
                             vllm=recipe.sampling.vllm if recipe.sampling.engine == "vllm" else None)
    try:
        return run_stage(Run(recipe, run_dir, sampler=sampler), "sample", _sample_task, list(inputs or []))
    finally:
        if sampler is not None:
            sampler.close()


# one flow per stage of the table, in its order; sampling's own (above) can map its shards over Ray
STAGE_FLOWS = {st.name: sample_flow if st.name == "sample" else make_stage_flow(st.name, st.fn) for st in STAGES}


def stage_flow_for(label: str):
    """The flow of a stage call `run_pipeline` makes (sft:<student> -> the sft flow)."""
    return STAGE_FLOWS[base_stage(label)]
