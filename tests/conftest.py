"""Shared test setup: offline, single-threaded environment and tiny random chat models.

Fixtures:
- `tiny_llama`: Path to a tiny random LlamaForCausalLM + ChatML byte-level BPE tokenizer (see tiny_models.py).
- `tiny_qwen2`: the same for Qwen2ForCausalLM.
Both are built once per session (well under a second each) under pytest's tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before anything imports torch / transformers / prefect. setdefault: a caller's values win.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Embedded-model cache, shared across test runs.
    "R1_DISTILL_CACHE": str(REPO_ROOT / ".cache"),
}.items():
    os.environ.setdefault(_key, _value)

from tiny_models import build_tiny_model  # noqa: E402  (tests/ is on sys.path via pytest's rootdir conftest)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random Llama chat model (safetensors + tokenizer), loadable by transformers and vLLM."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random Qwen2 chat model (safetensors + tokenizer), loadable by transformers and vLLM."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"), arch="qwen2", seed=0)


CANARY_TOKEN = "hf_r1distillCANARY0123456789abcdefXYZ"  # planted as HF_TOKEN in `tiny_run`; must appear nowhere


@pytest.fixture(scope="session")
def tiny_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One whole pipeline run on tiny models as a user runs it (`distill run`, a Prefect flow), with terminal
    progress bars on, a dry-run publish stage, and a canary Hub token in the environment.

    Returns paths: `root` (everything the run wrote lives under it), `run_dir`, `publish_dir`, `prefect_home`,
    `log` (the command's stdout + stderr), `config`, and `canary`. Curation thresholds are loosened so a
    random model's noise reaches every stage (some traces are still rejected for their language share).
    """
    import subprocess
    import sys

    import yaml
    from test_pipeline import tiny_recipe

    root = tmp_path_factory.mktemp("tiny_run")
    run_dir = root / "run"
    recipe = tiny_recipe(tiny_llama, run_dir)
    recipe["prompts"] = {"n_train": 8, "n_eval": 3}
    recipe["sampling"]["n"] = 3
    recipe["curate"] = {
        "require_think": False, "reject_truncated": False, "reject_incorrect": False,
        "min_target_lang_share": 0.9, "wrong_language_share": 0.5, "max_lang_switches": None,
        "reject_unbalanced_fences": False, "max_mojibake": 10_000, "max_markup_debris": 10_000,
        "max_special_tokens": 10_000, "max_symbol_soup": 100_000, "min_sentence_frac": 0.0,
        "max_dup_line_frac": 1.0, "max_line_repeats": 10_000, "max_dup_ngram_frac": 1.0,
    }
    recipe["publish"] = {"enabled": True, "dry_run": True, "dataset_repo": "r1-distill-tests/tiny", "model_repo_prefix": "r1-distill-tests/tiny",
                         "source_licenses": {str(tiny_llama): "apache-2.0"}}  # built in the test session
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    env = {
        **os.environ, "HF_TOKEN": CANARY_TOKEN, "PREFECT_HOME": str(root / "prefect"), "HF_HOME": str(root / "hf_home"),
        "R1_DISTILL_PROGRESS": "1", "OMP_NUM_THREADS": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",  # a loaded CI machine can take minutes
    }
    out = subprocess.run([sys.executable, "-m", "distill.cli", "run", "--config", str(config)], env=env,
                         capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    log = out.stdout + "\n" + out.stderr
    (root / "run.log").write_text(log)
    assert out.returncode == 0, out.stderr[-4000:]
    return {"root": root, "run_dir": run_dir, "publish_dir": run_dir / "publish", "prefect_home": root / "prefect",
            "log": log, "config": config, "canary": CANARY_TOKEN}
