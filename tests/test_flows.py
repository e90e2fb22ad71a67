"""Prefect wiring without a pipeline run: which failures are retried (and that Prefect retries exactly those),
the stage flows, the progress denominator, deployments in prefect.yaml, CLI flags for Ray."""

from __future__ import annotations

import errno
from pathlib import Path

import httpx
import pytest
import yaml

from distill.config.recipe import recipe_from_dict
from flows.retry import RETRY_DELAYS, is_transient

REPO = Path(__file__).resolve().parents[1]


class WorkerCrashedError(Exception):  # the name Ray gives a worker that died
    pass


def _status_error(code: int) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return httpx.HTTPStatusError("x", request=req, response=httpx.Response(code, request=req))


@pytest.mark.parametrize(
    "exc, transient",
    [
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("read timed out"), True),
        (OSError(errno.ESTALE, "Stale file handle"), True),
        (httpx.ConnectError("refused"), True),
        (_status_error(429), True),
        (_status_error(503), True),
        (WorkerCrashedError("node lost"), True),
        (_status_error(400), False),
        (_status_error(401), False),
        (ValueError("sampling.n must be >= 1"), False),
        (FileNotFoundError(errno.ENOENT, "no such file"), False),
        (MemoryError(), False),
        (KeyError("prompt"), False),
    ],
)
def test_which_failures_are_transient(exc, transient):
    assert is_transient(exc) is transient


def test_transient_cause_counts_but_an_error_while_handling_one_does_not():
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as e:
            raise RuntimeError("engine request failed") from e
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError:
            raise KeyError("a bug in the handler")
    except KeyError as bug:
        assert not is_transient(bug)


def test_prefect_retries_transient_failures_only(tmp_path, monkeypatch):
    """The real retry condition inside Prefect (delays shortened): a transient failure is retried until it
    succeeds, a bug fails after one attempt."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    from prefect import flow

    from flows.stages import stage_task

    calls = {"flaky": 0, "bug": 0}

    def flaky(run):
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionResetError("peer reset")
        return {"rows_out": 1}

    def bug(run):
        calls["bug"] += 1
        raise ValueError("bad column")

    @flow(persist_result=False)
    def both():
        a = stage_task("flaky", flaky).with_options(retry_delay_seconds=0)(None)
        b = stage_task("bug", bug).with_options(retry_delay_seconds=0)(None, return_state=True)
        return a, b

    a, b = both()
    assert a == {"rows_out": 1} and calls["flaky"] == 3
    assert b.is_failed() and calls["bug"] == 1
    t = stage_task("x", flaky)
    assert t.retries == 3 and t.retry_delay_seconds == RETRY_DELAYS == [10, 20, 40]


def test_stage_flows_gpu_slots_and_progress_denominator():
    from flows.pipeline import planned_stages
    from flows.stages import STAGE_FLOWS, artifact_key, stage_gpus

    assert {f.name for f in STAGE_FLOWS.values()} == {f"distill-{s}" for s in STAGE_FLOWS}
    r = recipe_from_dict({"name": "My_Recipe", "students": [{"name": "a"}, {"name": "b"}],
                          "sampling": {"engine": "vllm", "vllm": {"tensor_parallel_size": 2, "data_parallel_size": 2}}})
    from distill.stages import STAGE_NAMES

    assert set(STAGE_FLOWS) == set(STAGE_NAMES)  # one flow per stage of the table
    expected = [x for s in STAGE_NAMES if s != "publish" for x in (["sft:a", "sft:b"] if s == "sft" else [s])]  # publish: off by default
    assert planned_stages(r, None) == expected and expected[:7] == ["prompts", "teacher", "sample", "verify", "curate", "select", "merge"]
    assert planned_stages(r, "sample") == ["prompts", "teacher", "sample"]
    assert stage_gpus("sample", r) == 4 and stage_gpus("sft", r) == 1 and stage_gpus("curate", r) == 0
    r2 = recipe_from_dict({"name": "x", "teacher": {"enabled": False}, "sampling": {"engine": "openai", "openai": {"model": "m", "base_url": "http://127.0.0.1:1/v1"}}})
    assert stage_gpus("teacher", r2) == 0 and stage_gpus("sample", r2) == 0
    assert artifact_key("My_Recipe", "sft:a") == "my-recipe-sft-a"


def test_prefect_yaml_deployments_name_real_flows_and_recipes():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert {"demo", "nightly-sampling-round", "weekly-distill-1.5b"} <= set(deps)
    assert deps["nightly-sampling-round"]["schedules"][0]["cron"] == "0 2 * * *"
    for d in deps.values():
        f = load_flow_from_entrypoint(str(REPO / d["entrypoint"].split(":")[0]) + ":" + d["entrypoint"].split(":")[1])
        params = set(f.parameters.properties)
        assert set(d.get("parameters", {})) <= params, (d["name"], params)
        assert (REPO / d["parameters"]["config"]).is_file(), d["name"]
        assert d["work_pool"]["name"] in {"distill-cpu", "distill-gpu"}


def test_cli_ray_flags_are_checked(tmp_path, capsys):
    from distill.cli import main

    assert main(["run", "--config", str(REPO / "recipes" / "demo.yaml"), "--ray-workers", "2"]) == 2
    assert "--ray-workers needs --ray" in capsys.readouterr().err
    assert main(["run", "--config", str(REPO / "recipes" / "demo.yaml"), "--ray", "auto", "--no-prefect"]) == 2
    assert "drop --no-prefect" in capsys.readouterr().err


def _uses_a_global():
    return RETRY_DELAYS


def test_stage_flows_leave_library_prints_alone(tmp_path, monkeypatch):
    """A stage flow must not turn prints into logs: dill (under datasets' fingerprinting, inside TRL) prints a
    disassembly into a captured stdout; with Prefect's print patch those lines flooded the console as
    `prefect.task_runs` logs and dill found no globals in the function it inspected."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    import logging

    from dill.detect import nestedglobals

    from flows.stages import STAGE_FLOWS, make_stage_flow, sample_flow

    assert all(f.log_prints is False for f in [*STAGE_FLOWS.values(), sample_flow])
    recipe = recipe_from_dict({"name": "prints"})

    def verify(run):
        return {"rows_in": 0, "rows_out": 0, "names": sorted(nestedglobals(_uses_a_global))}

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    keep = Keep()
    logging.getLogger("prefect").addHandler(keep)
    try:
        m = make_stage_flow("verify", verify)(recipe, str(tmp_path / "run"))
    finally:
        logging.getLogger("prefect").removeHandler(keep)
    assert m["names"] == ["RETRY_DELAYS"]
    assert not [r for r in records if "LOAD_GLOBAL" in r or "Disassembly" in r]
