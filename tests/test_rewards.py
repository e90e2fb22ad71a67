"""Each GRPO reward on hand-written completions: prefilled <think>, empty think, mixed language, no gold."""

import polars as pl
import pytest

from distill.config.base import RecipeError
from distill.config.recipe import recipe_from_dict
from distill.config.rewards import REWARD_NAMES, AccuracyReward, FormatReward, LengthReward
from distill.config.teacher import TemplateConfig
from filters.curate import score
from rl.rewards import REWARDS, Accuracy, Format, LanguageConsistency, Length, Repetition, build_rewards
from rl.templates import Template, build_template, template_prefill

GOOD = "<think>\n20 + 30 = 50, 3 + 4 = 7\n</think>\nThe answer is \\boxed{57}."
CHAT = Template("chat", "boxed")
PREFILLED = Template("chat", "boxed", prefill="<think>\n")  # the template's prompt ends with "<think>\n"
ZERO = Template("r1_zero", "answer_tag")


@pytest.mark.parametrize(
    "completion,answer,expected",
    [
        (GOOD, "57", 1.0),
        (GOOD, "58", 0.0),
        ("<think></think>\n\\boxed{57}", "57", 1.0),  # accuracy ignores the format
        ("<think>thinking forever", "57", 0.0),  # no answer at all: wrong, not unjudgeable
        (GOOD, "\\frac{", None),  # unparseable gold: cannot judge
        (GOOD, None, None),
        (GOOD, "", None),
    ],
)
def test_accuracy(completion, answer, expected):
    assert Accuracy(CHAT)([completion], answer=[answer]) == [expected]


def test_accuracy_reads_the_answer_tag_and_prefilled_completions():
    zero = "<think> 20 + 37 = 57, not 50 </think> <answer> 57 </answer>"
    assert Accuracy(ZERO)([zero], answer=["57"]) == [1.0]
    assert Accuracy(ZERO)(["<think> 50 is close </think> <answer> 58 </answer> 57"], answer=["57"]) == [0.0]
    assert Accuracy(PREFILLED)(["20 + 37 = 57\n</think>\n\\boxed{57}"], answer=["57"]) == [1.0]


@pytest.mark.parametrize(
    "template,completion,expected",
    [
        (CHAT, GOOD, 1.0),
        (CHAT, "<think></think>\n\\boxed{57}", 0.0),  # empty think
        (CHAT, "<think>a</think><think>b</think>\\boxed{57}", 0.0),  # two blocks
        (CHAT, "<think>only reasoning</think>", 0.0),  # no answer after it
        (CHAT, "\\boxed{57}", 0.0),
        (CHAT, "<think>中文推理 57</think>\n\\boxed{57}", 1.0),  # the language is another reward's business
        # prefilled <think>: the model wrote only the rest, and the reward re-adds the prefill
        (PREFILLED, "20 + 30 = 50\n</think>\n\\boxed{57}", 1.0),
        (PREFILLED, "<think>20 + 30 = 50\n</think>\n\\boxed{57}", 0.0),  # a second <think> after the prefill
        (PREFILLED, "\n</think>\n\\boxed{57}", 0.0),  # empty think behind the prefill
        (CHAT, "20 + 30 = 50\n</think>\n\\boxed{57}", 0.0),  # without a prefill that is a broken block
        (ZERO, "<think> 2 + 3 = 5 </think> <answer> 5 </answer>", 1.0),
        (ZERO, "<think> 2 + 3 = 5 </think> 5", 0.0),  # answer_tag format: the tags are required
        (ZERO, "<think> 2 + 3 = 5 </think> <answer> </answer>", 0.0),
        (ZERO, "<think> 2 + 3 = 5 </think> <answer> 5 </answer> and more", 0.0),
    ],
)
def test_format(template, completion, expected):
    assert Format(template)([completion]) == [expected]


