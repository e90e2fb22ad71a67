"""`distill check`: the shipped recipes against the real tokenizers and configs (../shared/tokenizers), and
each defect of the production review reintroduced as a small override of a shipped recipe.

Overrides edit the recipe's YAML data (a key removed is removed), so they hold before and after the
schema gains the fields the fixes add. Tests that need the shared folders skip where they are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from distill.check import hardware, lengths, mix, templates
from distill.check.models import load_model_info
from distill.check.preflight import check_recipe, format_report
from distill.cli import main
from distill.config.base import RecipeError
from distill.config.recipe import load_recipe, read_yaml, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO.parent / "shared" / "tokenizers"
RECIPES = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
needs_tokenizers = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"{TOKENIZERS} (the shared offline tokenizers) is absent")


def recipe(name: str, edit: Callable[[dict], None] | None = None):
    data = read_yaml((REPO / "recipes" / name).read_text())
    if edit is not None:
        edit(data)
    return recipe_from_dict(data, source=name)


def check(name: str, edit: Callable[[dict], None] | None = None):
    return check_recipe(recipe(name, edit), TOKENIZERS)


def errors(c) -> dict[str, str]:
    return {f.field: f.message for f in c.findings if f.level == "ERROR"}


# --- the demo -------------------------------------------------------------------------------------------


def test_demo_passes_without_models():
    c = check_recipe(load_recipe(REPO / "recipes" / "demo.yaml"))
    assert not c.errors, format_report(c)
    assert format_report(c).splitlines()[-1].startswith("OK demo: 0 error(s)")


def test_cli_check_exit_status_and_lines(capsys):
    assert main(["check", "--config", str(REPO / "recipes" / "demo.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK demo")


# --- every shipped recipe -------------------------------------------------------------------------------

# At 53ad4cc every real recipe failed here (no cap on the non-reasoning repeats, 32k traces for 16k SFT,
# Qwen2.5 base EOS, Llama-3.1 base without a template, Qwen2.5-Math at 16k tokens on 4,096 positions, R1's
# prefill lost before SFT, one eval limit over the Qwen2.5-Math base); those fixes have landed.
@needs_tokenizers
@pytest.mark.parametrize("name", RECIPES)
def test_every_shipped_recipe_passes(name):
    c = check(name)
    assert not c.errors, format_report(c)


@needs_tokenizers
def test_eval_holds_a_shorter_base_student_to_its_context(monkeypatch):
    """Qwen2.5-Math before its long-context SFT has 4,096 positions; eval at 32,768 (the student after SFT)
    scores the base within its own context: a warning. The code before (one limit for every model) failed."""
    c = check("r1-distill-qwen2.5-math-7b.yaml")
    warned = [f.message for f in c.findings if f.level == "WARN" and f.field == "eval.vllm.max_model_len"]
    assert warned and "4,096 positions before SFT" in warned[0] and "eval.vllm.max_model_len" not in errors(c)
    monkeypatch.setattr(lengths, "EVAL_HOLDS_BASE_TO_ITS_CONTEXT", False)
    assert "has 4,096 positions" in errors(check("r1-distill-qwen2.5-math-7b.yaml"))["eval.vllm.max_model_len"]
    over = check("r1-distill-qwen2.5-math-7b.yaml", lambda d: d["eval"]["vllm"].update(max_model_len=34816))
    assert "after SFT has 32,768" in errors(over)["eval.vllm.max_model_len"]


# --- each defect, reintroduced into a shipped recipe -----------------------------------------------------


def _student(data: dict, **settings) -> None:
    st = data["students"][0]
    for k, v in settings.items():
        if v is None:
            st.pop(k, None)
        else:
            st[k] = v


@needs_tokenizers
def test_student_max_length_over_the_context():
    def edit(d):
        _student(d, model="Qwen/Qwen2.5-Math-7B", rope=None)
        d["students"][0]["training_args"]["max_length"] = 16384
    msg = errors(check("r1-distill-qwen2.5-math-7b.yaml", edit))["students[0].training_args.max_length"]
    assert "16,384 tokens" in msg and "4,096 positions" in msg and "RoPE base 10000" in msg


@needs_tokenizers
def test_a_rope_setting_or_the_rope_300k_start_lifts_the_context():
    def rope(d):
        _student(d, model="Qwen/Qwen2.5-Math-7B")
        d["students"][0]["training_args"]["model_init_kwargs"] = {"max_position_embeddings": 32768, "rope_theta": 300000.0}
    assert "students[0].training_args.max_length" not in errors(check("r1-distill-qwen2.5-math-7b.yaml", rope))

    def rope_300k(d):
        _student(d, model="open-r1/Qwen2.5-Math-7B-RoPE-300k", rope=None)
    c = check("r1-distill-qwen2.5-math-7b.yaml", rope_300k)
    assert "students[0].training_args.max_length" not in errors(c)
    # a config-only folder: its tokenizer is the base model's, and the output says so
    assert any("Qwen/Qwen2.5-Math-7B's tokenizer" in n for n in c.notes)


@needs_tokenizers
def test_curated_traces_longer_than_the_sft_length(monkeypatch):
    def edit(d):
        d["curate"]["max_completion_tokens"] = 32768
        d["curate"].pop("max_sft_tokens", None)
        d["sampling"]["max_tokens"] = 32768
        d.get("merge", {}).pop("max_tokens", None)
        d["students"][0]["training_args"]["max_length"] = 16384
    monkeypatch.setattr(lengths, "CURATE_DROPS_OVER_SFT_LENGTH", False)  # the code before the fix: curation keeps them
    msg = errors(check("r1-distill-qwen2.5-32b.yaml", edit))["curate.max_completion_tokens"]
    assert "32,768" in msg and "students[0].training_args.max_length is 16,384" in msg and "EOS" in msg
    # merge.max_tokens at the SFT length drops the long rows with their reason instead
    assert "curate.max_completion_tokens" not in errors(check("r1-distill-qwen2.5-32b.yaml", lambda d: (edit(d), d["merge"].update(max_tokens=16384))))
    monkeypatch.setattr(lengths, "CURATE_DROPS_OVER_SFT_LENGTH", True)  # curation drops them (too_long_for_sft)
    assert "curate.max_completion_tokens" not in errors(check("r1-distill-qwen2.5-32b.yaml", edit))


@needs_tokenizers
def test_sampling_parallelism_larger_than_a_node_without_multi_node():
    def edit(d):
        v = d["sampling"]["vllm"]
        v.update(tensor_parallel_size=8, pipeline_parallel_size=2)
        v.pop("distributed_executor_backend", None)
        v.pop("nodes", None)
    try:
        c = check("r1-distill-qwen2.5-14b.yaml", edit)
    except RecipeError as e:  # a schema that validates the layout itself refuses it at load, naming the field
        assert "sampling.vllm" in str(e)
        return
    assert "2 = 16 GPUs per engine" in errors(c)["sampling.vllm.pipeline_parallel_size"]


@needs_tokenizers
def test_eval_max_model_len_over_the_context():
    c = check("r1-zero-qwen2.5-math-7b.yaml", lambda d: d["eval"]["vllm"].update(max_model_len=8192))
    msgs = [f.message for f in c.errors if f.field == "eval.vllm.max_model_len"]
    assert "8,192 tokens per sequence, but Qwen/Qwen2.5-Math-7B has 4,096 positions (max_position_embeddings)" in msgs  # the teacher

    def no_rope(d):  # a student without a long-context setting keeps its 4,096 positions after SFT as well
        d["eval"]["vllm"].update(max_model_len=8192)
        d["students"][0].pop("rope", None)
    msgs = [f.message for f in check("r1-zero-qwen2.5-math-7b.yaml", no_rope).errors if f.field == "eval.vllm.max_model_len"]
    assert "8,192 tokens per sequence, but Qwen/Qwen2.5-Math-1.5B has 4,096 positions (max_position_embeddings)" in msgs  # the student


@needs_tokenizers
def test_r1_prefill_lost_between_sampling_and_sft(monkeypatch):
    monkeypatch.setattr(templates, "CARRIES_PREFILL", False)  # the code before the fix: no prefill column
    msg = errors(check("r1-distill-qwen2.5-14b.yaml"))["teacher.model"]
    assert "'<think>\\n'" in msg and "'</think>'" in msg and "lint" in msg
    monkeypatch.setattr(templates, "CARRIES_PREFILL", True)
    assert "teacher.model" not in errors(check("r1-distill-qwen2.5-14b.yaml"))


@needs_tokenizers
def test_a_grpo_prefill_the_sampled_template_lacks(monkeypatch):
    monkeypatch.setattr(templates, "TEACHER_SAVES_PREFILL_TEMPLATE", False)  # the code before the fix
    c = check("r1-qwen2.5-math-7b.yaml")
    assert "the sample stage prompts the teacher without it" in {f.field: f.message for f in c.findings}["teacher.template.prefill_think"]
    monkeypatch.setattr(templates, "TEACHER_SAVES_PREFILL_TEMPLATE", True)
    assert all(f.field != "teacher.template.prefill_think" for f in check("r1-qwen2.5-math-7b.yaml").findings)


@needs_tokenizers
def test_a_chat_endpoint_cannot_record_the_prefill():
    c = check("r1-distill-qwen2.5-14b.yaml", lambda d: d["sampling"].update(engine="openai", openai={"endpoint": "chat"}))
    assert "use endpoint: completions" in errors(c)["sampling.openai.endpoint"]


@needs_tokenizers
def test_qwen_base_student_turn_ending_eos(monkeypatch):
    unset = lambda d: d["students"][0]["training_args"].pop("eos_token", None)  # noqa: E731  (the recipe before its fix)
    monkeypatch.setattr(templates, "EOS_FROM_TEMPLATE", False)  # the code before the fix: the tokenizer's EOS
    msg = errors(check("r1-distill-qwen2.5-14b.yaml", unset))["students[0].training_args.eos_token"]
    assert "'<|im_end|>'" in msg and "'<|endoftext|>'" in msg
    monkeypatch.setattr(templates, "EOS_FROM_TEMPLATE", True)  # SFT takes the template's turn end as EOS
    assert "students[0].training_args.eos_token" not in errors(check("r1-distill-qwen2.5-14b.yaml", unset))
    # a recipe that names the wrong EOS is refused whatever the code does
    wrong = lambda d: d["students"][0]["training_args"].update(eos_token="<|endoftext|>")  # noqa: E731
    assert "set students[0].training_args.eos_token: '<|im_end|>'" in errors(check("r1-distill-qwen2.5-14b.yaml", wrong))["students[0].training_args.eos_token"]


@needs_tokenizers
def test_llama_base_student_without_a_chat_template():
    c = check("r1-distill-llama-3.1-8b.yaml", lambda d: _student(d, chat_template=None))
    assert "no chat template" in errors(c)["students[0].chat_template"]
    borrowed = check("r1-distill-llama-3.1-8b.yaml", lambda d: _student(d, chat_template=str(TOKENIZERS / "meta-llama--Llama-3.3-70B-Instruct")))
    assert "students[0].chat_template" not in errors(borrowed)
    assert "students[0].training_args.eos_token" not in errors(borrowed)


@needs_tokenizers
def test_eval_of_a_teacher_too_big_for_the_eval_gpus():
    c = check("r1-distill-qwen2.5-14b.yaml", lambda d: d["eval"].update(include_teacher=True))
    msg = errors(c)["eval.include_teacher"]
    assert "deepseek-ai/DeepSeek-R1 needs 625 GiB" in msg and "4 x 1" in msg
    assert "eval.include_teacher" not in errors(check("r1-distill-qwen2.5-14b.yaml", lambda d: d["eval"].update(include_teacher=False)))


@needs_tokenizers
def test_grpo_micro_batch_activations():
    def edit(d):
        d["teacher"]["grpo"]["training_args"].update(per_device_train_batch_size=8, max_completion_length=16384)
    msg = errors(check("r1-qwen2.5-32b.yaml", edit))["teacher.grpo.training_args.per_device_train_batch_size"]
    assert "8 completion(s) x (16,384" in msg and "activations alone exceed the GPU" in msg


@needs_tokenizers
def test_a_7b_full_sft_in_one_process(monkeypatch):
    never = lambda d: d["students"][0]["hardware"].update(launch="never")  # noqa: E731
    msg = errors(check("r1-distill-qwen2.5-math-7b.yaml", never))["students[0].hardware.launch"]
    assert "in one process on one H100-80GB" in msg and "asks for 8 GPUs" in msg
    assert "students[0].hardware.launch" not in errors(check("r1-distill-qwen2.5-math-7b.yaml"))  # auto: accelerate launch
    monkeypatch.setattr(hardware, "LAUNCH_FIELD", "no-such-field")  # the code before the fix: always in-process
    assert "no launcher" in errors(check("r1-distill-qwen2.5-math-7b.yaml"))["students[0].hardware"]
    # several nodes: `distill run` stops at the sft stage, which the check says before the sampling is paid for
    monkeypatch.undo()
    warned = {f.field: f for f in check("r1-distill-qwen2.5-14b.yaml").findings}["students[0].hardware.nodes"]
    assert warned.level == "WARN" and "2 nodes" in warned.message and "distill launch" in warned.message


@needs_tokenizers
def test_non_reasoning_upsampling_factor_is_stated(monkeypatch):
    monkeypatch.setattr(mix, "NONREASONING_CAP_FIELDS", ())  # the schema before the fix: no cap
    c = check("r1-distill-qwen2.5-14b.yaml")
    msg = errors(c)["merge.non_reasoning_fraction"]
    assert "48 non-reasoning rows" in msg and "e+05 times" in msg and "no cap" in msg
    monkeypatch.undo()
    c = check("r1-distill-qwen2.5-14b.yaml")
    (field, msg), = [(f.field, f.message) for f in c.findings if f.field.startswith("merge.") and "repeated" in f.message]
    assert "48 non-reasoning rows" in msg and "e+05 times" in msg
    assert (field == "merge.non_reasoning_fraction") == ("no cap" in msg)  # a version with a cap states it and its default
    if field != "merge.non_reasoning_fraction":
        assert "default" in msg


# --- loading -------------------------------------------------------------------------------------------


@needs_tokenizers
def test_r1_distill_llama_falls_back_to_the_base_tokenizer_with_its_own_template():
    info = load_model_info("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", TOKENIZERS)
    assert len(info.tokenizer) > 128_000 and info.tokenizer.chat_template.endswith("{% endif %}")
    assert "<think>\\n" in info.tokenizer.chat_template
    assert info.notes and "meta-llama/Llama-3.1-8B's tokenizer and its own chat template" in info.notes[0]


def test_without_models_a_hub_id_fails_offline_naming_the_field():
    c = check_recipe(recipe("r1-distill-qwen2.5-14b.yaml", lambda d: _student(d, model="nobody-org/no-such-model-xyz")))
    msg = errors(c)["students[0].model"]
    assert "no-such-model-xyz" in msg and "--models" in msg


def test_run_checks_the_demo_first_then_runs_it(tmp_path, capsys, monkeypatch):
    import distill.cli as cli

    ran = []
    monkeypatch.setattr(cli, "run_pipeline", lambda run, only=None: ran.append(run.dir) or {})  # the stages themselves
    assert main(["run", "--config", str(REPO / "recipes" / "demo.yaml"), "--no-prefect", "--run-dir", str(tmp_path / "run")]) == 0
    assert "OK demo: 0 error(s)" in capsys.readouterr().err and ran == [tmp_path / "run"]


@needs_tokenizers
def test_run_refuses_a_failing_recipe_before_any_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILL_ALLOW_CPU", "1")  # past the GPU requirement: the check is what refuses it here
    data = read_yaml((REPO / "recipes" / "r1-distill-qwen2.5-14b.yaml").read_text())
    data["eval"]["vllm"]["max_model_len"] = 10**6
    cfg = tmp_path / "r.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", "--config", str(cfg), "--models", str(TOKENIZERS), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "ERROR eval.vllm.max_model_len" in err and "--no-check" in err
    assert not (tmp_path / "run").exists()
