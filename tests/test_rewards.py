import pytest

from distill.recipe import RewardSpec
from rl.rewards import accuracy_reward, build_rewards, format_reward

GOOD = "<think>\n20 + 30 = 50, 3 + 4 = 7\n</think>\nThe answer is \\boxed{57}."


@pytest.mark.parametrize(
    "completion,answer,expected",
    [
        (GOOD, "57", 1.0),
        (GOOD, "58", 0.0),
        ("20 + 30 = 50\n</think>\n\\boxed{57}", "57", 1.0),  # template prefilled <think>
        ("<think></think>\n\\boxed{57}", "57", 1.0),  # accuracy ignores the format
        ("<think>thinking forever", "57", 0.0),  # no answer at all: wrong, not unjudgeable
        (GOOD, "\\frac{", None),  # unparseable gold: cannot judge
        (GOOD, None, None),
    ],
)
def test_accuracy(completion, answer, expected):
    assert accuracy_reward()([completion], answer=[answer]) == [expected]


@pytest.mark.parametrize(
    "completion,expected",
    [
        (GOOD, 1.0),
        ("20 + 30 = 50\n</think>\n\\boxed{57}", 1.0),  # prefilled <think>: the model wrote the rest
        ("<think></think>\n\\boxed{57}", 0.0),  # empty think
        ("<think>a</think><think>b</think>\\boxed{57}", 0.0),  # two blocks
        ("<think>only reasoning</think>", 0.0),  # no answer after it
        ("\\boxed{57}", 0.0),
        ("<think>中文推理 57</think>\n\\boxed{57}", 1.0),  # the language is another reward's business
    ],
)
def test_format(completion, expected):
    assert format_reward()([completion]) == [expected]


def test_conversational_completions_and_weights():
    funcs, weights = build_rewards([RewardSpec(name="accuracy", weight=1.0), RewardSpec(name="format", weight=0.5)])
    conv = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": "no idea"}]]
    assert [f.__name__ for f in funcs] == ["accuracy", "format"] and weights == [1.0, 0.5]
    assert funcs[0](conv, answer=["57", "57"]) == [1.0, 0.0]
    assert funcs[1](conv) == [1.0, 0.0]
