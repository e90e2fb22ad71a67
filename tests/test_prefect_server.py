"""A real Prefect server: deploy prefect.yaml, run the demo pipeline (tiny models) through a process worker,
and check the flow run, its stage subflows, their task runs, the GPU concurrency limit and the artifacts
through the Prefect API.

`make test` (and so `.ci/run`) starts the server with scripts/with-prefect-server.sh, which exports
R1_DISTILL_TEST_PREFECT_API_URL and stops the server by its PID afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
API_URL = os.environ.get("R1_DISTILL_TEST_PREFECT_API_URL")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not API_URL,
        reason="no Prefect server given: R1_DISTILL_TEST_PREFECT_API_URL is unset "
        "(`make test` and .ci/run start one with scripts/with-prefect-server.sh)",
    ),
]

STAGE_FLOWS = {"distill-prompts", "distill-teacher", "distill-sample", "distill-verify", "distill-curate", "distill-select",
               "distill-merge", "distill-sft", "distill-eval", "distill-report"}


def _prefect(env: dict, *args: str, timeout: int = 180) -> str:
    exe = Path(sys.executable).with_name("prefect")
    out = subprocess.run([str(exe), "--no-prompt", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _stop(proc: subprocess.Popen) -> None:
    """Stop the worker (and the flow-run processes it started) by its PID's process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_deploy_and_run_demo_pipeline_through_prefect_server(tiny_llama, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from test_pipeline import tiny_recipe

    run_dir = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_recipe(tiny_llama, run_dir)))
    suffix = uuid.uuid4().hex[:8]
    pool, gpu_limit = "distill-cpu", f"gpu-test-{suffix}"  # the work pools prefect.yaml names
    env = {
        **os.environ,
        "PREFECT_API_URL": API_URL,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "R1_DISTILL_GPU_LIMIT": gpu_limit,
        "OMP_NUM_THREADS": "1",
    }
    # what docs/operations.md tells a user to run, then every deployment in prefect.yaml
    for p in ("distill-cpu", "distill-gpu"):
        _prefect(env, "work-pool", "create", p, "--type", "process", "--overwrite")
    _prefect(env, "gcl", "create", gpu_limit, "--limit", "1")
    _prefect(env, "deploy", "--all")

    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool, "--type", "process"],
        cwd=REPO, env=env, stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        with temporary_settings({PREFECT_API_URL: API_URL}):
            fr = run_deployment("r1-distill-recipe/demo", parameters={"config": str(config)}, timeout=1500, poll_interval=3)
            with get_client(sync_client=True) as client:
                fr = client.read_flow_run(fr.id)
                log = (tmp_path / "worker.log").read_text()[-6000:]
                assert fr.state is not None and fr.state.is_completed(), f"flow run ended {fr.state}:\n{log}"

                # the schedules prefect.yaml declares
                nightly = client.read_deployment_by_name("r1-distill-sampling-round/nightly-sampling-round")
                crons = [s.schedule.cron for s in client.read_deployment_schedules(nightly.id)]
                assert crons == ["0 2 * * *"]
                assert nightly.work_pool_name == "distill-gpu"

                # one subflow per stage, each Completed, each with its stage's task run(s)
                subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[fr.id])))
                names = {client.read_flow(s.flow_id).name for s in subflows}
                assert names == STAGE_FLOWS
                assert all(s.state.is_completed() for s in subflows)
                assert {s.name for s in subflows} >= {"prompts", "sample", "curate", "sft:tiny-student", "report"}
                tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[s.id for s in subflows])))
                task_names = sorted(t.name.rsplit("-", 1)[0] for t in tasks)
                assert {"prompts", "teacher", "sample", "verify", "curate", "select", "merge", "sft:tiny-student", "eval", "report"} <= set(task_names)
                assert all(t.state.is_completed() for t in tasks)

                # the artifacts: progress at 100 %, the funnel table, the stage table, the markdown report
                arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id])))
                by_key = {a.key: a for a in arts}
                assert {"tiny-progress", "tiny-funnel", "tiny-stages", "tiny-report"} <= set(by_key)
                assert float(by_key["tiny-progress"].data) == 100.0
                assert by_key["tiny-report"].data.startswith("# r1-distill run")
                funnel = json.loads(by_key["tiny-funnel"].data)
                assert funnel and {"measure", "rows_in", "dropped", "rows_out"} <= set(funnel[0])
                assert funnel[0]["rows_in"] == 6 * 2  # every sample enters the funnel
                stage_arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[s.id for s in subflows])))
                assert {"tiny-curate-funnel", "tiny-sample-summary", "tiny-report-summary"} <= {a.key for a in stage_arts}

                # the GPU limit: slots taken by the stages that hold an accelerator, and all given back
                limit = client.read_global_concurrency_limit_by_name(gpu_limit)
                assert limit.active_slots == 0
                acquired = []
                for _ in range(30):  # events are persisted asynchronously by the server
                    page = client.read_events(EventFilter(event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]),
                                                          resource=EventResourceFilter(id=[f"prefect.concurrency-limit.{limit.id}"])), limit=50)
                    acquired = page.events
                    if len(acquired) >= 4:
                        break
                    time.sleep(1)
                # teacher (trained), sample (transformers), sft, eval (transformers): one slot each
                assert len(acquired) == 4, [e.resource for e in acquired]
    finally:
        _stop(worker)
    assert (run_dir / "report.json").is_file()
