"""The whole pipeline on tiny models: every stage, report.json's contract, reuse and invalidation."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml

from distill.config.recipe import recipe_from_dict
from distill.core.run import Run
from distill.core.storage import read_manifest, read_table
from distill.pipeline import run_pipeline
from distill.stages import ALL, BY_NAME, STAGE_NAMES, STAGES, planned_stages

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe(model: Path, run_dir: Path, sample_engine: str = "transformers") -> dict:
    m = str(model)
    return {
        "name": "tiny",
        "run_dir": str(run_dir),
        "threads": 1,
        "prompts": {"n_train": 6, "n_eval": 3},
        "teacher": {
            "model": m,
            "cold_start": {"n_examples": 8, "lora": {"r": 4, "alpha": 8}, "training_args": {"max_steps": 1, "per_device_train_batch_size": 4, "max_length": 128}},
            "grpo": {"lora": {"r": 4, "alpha": 8}, "training_args": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 12}},
        },
        "sampling": {"engine": sample_engine, "n": 2, "max_tokens": 24, "shard_size": 4, "vllm": {"max_model_len": 512, "kv_cache_space_gb": 1, "dtype": "float32"}},
        # a random model writes noise: keep it anyway so every later stage has rows to work on
        "curate": {"require_think": False, "reject_truncated": False, "reject_incorrect": False, "min_target_lang_share": 0.0, "wrong_language_share": 0.0, "max_lang_switches": None},
        "merge": {"non_reasoning": [{"path": str(REPO / "data" / "non_reasoning.jsonl")}]},
        "students": [{"name": "tiny-student", "model": m, "lora": {"r": 4, "alpha": 8}, "training_args": {"max_steps": 1, "per_device_train_batch_size": 4, "max_length": 128}}],
        "eval": {"engine": "transformers", "k": 2, "max_tokens": 16},
    }


def _record_calls(recipe, only=None) -> list[tuple]:
    """Walk the pipeline without running a stage: each call is recorded and returns a stand-in manifest."""
    calls = []

    def call(label, fn, run, *args):
        calls.append((label, fn, args))
        return {"fingerprint": label}

    out = run_pipeline(Run(recipe, "/tmp/never-written"), only=only, call=call)
    assert list(out) == [c[0] for c in calls]
    return calls


def test_the_stage_table_drives_the_pipeline():
    r = recipe_from_dict({"name": "x", "students": [{"name": "a"}, {"name": "b"}], "publish": {"enabled": True}})
    calls = _record_calls(r)
    assert [c[0] for c in calls] == planned_stages(r) == [
        "prompts", "teacher", "sample", "verify", "curate", "select", "merge", "sft:a", "sft:b", "eval", "report", "publish"]
    by = {label: (fn, args) for label, fn, args in calls}
    assert all(by[label][0] is BY_NAME[label.split(":")[0]].fn for label in by)
    m = lambda *labels: tuple({"fingerprint": x} for x in labels)  # noqa: E731
    assert by["prompts"][1] == () and by["sample"][1] == m("prompts", "teacher") and by["select"][1] == m("verify", "curate")
    assert by["sft:b"][1] == (*m("merge"), "b")  # a per-student stage: its inputs, then the student
    assert by["eval"][1] == (*m("prompts", "teacher"), {"a": {"fingerprint": "sft:a"}, "b": {"fingerprint": "sft:b"}})
    assert list(by["report"][1][0]) == [c[0] for c in calls[:10]]  # ALL: every manifest before it
    assert "report" in by["publish"][1][0]
    # every input names an earlier stage
    for i, st in enumerate(STAGES):
        assert set(st.inputs) - {ALL} <= set(STAGE_NAMES[:i]), st.name


def test_only_stops_after_a_stage_and_disabled_stages_are_skipped():
    r = recipe_from_dict({"name": "x", "students": [{"name": "a"}], "eval": {"enabled": False}})
    assert [c[0] for c in _record_calls(r, only="sample")] == ["prompts", "teacher", "sample"]
    assert [c[0] for c in _record_calls(r, only="sft")][-2:] == ["merge", "sft:a"]
    assert [c[0] for c in _record_calls(r, only="eval")][-1] == "sft:a"  # eval off: stop where it would have run
    assert [c[0] for c in _record_calls(r)][-2:] == ["sft:a", "report"]  # publish off by default
    assert planned_stages(r, "eval") == [c[0] for c in _record_calls(r, only="eval")]
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        _record_calls(r, only="nope")


def test_sample_manifest_records_what_ran(tiny_llama, tmp_path):
    """The sample stage's manifest carries its sampling parameters, the model and the engine with its
    library version (the report and the Hub cards read them there); the fingerprint is unchanged by them."""
    raw = tiny_recipe(tiny_llama, tmp_path / "run")
    raw["teacher"]["enabled"] = False
    raw["prompts"] = {"n_train": 2, "n_eval": 1}
    raw["sampling"] |= {"n": 1, "max_tokens": 4, "temperature": 0.7}
    m = run_pipeline(Run(recipe_from_dict(raw)), only="sample")
    ran = read_manifest(tmp_path / "run" / "traces")["settings"]
    assert {k: ran[k] for k in ("n", "temperature", "top_p", "max_tokens", "seed")} == {"n": 1, "temperature": 0.7, "top_p": 0.95, "max_tokens": 4, "seed": 0}
    assert ran["engine"] == "transformers" and ran["engine_library"]["transformers"] and ran["model"] == str(tiny_llama)
    assert ran["model_label"] == f"teacher@{m['teacher']['fingerprint']}"
    assert m["teacher"]["settings"]["model"] == str(tiny_llama) and m["prompts"]["settings"]["n_train"] == 2


@pytest.mark.slow
def test_pipeline_end_to_end_reuse_and_invalidation(tiny_llama, tmp_path):
    run_dir = tmp_path / "run"
    recipe = recipe_from_dict(tiny_recipe(tiny_llama, run_dir))
    m = run_pipeline(Run(recipe))
    assert not any(x.get("cached") for x in m.values())

    report = json.loads((run_dir / "report.json").read_text())
    for stage in ("prompts", "teacher", "sample", "verify", "curate", "merge", "sft:tiny-student", "eval"):
        s = report["stages"][stage]
        assert set(s) >= {"rows_in", "rows_out", "seconds"}
    assert report["stages"]["sample"]["rows_out"] == 6 * 2
    assert len(report["teacher"]["reward_curve"]) == 2
    assert isinstance(report["reject_reasons"], dict)
    for key in ("teacher_before_rl", "teacher", "student_before", "student_after"):
        assert set(report["eval"][key]) >= {"pass@1", "n_prompts", "k"}
        assert report["eval"][key]["n_prompts"] == 3 and report["eval"][key]["k"] == 2

    # what lands in the run directory
    assert (run_dir / "teacher" / "model" / "model.safetensors").is_file()
    assert read_table(run_dir / "traces").height == 12
    assert (run_dir / "curated" / "kept.parquet").is_file() and (run_dir / "curated" / "rejected.parquet").is_file()
    assert len(datasets.load_dataset("parquet", data_files=str(run_dir / "sft_data" / "train.parquet"), split="train")) > 0
    assert (run_dir / "students" / "tiny-student" / "model" / "model.safetensors").is_file()
    assert (run_dir / "report.md").read_text().startswith("# r1-distill run")
    # the mix by tokens, the rows left out, the eval manifest and the before/after difference
    assert report["mix"]["table"] and report["mix"]["token_counter"].endswith("tokenizer, completion")
    assert (run_dir / "sft_data" / "dropped.parquet").is_file()
    assert report["eval_manifest"]["n"] == 2 and (run_dir / "eval" / "eval_manifest.json").is_file()
    delta = report["eval_delta"]["tiny-student"]["heldout"]
    assert delta["n_prompts"] == 3 and "ci95" in delta and "## SFT mix (by tokens)" in (run_dir / "report.md").read_text()
    # did RL help the teacher: the cold-start checkpoint GRPO started from against the GRPO result
    rl = report["teacher_rl_delta"]["heldout"]
    assert (rl["before_model"], rl["after_model"]) == ("teacher_before_rl", "teacher") and rl["n_prompts"] == 3
    assert set(report["eval_delta"]) == {"tiny-student"}
    assert "## Teacher after GRPO minus before" in (run_dir / "report.md").read_text()

    # a second run reuses every stage
    again = run_pipeline(Run(recipe))
    assert all(x.get("cached") for k, x in again.items() if k != "report")

    # a changed sampling setting reruns sampling and what follows, nothing before it
    changed = recipe_from_dict(tiny_recipe(tiny_llama, run_dir), overrides=["sampling.temperature=0.9"])
    third = run_pipeline(Run(changed))
    assert third["prompts"]["cached"] and third["teacher"]["cached"]
    assert not any(third[k]["cached"] for k in ("sample", "verify", "curate", "merge", "sft:tiny-student", "eval"))


@pytest.mark.slow
def test_cli_run_through_prefect_with_vllm_sampling(tiny_llama, tmp_path):
    """`distill run` as a user runs it: a Prefect flow, vLLM for the sampling stage."""
    run_dir = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_recipe(tiny_llama, run_dir, sample_engine="vllm")))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-m", "distill.cli", "run", "--config", str(cfg), "eval.k=1"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["generation"]["engine"].startswith("vllm")
    assert report["eval"]["student_after"]["k"] == 1
    # it ran through Prefect: the stage flows are in the run's own Prefect database (Prefect's run-state lines
    # are off the console since issue 17; the stage lines are what the console shows instead)
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        flow_runs = {name for (name,) in db.execute("select name from flow_run")}
    assert {"sample", "verify", "eval"} <= flow_runs, flow_runs
    assert "stage sample: done" in out.stdout + out.stderr
