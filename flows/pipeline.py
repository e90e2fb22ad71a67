"""The pipeline flow: composes the stage flows of `flows/stages.py` in the order of distill/stages.py's table.

No logic lives here: `run_pipeline` walks the table and decides what each stage reads; this module only runs
each stage as its own subflow, keeps a progress artifact up to date and publishes the run's report and
funnel. Deployments (prefect.yaml) use `distill_from_config`, which takes a recipe file, so that a
schedule names a file in the repository rather than a frozen copy of its settings.

With `ray` settings the sample stage runs on prefect-ray's RayTaskRunner and its shards are mapped over
the cluster's workers (flows/ray_sampling.py); every other stage runs where the flow runs.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.logging.handlers import APILogHandler

from distill.config.recipe import Recipe, load_recipe, pin_threads
from distill.core.run import Run
from distill.pipeline import run_pipeline, stage_summary
from distill.rounds import run_round
from distill.stages import check_only, planned_stages
from distill.status import stage_status, status_markdown
from flows.ray_sampling import RaySettings
from flows.stages import artifact_key, base_stage, funnel_rows, stage_flow_for


def call_stage_flow(name: str, fn, run: Run, *args, ray: RaySettings | None = None) -> dict:
    """`run_pipeline`'s `call`: the stage as its own subflow run, named after the stage."""
    extra = {"ray": ray} if ray is not None and base_stage(name) == "sample" else {}  # only sampling goes to the cluster
    return stage_flow_for(name).with_options(flow_run_name=name)(recipe=run.recipe, run_dir=str(run.dir), inputs=list(args), **extra)


@contextmanager
def our_logs_in_the_ui():
    """Our loggers' lines (the stage lines, each stage's notes) also go to the flow run's logs in Prefect's UI:
    its API handler on the `distill`, `filters` and `rl` loggers for the duration of the flow. The console
    shows each line once, from the root handler (the API handler prints nothing)."""
    handlers = {name: APILogHandler() for name in ("distill", "filters", "rl")}
    for name, h in handlers.items():
        logging.getLogger(name).addHandler(h)
    try:
        yield
    finally:
        for name, h in handlers.items():
            logging.getLogger(name).removeHandler(h)


def publish_status(recipe: Recipe, run_dir: str | Path, key: str) -> None:
    """`distill status` as a markdown artifact: what an operator opens first when a run failed."""
    try:
        md = status_markdown(recipe, run_dir, stage_status(recipe, run_dir))
    except Exception as e:  # noqa: BLE001 - a status that cannot be read must not hide the run's own error
        md = f"status of `{recipe.name}` could not be read: {e}"
    create_markdown_artifact(md, key=f"{key}-status", description=f"r1-distill {recipe.name}: each stage's state, rows, cost, reruns")


def compose(recipe: Recipe, run_dir: str | None = None, only: str | None = None, ray: RaySettings | None = None) -> dict:
    """Run every stage as a subflow of the current flow; return each stage's summary. The run's status is
    published as an artifact at the end, also when a stage failed."""
    check_only(only)
    run = Run(recipe, run_dir)
    key = artifact_key(recipe.name)
    with our_logs_in_the_ui():
        try:
            return _compose(run, key, only, ray)
        finally:
            publish_status(recipe, run.dir, key)


def _compose(run: Run, key: str, only: str | None, ray: RaySettings | None) -> dict:
    recipe = run.recipe
    planned = planned_stages(recipe, only)
    progress = create_progress_artifact(0.0, key=f"{key}-progress", description=f"r1-distill {recipe.name}: stages finished, % of {len(planned)}")
    done: list[str] = []

    def call(name, fn, run_, *args) -> dict:
        m = call_stage_flow(name, fn, run_, *args, ray=ray)
        done.append(name)
        update_progress_artifact(progress, min(100.0, 100.0 * len(done) / max(1, len(planned))))
        return m

    manifests = run_pipeline(run, only=only, call=call)
    update_progress_artifact(progress, 100.0)
    summary = stage_summary(manifests)
    create_table_artifact([{"stage": n, **s} for n, s in summary.items()], key=f"{key}-stages", description="rows and seconds per stage")
    funnel = manifests.get("curate", {}).get("funnel")
    if funnel:
        create_table_artifact(funnel_rows(funnel), key=f"{key}-funnel", description="curation funnel: rows dropped per measure")
    report_md = Path(run.dir) / "report.md"
    if "report" in manifests and report_md.is_file():
        create_markdown_artifact(report_md.read_text(), key=f"{key}-report", description="r1-distill run report")
    return summary


@flow(name="r1-distill", persist_result=False)
def distill_pipeline(recipe: Recipe, run_dir: str | None = None, only: str | None = None, ray: RaySettings | None = None) -> dict:
    """The whole pipeline (or up to the stage `only`) for one validated recipe."""
    return compose(recipe, run_dir, only, ray)


@flow(name="r1-distill-recipe", persist_result=False)
def distill_from_config(config: str, overrides: list[str] | None = None, run_dir: str | None = None, only: str | None = None,
                        ray: RaySettings | None = None) -> dict:
    """The pipeline for a recipe file (relative paths: from the deployment's working directory)."""
    recipe = load_recipe(config, overrides or [])
    pin_threads(recipe)
    return compose(recipe, run_dir, only, ray)


@flow(name="r1-distill-sampling-round", persist_result=False)
def sampling_round(config: str, dataset_dir: str, overrides: list[str] | None = None, run_root: str | None = None,
                   ray: RaySettings | None = None) -> dict:
    """One sampling round appended to a dataset (distill/rounds.py); the nightly deployment runs this."""
    recipe = load_recipe(config, overrides or [])
    pin_threads(recipe)
    line = run_round(recipe, dataset_dir, run_root, call=partial(call_stage_flow, ray=ray))
    create_markdown_artifact(
        f"### sampling round {line['round']}\n\n| key | value |\n|:--|:--|\n" + "\n".join(f"| {k} | {v} |" for k, v in line.items()),
        key=f"{artifact_key(recipe.name)}-sampling-round", description=f"round {line['round']} appended to {dataset_dir}")
    return line
