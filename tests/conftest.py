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
