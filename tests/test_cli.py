"""The CLI contracts other tools rely on: `distill verify`, `distill curate`, recipe errors."""

import json

import polars as pl

import subprocess
import sys

from distill.cli import STAGE_COMMANDS, main
from distill.config.recipe import recipe_from_dict
from distill.core.run import Run
from distill.pipeline import run_pipeline
from distill.stages import STAGE_NAMES

TRACES = [
    {"id": "a", "prompt": "What is 2 + 3?", "completion": "<think>\n2 + 3 = 5\n</think>\n\\boxed{5}", "answer": "5", "extra": 1, "finish_reason": "stop"},
    {"id": "b", "prompt": "What is 2 + 3?", "completion": "<think>\n2 + 3 = 6\n</think>\n\\boxed{6}", "answer": "5", "extra": 2, "finish_reason": "stop"},
    {"id": "c", "prompt": "What is 2 + 3?", "completion": "<think>\nhmm\n</think>\n\\boxed{5}", "answer": "\\frac{", "extra": 3, "finish_reason": "stop"},
    {"id": "d", "prompt": "Write a haiku.", "completion": "Autumn wind passes", "task": "general", "extra": 4, "finish_reason": "stop"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_verify_contract(tmp_path, capsys):
    src = _jsonl(tmp_path / "in.jsonl", TRACES)
    assert main(["verify", "--input", str(src), "--output", str(tmp_path / "out.parquet")]) == 0
    df = pl.read_parquet(tmp_path / "out.parquet")
    assert df.columns[: len(pl.read_ndjson(src).columns)] == pl.read_ndjson(src).columns
    assert df["correct"].to_list() == [True, False, None, None]
    assert df["verify_reason"].to_list()[:3] == ["correct", "incorrect", "unparseable_reference"]
    assert json.loads(capsys.readouterr().out)["rows"] == 4


def test_curate_contract(tmp_path):
    rows = [dict(r, task=r.get("task", "math"), correct=c) for r, c in zip(TRACES, [True, False, None, None])]
    rows.append({"id": "e", "prompt": "What is 1 + 1?", "completion": "<think>\n1 + 1", "answer": "2", "task": "math", "extra": 5, "finish_reason": "length", "correct": None})
    src = _jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "curated"
    assert main(["curate", "--input", str(src), "--output-dir", str(out)]) == 0
    kept, rejected = pl.read_parquet(out / "kept.parquet"), pl.read_parquet(out / "rejected.parquet")
    assert sorted(kept["id"].to_list() + rejected["id"].to_list()) == ["a", "b", "c", "d", "e"]
    reasons = dict(zip(rejected["id"], rejected["reject_reason"]))
    assert reasons == {"b": "incorrect", "c": "unverifiable", "e": "truncated"}
    assert "extra" in kept.columns and json.loads((out / "funnel.json").read_text())["rows_in"] == 5


def test_bad_recipe_exits_2_naming_field_and_file(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("name: r\nstudents:\n  - name: s\n    lora: {rank: 8}\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "students.0.lora.rank" in err and str(cfg) in err


def test_existing_model_as_teacher(tmp_path, tiny_llama):
    recipe = recipe_from_dict({"name": "t", "run_dir": str(tmp_path), "teacher": {"enabled": False, "model": str(tiny_llama)}})
    m = run_pipeline(Run(recipe), only="teacher")
    assert m["teacher"]["model"] == str(tiny_llama) and m["teacher"]["trained"] is False
    assert m["teacher"]["settings"]["model"] == str(tiny_llama)  # the manifest records what the stage ran with
    assert not (tmp_path / "teacher" / "model").exists()


def test_stage_commands_come_from_the_stage_table_and_help_loads_no_model_library():
    assert STAGE_COMMANDS == tuple(s for s in STAGE_NAMES if s != "publish")  # `distill publish` takes a run directory
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "distill.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "select" in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "vllm", "trl", "transformers", "prefect", "huggingface_hub"}
