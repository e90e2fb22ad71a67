"""GRPO at scale: one micro-batch's activations are counted (distill/planning/activations.py), the 32B
recipes fit an 80 GB GPU, and a micro-batch of 8 x 16k-token completions (the recipes before) is refused."""

from pathlib import Path

import pytest

from distill.cli import main
from distill.config.recipe import load_recipe
from distill.core.hardware import gpu_spec
from distill.planning.activations import GiB, grpo_activation_gib, grpo_activations, micro_batch_activations
from distill.planning.archs import arch_for
from distill.planning.memory import grpo_memory
from distill.planning.plan import plan_recipe

ROOT = Path(__file__).resolve().parents[1]
GRPO_RECIPES = [p for p in sorted((ROOT / "recipes").glob("*.yaml"))
                if (r := load_recipe(p)).teacher.enabled and r.teacher.grpo.enabled and p.stem != "demo"]
OLD_32B = ["teacher.grpo.training_args.per_device_train_batch_size=8", "teacher.grpo.training_args.gradient_accumulation_steps=4"]


def test_the_issue_figure():
    # 8 completions x 16k tokens of Qwen2.5-32B: 64 layers x tokens x 5120 x 2 bytes of checkpoints alone ~ 87-89 GB
    a = micro_batch_activations(arch_for("Qwen/Qwen2.5-32B"), sequences=8, prompt_tokens=512, completion_tokens=16384)
    assert a.tokens == 8 * 16896
    assert a.checkpoints_gib * GiB == 64 * a.tokens * 5120 * 2
    assert 85e9 < a.checkpoints_gib * GiB < 90e9
    assert a.total_gib > gpu_spec("H100-80GB").memory_gib  # over the GPU before any weight
    # without gradient checkpointing every layer keeps all of its tensors
    off = micro_batch_activations(arch_for("Qwen/Qwen2.5-32B"), sequences=1, prompt_tokens=512, completion_tokens=16384,
                                  gradient_checkpointing=False)
    assert off.total_gib > 5 * grpo_activation_gib(arch_for("Qwen/Qwen2.5-32B"), {"per_device_train_batch_size": 1,
                                                                                 "max_completion_length": 16384})


@pytest.mark.parametrize("path", GRPO_RECIPES, ids=lambda p: p.stem)
def test_every_grpo_recipe_fits_its_gpus(path):
    recipe = load_recipe(path)
    g = recipe.teacher.grpo
    args = g.training_args
    arch = arch_for(recipe.teacher.model)
    h100 = gpu_spec("H100-80GB")
    # the micro-batch's activations leave room for the model states
    assert grpo_activation_gib(arch, args) < 0.5 * h100.memory_gib, path.stem
    # TRL 1.16: the generation batch (per_device_train_batch_size x processes x steps_per_generation, the
    # latter gradient_accumulation_steps by default) holds whole groups of num_generations, per process too
    per_process = args["per_device_train_batch_size"] * args.get("gradient_accumulation_steps", 1)
    assert per_process % args["num_generations"] == 0
    # the whole step on the recipe's teacher.hardware (2 training nodes for the 32B), else one node of 8
    stage = plan_recipe(recipe)["stages"]["teacher:grpo"]
    assert stage["memory"]["fits"], (path.stem, stage["memory"])
    assert stage["gpus"] == (16 if "32b" in path.stem else 8)
    mem = grpo_memory(arch, args, gpu=h100, gpus=stage["gpus"], strategy="zero3")
    assert mem.total_gib == pytest.approx(stage["memory"]["total_gib"], abs=0.01)


def test_the_old_32b_micro_batch_is_refused_by_the_plans(capsys):
    path = ROOT / "recipes" / "r1-zero-qwen2.5-32b.yaml"
    old = load_recipe(path, OLD_32B)
    arch = arch_for(old.teacher.model)
    assert grpo_activations(arch, old.teacher.grpo.training_args).total_gib > 80
    # distill plan: the teacher's GRPO stage counts the activations and does not fit even on 16 GPUs
    stage = plan_recipe(old)["stages"]["teacher:grpo"]
    assert stage["hardware_source"] == "teacher.hardware" and stage["gpus"] == 16
    assert not stage["memory"]["fits"] and stage["activations_gib"] > 80
    assert plan_recipe(load_recipe(path))["stages"]["teacher:grpo"]["memory"]["fits"]
    # distill teacher --plan: an error naming the field
    assert main(["teacher", "--plan", "--config", str(path), *OLD_32B]) == 2
    out = capsys.readouterr().out
    assert "ERROR: teacher.grpo.training_args.per_device_train_batch_size 8" in out and "GiB of activations" in out
    assert main(["teacher", "--plan", "--config", str(path)]) == 0
    assert "ERROR" not in capsys.readouterr().out


def test_distill_plan_prints_the_grpo_stage(capsys):
    assert main(["plan", str(ROOT / "recipes" / "r1-qwen2.5-32b.yaml")]) == 0
    out = capsys.readouterr().out
    assert "teacher:grpo" in out and "GiB of activations" in out and "fits" in out


def test_reference_model_and_colocated_vllm_are_counted():
    arch, h100 = arch_for("Qwen/Qwen2.5-Math-7B"), gpu_spec("H100-80GB")
    base = {"per_device_train_batch_size": 4, "max_completion_length": 1024}
    plain = grpo_memory(arch, base, gpu=h100, gpus=8)
    ref = grpo_memory(arch, {**base, "beta": 0.04}, gpu=h100, gpus=8)
    assert ref.reference_gib == pytest.approx(arch.params() * 2 / 8 / GiB) and plain.reference_gib == 0
    colocate = grpo_memory(arch, {**base, "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}, gpu=h100, gpus=8)
    asleep = grpo_memory(arch, {**base, "use_vllm": True, "vllm_enable_sleep_mode": True}, gpu=h100, gpus=8)
    assert colocate.rollout_gib == pytest.approx(24) and asleep.rollout_gib == 0
    assert colocate.total_gib == pytest.approx(plain.total_gib + 24)


def _saved_bytes(layers: int, sequences: int, seq_len: int) -> tuple[int, "object"]:
    """Bytes autograd keeps for the backward of a tiny bf16 Qwen2 backbone with gradient checkpointing."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from distill.planning.archs import Arch

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=256, num_hidden_layers=layers, intermediate_size=512, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=4096, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = {p.data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.numel() and t.data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=torch.randint(0, 512, (sequences, seq_len)), use_cache=False)
    arch = Arch("tiny", layers, 256, 512, 4, 2, 512, False, qkv_bias=True)
    return sum(saved.values()), arch


def test_the_checkpoint_term_is_what_autograd_keeps():
    """Measured with autograd's saved-tensor hooks: each checkpointed layer keeps exactly its bf16 input,
    layers x tokens x hidden x 2 bytes; beyond the layers only the final norm's input is kept."""
    two, arch2 = _saved_bytes(2, 2, 512)
    six, arch6 = _saved_bytes(6, 2, 512)
    tokens = 2 * 512
    assert six - two == 4 * tokens * 256 * 2
    for got, arch in ((two, arch2), (six, arch6)):
        formula = micro_batch_activations(arch, sequences=2, prompt_tokens=0, completion_tokens=512).checkpoints_gib * GiB
        # + the final RMSNorm's bf16 input and its fp32 upcast, and the rotary tables (a few KiB)
        assert formula <= got <= formula + tokens * 256 * 6 + 64 * 1024