def test_language_consistency_is_the_curation_share_of_the_reasoning():
    reward = LanguageConsistency(CHAT)
    english = "<think>\nI add the tens first, then the ones, and the sum is 57.\n</think>\n\\boxed{57}"
    mixed = "<think>\nI add the tens first. 然后我们把个位数加起来得到结果。 The sum is 57.\n</think>\n\\boxed{57}"
    chinese_answer_only = "<think>\nI add the tens first, then the ones.\n</think>\n答案是 \\boxed{57}"
    out = reward([english, mixed, "<think></think>\\boxed{57}", "no think block", chinese_answer_only],
                 question=["What is 20 + 37?"] * 5, language=["en"] * 5)
    assert out[0] == 1.0
    assert 0.0 < out[1] < 0.9  # mixed language: part of the chain of thought is Chinese
    assert out[2] is None and out[3] is None  # empty think / no chain of thought: nothing to judge
    assert out[4] == 1.0  # only the reasoning is measured
    # the prompt's language decides the target when the row has none
    zh = "<think>\n我们先把十位相加，再把个位相加，结果是五十七。\n</think>\n\\boxed{57}"
    assert reward([zh], question=["二十加三十七等于多少？"], language=[None]) == [1.0]
    assert reward([english], question=["二十加三十七等于多少？"], language=[None])[0] < 0.5


def test_language_consistency_matches_the_curate_stage():
    text = "<think>\nLet me add. Nous ajoutons les dizaines et puis les unités, et nous obtenons le résultat.\n</think>\n\\boxed{57}"
    reward = LanguageConsistency(CHAT, scope="completion")([text], question=["What is 20 + 37?"], language=["en"])[0]
    curated = score(pl.DataFrame({"id": ["a"], "prompt": ["What is 20 + 37?"], "completion": [text], "language": ["en"]}))
    assert reward == pytest.approx(curated["target_lang_share"][0]) and reward < 1.0


def test_length_is_dapo_soft_overlong_penalty():
    reward = Length(CHAT, max_tokens=100, buffer_tokens=20)
    ids = [[0] * n for n in (10, 80, 90, 100)]
    assert reward(["x"] * 4, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0]
    with pytest.raises(ValueError, match="max_tokens"):
        Length(CHAT)


def test_repetition_penalises_loops_only():
    loop = "<think>\n" + "Let me check the sum again carefully.\n" * 12 + "</think>\n\\boxed{57}"
    out = Repetition(CHAT, max_penalty=0.5)([GOOD, loop])
    assert out[0] == 0.0 and -0.5 <= out[1] < -0.3


def test_conversational_completions_weights_and_names():
    specs = [AccuracyReward(), FormatReward(weight=0.5), LengthReward(options={"buffer_tokens": 4})]
    funcs, weights = build_rewards(specs, CHAT, max_completion_length=16)
    conv = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": "no idea"}]]
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "length"] and weights == [1.0, 0.5, 1.0]
    assert funcs[0](conv, answer=["57", "57"]) == [1.0, 0.0]
    assert funcs[1](conv) == [1.0, 0.0]
    assert funcs[2].max_tokens == 16  # the length penalty defaults to GRPO's completion limit


def test_code_accuracy_runs_a_batch_in_parallel():
    tests = '[{"input": "2 3\\n", "output": "5\\n"}]'
    right = "<think>read two ints</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    wrong = "<think>oops</think>\n```python\nprint(0)\n```"
    reward = Accuracy(CHAT, workers=4)
    out = reward([right, wrong, right, "<think>no code</think> sorry"], answer=[tests] * 3 + [tests], task=["code"] * 4)
    assert out == [1.0, 0.0, 1.0, 0.0]
    assert reward([right], answer=["not json"], task=["code"]) == [None]  # unparseable tests: cannot judge


def _rewards(*rewards):
    return recipe_from_dict({"name": "x", "teacher": {"grpo": {"rewards": list(rewards)}}}).teacher.grpo.rewards


