"""Issue 14, point 4: the template and prefill defects that stopped a real run, each checked with the real
tokenizers and chat templates of the recipe models (../shared/tokenizers; skipped where absent).

- R1's template opens `<think>` in the prompt: sampling records it (`prefill` column), curation's format
  check reads the whole turn, merge writes a complete think block, and the student's lint passes.
- Base-model students: the EOS that ends an assistant turn, a chat template for Llama-3.1-8B base, RoPE
  settings for Qwen2.5-Math.
- Eval does not load an existing (untrained) teacher unless asked.
- The few-shot cold start keeps its own good samples under `prefill_think`, and generates in rounds.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import polars as pl
import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distill.config.curate import CurateConfig
from distill.config.merge import MergeConfig
from distill.config.recipe import load_recipe
from distill.config.students import RopeSettings
from distill.config.teacher import TeacherConfig
from distill.core.schema import generation_prefill, split_think
from distill.engines.base import Completion, Result, SamplingParams, render_prompts
from distill.engines.transformers import TransformersEngine
from distill.generation.prompts import load_prompts
from distill.config.prompts import PromptsConfig
from distill.generation.sample import generate_traces
from distill.generation.shards import read_traces
from distill.config.hardware import LoraConfig
from distill.mix.merge import build_sft_set, to_training_rows
from distill.training.lint import lint_rows
from distill.training.student import resolve_chat_template, turn_end_token
from distill.training.sft import build_sft_trainer
from filters.curate import curate_file

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "tokenizers"
R1 = SHARED / "deepseek-ai--DeepSeek-R1"
QWEN_MATH = SHARED / "Qwen--Qwen2.5-Math-1.5B"
LLAMA_BASE = SHARED / "meta-llama--Llama-3.1-8B"
LLAMA_INSTRUCT = SHARED / "meta-llama--Llama-3.3-70B-Instruct"


def need(*folders: Path) -> None:
    for f in folders:
        if not f.is_dir():
            pytest.skip(f"the real tokenizer folder {f.name} is not in {SHARED} (../shared/tokenizers)")


def tok(folder: Path):
    need(folder)
    return _load(folder)


@functools.cache
def _load(folder: Path):
    return AutoTokenizer.from_pretrained(folder)


def tiny_model(folder: Path, out: Path, llama: bool = False) -> Path:
    """A 1-layer random model with the real tokenizer (and, where the folder has one, the real config's
    architecture, shrunk), saved with the tokenizer: SFT then runs through TRL with the real template."""
    tokenizer = tok(folder)
    if (folder / "config.json").is_file() and not llama:
        config = AutoConfig.from_pretrained(folder)
    else:  # a Llama of the tokenizer's size (R1's own architecture is beside the point here)
        from transformers import LlamaConfig

        config = LlamaConfig()
    config.vocab_size = max(getattr(config, "vocab_size", 0) or 0, len(tokenizer))
    config.update({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 8, "tie_word_embeddings": True})
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:1]
    config.eos_token_id, config.bos_token_id = tokenizer.eos_token_id, tokenizer.bos_token_id
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- 1. R1's prefilled <think> reaches SFT -----------------------------------------------------------------


def test_prefill_is_read_from_the_real_templates():
    assert generation_prefill(tok(R1)) == "<think>\n"  # R1's generation prompt ends inside the think block
    assert generation_prefill(tok(QWEN_MATH)) == ""
    assert generation_prefill(tok(LLAMA_BASE)) == ""  # no template at all


def test_sampling_records_the_teachers_prefill(tmp_path, tiny_llama):
    # a real engine (transformers) with R1's tokenizer and template: every trace keeps the prefill
    model = tiny_model(R1, tmp_path / "r1-tiny", llama=True)
    prompts = load_prompts(PromptsConfig(n_train=3, n_eval=1))[0]
    params = SamplingParams(n=2, max_tokens=4, temperature=1.0)
    stats = generate_traces(prompts, tmp_path / "traces", model_label="r1", params=params, shard_size=2,
                            engine_factory=lambda: TransformersEngine(str(model), seed=0))
    traces = read_traces(tmp_path / "traces")
    assert traces.height == 6 and stats["prefill"] == "<think>\n"
    assert traces["prefill"].to_list() == ["<think>\n"] * 6
    # a template without a prefill (the demo's) leaves the traces as they were: no column
    plain = generate_traces(prompts, tmp_path / "plain", model_label="p", params=params, shard_size=2,
                            engine_factory=lambda: TransformersEngine(str(tiny_llama), seed=0))
    assert "prefill" not in read_traces(tmp_path / "plain").columns and "prefill" not in plain


def _r1_traces() -> pl.DataFrame:
    """Traces as R1 writes them after its prefilled `<think>\\n`: the completion holds only `</think>`."""
    rows = [
        ("a", "What is 2 + 3?", "5", "2 plus 3 makes 5, checking: 3 + 2 = 5.\n</think>\n\nThe answer is \\boxed{5}."),
        ("b", "What is 4 + 4?", "8", "4 and 4 is 8, since 4 doubled is 8.\n</think>\n\nSo \\boxed{8}."),
        # the model opened a second block inside the prefilled one: two `<think>` in its turn
        ("c", "What is 1 + 6?", "7", "<think>\n1 + 6 = 7, as 6 + 1 = 7.\n</think>\n\n\\boxed{7}"),
        # the prefilled block never closed: cut off, not "no think block"
        ("d", "What is 9 + 1?", "10", "9 + 1 is 10, let me check that once more and keep going"),
    ]
    return pl.DataFrame({
        "id": [r[0] for r in rows], "prompt_id": [f"p{r[0]}" for r in rows], "prompt": [r[1] for r in rows],
        "answer": [r[2] for r in rows], "completion": [r[3] for r in rows], "prefill": ["<think>\n"] * len(rows),
        "finish_reason": ["stop", "stop", "stop", "length"], "task": ["math"] * len(rows), "correct": [True] * len(rows),
    })


def test_curation_reads_the_whole_turn(tmp_path):
    src = tmp_path / "traces.parquet"
    _r1_traces().write_parquet(src)
    cfg = CurateConfig.model_validate({"max_paragraph_chars": 10_000, "min_completion_tokens": None, "dedup": {"enabled": False}})
    curate_file(src, tmp_path / "out", cfg)
    kept = pl.read_parquet(tmp_path / "out" / "kept.parquet")
    rejected = pl.read_parquet(tmp_path / "out" / "rejected.parquet")
    assert sorted(kept["id"]) == ["a", "b"] and kept["prefill"].to_list() == ["<think>\n"] * 2  # the column goes on
    reasons = dict(zip(rejected["id"], rejected["reject_reason"]))
    assert reasons["c"] == "bad_think_format"  # two <think> in the turn (read without the prefill: one)
    assert reasons["d"] == "truncated"
    scored = dict(zip(rejected["id"], rejected["think_format"]))
    assert scored["c"] == "multiple_think"


def _lint_as_student(tokenizer, rows, eos: str):
    stops = {tokenizer.convert_tokens_to_ids(eos)}
    return lint_rows(tokenizer, rows, stop_ids=stops, max_length=4096)


def test_merge_writes_a_complete_think_block_the_student_lint_accepts():
    student = tok(QWEN_MATH)
    kept = _r1_traces().filter(pl.col("id").is_in(["a", "b"]))
    res = build_sft_set(kept, MergeConfig(non_reasoning_fraction=0.0), tokenizer=student)
    rows = to_training_rows(res.df)
    for r in rows:
        content = r["completion"][0]["content"]
        assert content.startswith("<think>\n") and content.count("<think>") == 1 and "</think>" in content
        assert split_think(content).reasoning and not split_think(content).prefilled
    out = _lint_as_student(student, rows, "<|im_end|>")
    assert out["kinds"] == {"reasoning/no_system": 2}
    # the rows as they were before (prefill lost): the lint stops the run, and says why
    lost = [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["completion"][0]["content"][len("<think>\n"):]}]}
            for r in rows]
    with pytest.raises(Exception, match="no '<think>'"):
        _lint_as_student(student, lost, "<|im_end|>")


# --- 2. base-model students --------------------------------------------------------------------------------


def test_turn_end_tokens_of_the_real_templates():
    assert turn_end_token(tok(QWEN_MATH)) == "<|im_end|>"  # while its eos_token is <|endoftext|>
    assert tok(QWEN_MATH).eos_token == "<|endoftext|>"
    assert turn_end_token(tok(LLAMA_INSTRUCT)) == "<|eot_id|>"
    assert turn_end_token(tok(LLAMA_BASE)) is None  # no template


def test_chat_template_setting_accepts_jinja_files_folders_and_models(tmp_path):
    need(LLAMA_INSTRUCT)
    want = tok(LLAMA_INSTRUCT).chat_template
    assert resolve_chat_template(None) is None
    assert resolve_chat_template("{{ messages[0]['content'] }}") == "{{ messages[0]['content'] }}"
    assert resolve_chat_template(str(LLAMA_INSTRUCT)) == want  # a folder
    assert resolve_chat_template(str(LLAMA_INSTRUCT / "tokenizer_config.json")) == want
    (tmp_path / "t.jinja").write_text(want)
    assert resolve_chat_template(str(tmp_path / "t.jinja")) == want
    assert resolve_chat_template("meta-llama/Llama-3.3-70B-Instruct", models_dir=SHARED) == want  # a model, mapped locally
    with pytest.raises(ValueError, match=r"students\[\]\.chat_template: file 'nope.jinja' does not exist"):
        resolve_chat_template("nope.jinja")
    with pytest.raises(ValueError, match="holds no chat template"):
        resolve_chat_template(str(LLAMA_BASE))


ROWS = [{"prompt": [{"role": "user", "content": f"What is {a} + 2?"}],
         "completion": [{"role": "assistant", "content": f"<think>\n{a} + 2 = {a + 2}\n</think>\n\nThe answer is \\boxed{{{a + 2}}}."}]}
        for a in range(8)]


def test_qwen_math_student_stops_at_im_end_and_starts_long_context(tmp_path):
    model = tiny_model(QWEN_MATH, tmp_path / "qwen-math")
    trainer, lint = build_sft_trainer(
        str(model), ROWS, tmp_path / "out", lora=LoraConfig(enabled=False), seed=0,
        training_args={"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128},
        rope=RopeSettings(theta=300000, max_position_embeddings=32768),
    )
    im_end = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    assert trainer.args.eos_token == "<|im_end|>" and lint["eos_token"] == "<|im_end|>" and "<|im_end|>" in lint["stop_tokens"]
    cfg = trainer.model.config
    assert cfg.eos_token_id == im_end and im_end in trainer.model.generation_config.eos_token_id
    assert cfg.rope_parameters["rope_theta"] == 300000 and cfg.max_position_embeddings == 32768
    # an explicit eos_token in the recipe wins
    trainer2, _ = build_sft_trainer(str(model), ROWS, tmp_path / "out2", lora=LoraConfig(enabled=False), seed=0,
                                    training_args={"max_steps": 1, "eos_token": "<|im_end|>", "max_length": 128})
    assert trainer2.model.config.rope_parameters["rope_theta"] == 10000  # no rope setting: the model's own


@pytest.mark.slow
def test_trained_qwen_math_student_saves_its_turn_eos_and_rope(tmp_path):
    from distill.training.sft import train_sft

    model = tiny_model(QWEN_MATH, tmp_path / "qwen-math")
    train_sft(str(model), ROWS, tmp_path / "student", lora=LoraConfig(enabled=False), seed=0,
              training_args={"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128},
              rope=RopeSettings(theta=300000, max_position_embeddings=32768))
    saved = tmp_path / "student"
    im_end = 151645
    config = json.loads((saved / "config.json").read_text())
    gen = json.loads((saved / "generation_config.json").read_text())
    assert config["eos_token_id"] == im_end and im_end in (gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]])
    assert config["max_position_embeddings"] == 32768 and config["rope_parameters"]["rope_theta"] == 300000
    assert AutoTokenizer.from_pretrained(saved).eos_token == "<|im_end|>"


def test_llama_base_student_needs_and_gets_a_chat_template(tmp_path):
    model = tiny_model(LLAMA_BASE, tmp_path / "llama")
    need(LLAMA_INSTRUCT)
    args = {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256}
    with pytest.raises(ValueError, match="has no chat template: set the student's chat_template"):
        build_sft_trainer(str(model), ROWS, tmp_path / "o", lora=LoraConfig(enabled=False), seed=0, training_args=args)
    trainer, lint = build_sft_trainer(str(model), ROWS, tmp_path / "o", lora=LoraConfig(enabled=False), seed=0, training_args=args,
                                      chat_template=str(LLAMA_INSTRUCT))
    assert trainer.args.eos_token == "<|eot_id|>" and "<|eot_id|>" in lint["stop_tokens"]
    assert trainer.model.config.eos_token_id == 128009


def test_recipes_set_student_templates_eos_and_rope():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        r = load_recipe(path)
        for s in r.students:
            if "Qwen2.5-Math" in s.model:
                assert s.rope is not None and s.rope.theta == 300000 and s.rope.max_position_embeddings == 32768, path.name
            if s.model == "meta-llama/Llama-3.1-8B":
                assert s.chat_template == "meta-llama/Llama-3.3-70B-Instruct", path.name
            if s.model.startswith("Qwen/Qwen2.5") and "Instruct" not in s.model:
                assert s.training_args.get("eos_token") == "<|im_end|>", path.name
            if s.model.startswith("meta-llama/Llama-3.1"):
                assert s.training_args.get("eos_token") == "<|eot_id|>", path.name


def test_unset_rope_keeps_the_students_fingerprint():
    demo = load_recipe(REPO / "recipes" / "demo.yaml")
    assert "rope" not in demo.model_dump()["students"][0]
    set_ = load_recipe(REPO / "recipes" / "demo.yaml", ["students.0.rope={theta: 300000}"])
    assert set_.model_dump()["students"][0]["rope"] == {"theta": 300000.0, "max_position_embeddings": None}


# --- 3. eval and an existing teacher -----------------------------------------------------------------------


def test_eval_leaves_an_existing_teacher_out_unless_asked():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        r = load_recipe(path)
        assert r.eval.include_teacher is r.teacher.enabled, path.name
    r = load_recipe(REPO / "recipes" / "r1-distill-qwen2.5-math-7b.yaml")
    assert r.teacher.enabled is False and r.eval.include_teacher is False
    assert load_recipe(REPO / "recipes" / "r1-distill-qwen2.5-math-7b.yaml", ["eval.include_teacher=true"]).eval.include_teacher is True
    demo = load_recipe(REPO / "recipes" / "demo.yaml")
    assert demo.teacher.enabled and demo.eval.include_teacher is True  # the demo trains its teacher: eval as before


# --- 4. few-shot cold start ----------------------------------------------------------------------------------


class ContinuingModel:
    """Stands in for an LLM that writes the R1 format: it renders the prompt with the real tokenizer and
    template, continues after a prefilled `<think>` when the prompt ends with one (and opens its own block
    otherwise, as a model does), and answers the even sums right, the odd ones wrong."""

    name, version = "continuing", "1"

    def __init__(self, path: str, chat_template: str | None):
        self.tokenizer, self.chat_template = AutoTokenizer.from_pretrained(path), chat_template
        self.asked: list[str] = []

    def generate(self, requests, params):
        out = []
        ids = render_prompts(self.tokenizer, requests, self.chat_template)
        for req, prompt_ids in zip(requests, ids):
            prompt = self.tokenizer.decode(prompt_ids)
            q = req.messages[-1]["content"]
            self.asked.append(req.request_id)
            a, b = (int(x) for x in re.findall(r"\d+", q)[:2])
            total = a + b if (a + b) % 2 == 0 else a + b + 1
            body = f"{a} plus {b}: add the ones, carry, and check by counting up from {a}.\n</think>\nThe answer is \\boxed{{{total}}}."
            text = body if prompt.endswith("<think>\n") else "<think>\n" + body
            out.append(Result(req.request_id, len(prompt_ids), [Completion(text, "stop", 20)] * params.n))
        return out

    def close(self):
        pass


def test_fewshot_cold_start_keeps_good_samples_under_prefill_think_in_rounds(tiny_llama, monkeypatch):
    import rl.cold_start as cs
    from rl.templates import build_template

    engines = []

    def engine_for(section, model, *, seed=None, chat_template=None):
        engines.append(ContinuingModel(model, chat_template))
        return engines[-1]

    monkeypatch.setattr(cs, "engine_for", engine_for)
    teacher = TeacherConfig.model_validate({"template": {"name": "chat", "prefill_think": True}, "cold_start": {
        "source": "fewshot", "n_examples": 6, "fewshot": {"samples_per_prompt": 2, "examples": str(REPO / "data" / "cold_start_examples.jsonl")}}})
    template = build_template(teacher.template, AutoTokenizer.from_pretrained(tiny_llama))
    assert template.prefill == "<think>\n" and template.render_prefill
    prompts = load_prompts(PromptsConfig(n_train=60, n_eval=2))[0]
    stats: dict = {}
    rows = cs.collect(teacher.cold_start, template, seed=0, exclude=set(), model=str(tiny_llama), prompts=prompts, stats=stats)
    assert len(rows) == 6 and len({r["prompt"] for r in rows}) == 6
    for r in rows:  # the whole turn, one think block, prefill counted once
        assert r["completion"].startswith("<think>\n") and r["completion"].count("<think>") == 1
    # rounds: far fewer prompts than the 60 available were generated for, one engine for all rounds
    assert len(engines) == 1 and len(engines[0].asked) == stats["prompts_used"] < 30
    assert 1 <= len(stats["rounds"]) <= stats["max_rounds"] and stats["kept"] == 6 and stats["prompts_available"] == 60
    assert stats["rounds"][0]["prompts"] == 6  # round 1 asks n_examples prompts


def test_fewshot_rounds_are_bounded(tiny_llama, monkeypatch):
    import rl.cold_start as cs
    from rl.templates import Template

    class Wrong(ContinuingModel):
        def generate(self, requests, params):
            self.asked += [r.request_id for r in requests]
            return [Result(r.request_id, 1, [Completion("<think>\nno idea\n</think>\n\\boxed{-1}", "stop", 5)]) for r in requests]

    monkeypatch.setattr(cs, "engine_for", lambda section, model, **kw: Wrong(model, None))
    cfg = TeacherConfig.model_validate({"cold_start": {"source": "fewshot", "n_examples": 1, "fewshot": {
        "examples": str(REPO / "data" / "cold_start_examples.jsonl")}}}).cold_start
    stats: dict = {}
    with pytest.raises(ValueError, match="kept no sample"):
        cs.collect(cfg, Template("chat", "boxed"), seed=0, exclude=set(), model=str(tiny_llama),
                   prompts=load_prompts(PromptsConfig(n_train=400, n_eval=2))[0], stats=stats)
    assert len(stats["rounds"]) == cs.MAX_FEWSHOT_ROUNDS and [r["prompts"] for r in stats["rounds"]][:3] == [1, 2, 4]


def test_a_teacher_trained_with_a_rendered_prefill_samples_with_it(tiny_llama, tmp_path):
    # R1 recipes on a base model (prefill_think: true): GRPO's prompts end with <think>; the saved teacher's
    # template must too, or sampling from it renders prompts without it and its traces lose the block
    import shutil

    from distill.config.teacher import TemplateConfig
    from rl.templates import build_template, save_prefill_template

    saved = Path(shutil.copytree(tiny_llama, tmp_path / "teacher"))
    before = AutoTokenizer.from_pretrained(saved)
    template = build_template(TemplateConfig(name="chat", prefill_think=True), before)
    assert generation_prefill(before) == "" and save_prefill_template(saved, template)
    after = AutoTokenizer.from_pretrained(saved)
    assert generation_prefill(after) == "<think>\n"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nx\n</think>\ny"}]
    assert after.apply_chat_template(chat, tokenize=False) == before.apply_chat_template(chat, tokenize=False)
    assert not save_prefill_template(saved, template)  # a rerun leaves it
    plain = build_template(TemplateConfig(name="chat"), before)
    assert not save_prefill_template(tiny_llama, plain)  # no prefill asked: the demo's teacher is saved as it was


def test_eval_uses_the_template_each_student_trains_with(tmp_path):
    """A base student without a chat template of its own (Llama-3.1-8B) is evaluated, before and after SFT,
    with the template the recipe gives it; the eval engines were built with none and the before-SFT model
    could not render a prompt. Other models keep their own template (None)."""
    from distill.config.recipe import recipe_from_dict
    from distill.stage_fns import eval_engine_factory

    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    recipe = recipe_from_dict({"name": "t", "students": [{"name": "s", "model": "org/base", "chat_template": jinja}]})
    templates = {"/models/base": jinja, "/run/students/s/model": jinja}
    before = eval_engine_factory(recipe.eval, templates, {}, "/models/base")
    teacher = eval_engine_factory(recipe.eval, templates, {}, "/run/teacher/model")
    assert before.keywords["chat_template"] == jinja and before.args[1] == "/models/base"
    assert teacher.keywords["chat_template"] is None


def test_eval_engine_holds_a_shorter_model_to_its_context():
    """vLLM refuses a max_model_len over a model's positions: the base student before long-context SFT gets
    its own (4,096 for Qwen2.5-Math), every other model the eval section's."""
    from distill.config.recipe import recipe_from_dict
    from distill.stage_fns import eval_engine_factory

    recipe = recipe_from_dict({"name": "t", "eval": {"vllm": {"max_model_len": 32768}}})
    base = eval_engine_factory(recipe.eval, {}, {"/models/base": 4096}, "/models/base")
    after = eval_engine_factory(recipe.eval, {}, {"/models/base": 4096}, "/run/students/s/model")
    assert base.args[0].vllm.max_model_len == 4096 and after.args[0].vllm.max_model_len == 32768
    assert recipe.eval.vllm.max_model_len == 32768  # the recipe's section is not changed


def test_model_context_reads_the_config(tmp_path):
    from distill.core.models import model_context

    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4096}')
    assert model_context(str(tmp_path)) == 4096
    assert model_context(str(tmp_path / "missing")) is None