@pytest.mark.parametrize(
    "reward,field,message",
    [
        ({"name": "accuracy", "options": {"verifier": "magic"}}, "options.verifier", "'auto', 'math' or 'code'"),
        ({"name": "accuracy", "options": {"workers": "8"}}, "options.workers", "valid integer"),  # strict types
        ({"name": "accuracy", "options": {"workers": True}}, "options.workers", "valid integer"),
        ({"name": "language_consistency", "options": {"scop": "reasoning"}}, "options.scop", "unknown field"),
        ({"name": "length", "options": {"max_tokens": "many"}}, "options.max_tokens", "valid integer"),
        ({"name": "length", "options": {"max_tokens": 1}}, "options.max_tokens", "greater than or equal to 2"),
        ({"name": "length", "options": {"max_tokens": 8, "buffer_tokens": 8}}, "options", r"buffer_tokens must be in 1\.\.7"),
        ({"name": "repetition", "options": {"max_penalty": "high"}}, "options.max_penalty", "a number"),
        ({"name": "format", "options": {"strict": True}}, "options.strict", "unknown field"),
        ({"name": "format", "wieght": 2}, "wieght", "unknown field"),
        ({"name": "accurasy"}, "", "unknown name 'accurasy'"),
        ({"weight": 1.0}, "name", "Field required"),
    ],
)
def test_a_bad_reward_is_rejected_at_load_naming_the_field(reward, field, message):
    where = "teacher.grpo.rewards.1" + (f".{field}" if field else "")
    with pytest.raises(RecipeError, match=rf"{where.replace('.', chr(92) + '.')}: .*{message}"):
        _rewards({"name": "format"}, reward)


def test_rewards_load_typed_and_dump_as_written():
    acc, length, rep = _rewards({"name": "accuracy", "options": {"verifier": "code"}}, {"name": "length", "weight": 2},
                                {"name": "repetition", "options": {"max_penalty": 1}})
    assert (acc.options.verifier, acc.options.workers) == ("code", 8) and length.weight == 2.0
    assert length.options.max_tokens is None and rep.options.max_penalty == 1
    assert [r.model_dump()["options"] for r in (acc, length, rep)] == [{"verifier": "code"}, {}, {"max_penalty": 1}]
    with pytest.raises(RecipeError, match="duplicate reward"):
        _rewards({"name": "format"}, {"name": "format"})
    with pytest.raises(RecipeError, match="at least one reward"):
        _rewards()


def test_every_reward_name_has_one_reward_class():
    assert tuple(REWARDS) == REWARD_NAMES == ("accuracy", "format", "language_consistency", "length", "repetition")
    assert all(REWARDS[n].entry.model_fields["name"].default == n for n in REWARD_NAMES)


def test_keyword_options_are_validated_like_the_recipe():
    with pytest.raises(ValueError, match="options.scope"):
        LanguageConsistency(CHAT, scope="everything")
    with pytest.raises(ValueError, match="options.verifier"):
        Accuracy(CHAT, verifier="magic")
    assert Length(CHAT, max_completion_length=40).buffer == 10  # a quarter of GRPO's limit by default


def test_prefill_is_read_from_the_chat_template(tiny_llama):
    from transformers import AutoTokenizer  # heavy: only this test loads a tokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert template_prefill(tok) == ""
    # an R1-Distill-style template that opens the think block itself
    tok.chat_template = tok.chat_template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    assert template_prefill(tok) == "<think>\n"
    t = build_template(TemplateConfig(), tok)
    assert t.prefill == "<think>\n" and not t.render_prefill and isinstance(t.prompt("q"), list)
    assert Format(t)(["reasoning here\n</think>\n\\boxed{1}"]) == [1.0]
    # asked to prefill with a template that does not: the prompt is rendered here and ends with <think>
    tok2 = AutoTokenizer.from_pretrained(tiny_llama)
    t2 = build_template(TemplateConfig(prefill_think=True), tok2)
    assert t2.prompt("What is 1 + 1?", tok2).endswith("<|im_start|>assistant\n<think>\n")
