"""Curation stage: hand-written traces with the exact reject reason each must get, and invariants."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from distill.config.curate import CurateConfig
from distill.config.base import RecipeError
from distill.config.recipe import recipe_from_dict
from filters.chaos import chaos_scores
from filters.curate import REASONS, SCORE_COLUMNS, curate, curate_file, reject_reasons, score
from filters.function_words import WORD_LANG, classify
from filters.exemptions import exempt_task_text, requested_languages
from filters.language import detect_language
from filters.language_mixing import lang_switches, latin_language_scores, target_lang_share
from filters.unicode_scripts import expected_scripts, normalize_lang, script_profile, strip_non_language
from filters.readability import is_truncated, max_paragraph_chars, think_format
from filters.repetition import repetition_scores

EN_PROMPT = "What is the value of a/b when a = 12 and b = 4?"
ZH_PROMPT = "当 a = 12，b = 4 时，求 a/b 的值。"

GOOD_EN = (
    "<think>\nWe need to find the value of $\\frac{a}{b}$ when $a = 12$ and $b = 4$. First, substitute "
    "the numbers: $\\frac{12}{4} = 3$. Let me double-check this with a quick computation in Python:\n\n"
    "```python\na, b = 12, 4\nprint(a / b)  # 3.0\n```\n\n"
    "The output is `3.0`, which matches. See https://en.wikipedia.org/wiki/Division_(mathematics) for "
    "the definition. So the fraction equals 3.\n</think>\n\n"
    "Substituting $a=12$ and $b=4$ gives $\\frac{a}{b} = \\frac{12}{4} = 3$.\n\nThe answer is $\\boxed{3}$."
)
GOOD_ZH = (
    "<think>\n我们需要求 $\\frac{a}{b}$ 的值，其中 $a = 12$，$b = 4$。首先把数值代入：$\\frac{12}{4} = 3$。"
    "设 x 为商，令 f(x) = 4x，则 f(x) = 12，所以 x = 3。再检验一下：4 乘以 3 等于 12，结果正确。\n</think>\n\n"
    "代入 $a=12$、$b=4$，得到 $\\frac{a}{b} = 3$。答案是 $\\boxed{3}$。"
)
HALF_ZH_ON_EN = (
    "<think>\nWe need to divide twelve by four. 首先我们把十二分成四等份。Each part then has the same size. "
    "每一份都是三。Let me verify the result by multiplication. 四乘以三等于十二，所以答案正确。\n</think>\n\n"
    "The answer is 3."
)
ALL_RU = (
    "<think>\nНам нужно разделить двенадцать на четыре. Каждая часть равна трём, потому что четыре "
    "умножить на три равно двенадцати.\n</think>\n\nОтвет: 3."
)
PROPER_NOUN = (
    "<think>\nThe question asks for the capital of China, which is Beijing (北京 in Chinese). It has been "
    "the capital for centuries, so the answer is clear and there is nothing else to check here.\n</think>\n\n"
    "The capital of China is Beijing."
)
NO_THINK = "We divide 12 by 4 and get 3. The answer is 3."
TRUNCATED = "<think>\nWe need to divide 12 by 4. Let me think carefully about"
# One paragraph of 3,000+ characters; every sentence differs (numbers), so it is a wall, not a loop.
WALL = (
    "<think>\n"
    + " ".join(f"Step {i}: we multiply {i} by {i + 3} and get {i * (i + 3)}, which we add to the running total." for i in range(1, 45))
    + "\n</think>\n\nThe answer is 3."
)
GENERAL = "Paris is the capital of France. It is known for the Eiffel Tower and the Louvre."


def row(id, completion, prompt=EN_PROMPT, answer="3", task="math", language="en", finish_reason="stop", correct=True):
    return dict(
        id=id,
        prompt=prompt,
        completion=completion,
        answer=answer,
        task=task,
        language=language,
        finish_reason=finish_reason,
        correct=correct,
    )


CASES = [
    # (row, expected reject_reason, expected reject_reasons)
    (row("good_en", GOOD_EN), None, []),
    (row("good_zh", GOOD_ZH, prompt=ZH_PROMPT, language="zh"), None, []),
    (row("good_zh_detected", GOOD_ZH, prompt=ZH_PROMPT, language=None), None, []),
    (row("half_zh", HALF_ZH_ON_EN, language=None), "language_mixing", ["language_mixing"]),
    (row("all_ru", ALL_RU), "wrong_language", ["wrong_language"]),
    (row("proper_noun", PROPER_NOUN, answer="Beijing"), None, []),
    (row("no_think", NO_THINK), "bad_think_format", ["bad_think_format"]),
    (
        row("truncated", TRUNCATED, finish_reason="length", correct=False),
        "truncated",
        ["truncated", "bad_think_format", "incorrect"],
    ),
    (row("truncated_closed", GOOD_EN, finish_reason="length"), "truncated", ["truncated"]),
    (row("wall", WALL), "long_paragraph", ["long_paragraph"]),
    (row("incorrect", GOOD_EN, correct=False), "incorrect", ["incorrect"]),
    (row("unverifiable", GOOD_EN, correct=None), "unverifiable", ["unverifiable"]),
    (row("no_reference", GOOD_EN, answer=None, correct=None), None, []),
    (row("empty_reference", GOOD_EN, answer="  ", correct=None), None, []),
    (row("general", GENERAL, answer=None, task="general", correct=None), None, []),
    (row("code_no_think", NO_THINK, task="code"), "bad_think_format", ["bad_think_format"]),
]


# The rows above reuse one prompt and a few completions, changing one field each: as one frame they
# are duplicates of each other. Dedup is cross-row and has its own tests (tests/test_dedup.py); these
# per-row checks turn it off.
PER_ROW = CurateConfig(dedup={"enabled": False})


@pytest.fixture(scope="module")
def cases_df() -> pl.DataFrame:
    return pl.DataFrame([c[0] for c in CASES], infer_schema_length=None)


@pytest.fixture(scope="module")
def judged(cases_df) -> pl.DataFrame:
    return reject_reasons(cases_df, PER_ROW)


@pytest.mark.parametrize("case", CASES, ids=[c[0]["id"] for c in CASES])
def test_exact_reject_reason(judged, case):
    r, reason, reasons = case
    got = judged.filter(pl.col("id") == r["id"]).row(0, named=True)
    assert got["reject_reason"] == reason, got
    assert got["reject_reasons"] == reasons, got


def test_score_values(judged):
    by_id = {r["id"]: r for r in judged.iter_rows(named=True)}
    assert by_id["good_en"]["target_lang_share"] == 1.0
    assert by_id["good_en"]["lang_switches"] == 0
    assert by_id["good_zh"]["target_lang_share"] >= 0.9
    assert by_id["good_zh_detected"]["target_language"] == "zh"
    assert by_id["half_zh"]["target_language"] == "en"
    assert by_id["half_zh"]["lang_switches"] >= 3
    assert by_id["all_ru"]["target_lang_share"] == 0.0
    assert by_id["proper_noun"]["target_lang_share"] == 1.0
    assert by_id["proper_noun"]["lang_switches"] == 0
    assert by_id["no_think"]["think_format"] == "no_think"
    assert by_id["truncated"]["truncated"] is True
    assert by_id["good_en"]["truncated"] is False
    assert by_id["wall"]["max_paragraph_chars"] > 3000
    assert by_id["good_en"]["completion_chars"] == len(GOOD_EN)
    assert by_id["general"]["think_format"] is None


def test_mostly_foreign_with_one_switch_is_wrong_language():
    # Starts in English, then continues in Chinese for good: mostly another language.
    zh = (
        "我们把十二除以四，得到三。然后再检验一遍结果是否正确。四乘以三等于十二，所以商是三。"
        "也可以用减法来看：十二减四得八，八减四得四，四减四得零，一共减了三次。"
        "这说明十二里面正好有三个四，没有余数。最后确认答案就是三。"
    )
    text = "<think>\nWe need the quotient. " + zh + "\n</think>\n\n答案是 3。"
    j = reject_reasons(pl.DataFrame([row("x", text)]), CurateConfig())
    assert j["reject_reasons"].to_list() == [["wrong_language"]]


def test_partly_foreign_without_switching_is_mixing():
    # One Chinese paragraph inside an English trace: two switches (allowed), but the share falls in
    # the band between wrong_language_share and min_target_lang_share.
    zh = "我们换一种方法来验证这个结果，把十二平均分成四份，每一份正好是三。"
    en = "We need to divide twelve by four and check the result carefully before we answer."
    text = f"<think>\n{en} {en}\n\n{zh}\n\nSo the quotient is three, as expected.\n</think>\n\nThe answer is three."
    j = reject_reasons(pl.DataFrame([row("x", text)]), CurateConfig())
    r = j.row(0, named=True)
    assert r["lang_switches"] == 2
    assert 0.5 <= r["target_lang_share"] < 0.9
    assert r["reject_reasons"] == ["language_mixing"]


def test_thresholds_are_config():
    df = pl.DataFrame([row("wall", WALL), row("half", HALF_ZH_ON_EN), row("nothink", NO_THINK), row("bad", GOOD_EN, correct=False)])
    cfg = CurateConfig(
        max_paragraph_chars=10_000, max_lang_switches=None, max_foreign_spans=None, min_target_lang_share=0.0, require_think=False, reject_incorrect=False
    )
    assert reject_reasons(df, cfg)["reject_reason"].to_list() == [None] * 4


def test_length_bounds_in_tokens():
    # `completion_tokens` where given (per row), else an estimate from UTF-8 bytes (bytes / 4).
    df = pl.DataFrame([row("a", GOOD_EN, prompt="A?") | {"completion_tokens": 500}, row("b", GOOD_EN, prompt="B?") | {"completion_tokens": 50}])
    assert reject_reasons(df, CurateConfig())["reject_reason"].to_list() == [None, None]
    assert reject_reasons(df, CurateConfig(max_completion_tokens=100))["reject_reason"].to_list() == ["too_long", None]
    assert reject_reasons(df, CurateConfig(min_completion_tokens=100))["reject_reason"].to_list() == [None, "too_short"]
    no_tokens = reject_reasons(pl.DataFrame([row("a", GOOD_EN)]), CurateConfig(max_completion_tokens=100))
    assert no_tokens["n_tokens"].to_list() == [(len(GOOD_EN.encode()) + 3) // 4]
    assert no_tokens["reject_reason"].to_list() == ["too_long"]
    assert CurateConfig().max_completion_tokens == 32768 and CurateConfig().min_completion_tokens is None


def test_missing_correct_column_skips_correctness_and_task_defaults_to_math():
    df = pl.DataFrame({"id": ["a", "b"], "prompt": [EN_PROMPT] * 2, "completion": [GOOD_EN, NO_THINK], "answer": ["3", "3"]})
    j = reject_reasons(df, CurateConfig())
    assert j["reject_reason"].to_list() == [None, "bad_think_format"]


def test_chat_prompt_and_all_null_columns():
    chat = [{"role": "system", "content": "Réponds."}, {"role": "user", "content": "求 12 除以 4 的商。"}]
    df = pl.DataFrame(
        {
            "id": ["a", "b"],
            "prompt": [chat, chat],
            "completion": [GOOD_ZH, GOOD_ZH],
            "answer": ["3", None],
            "language": [None, None],
            "correct": [None, None],
        }
    )
    assert df.schema["correct"] == pl.Null
    j = reject_reasons(df, CurateConfig())
    assert j["target_language"].to_list() == ["zh", "zh"]
    assert j["reject_reason"].to_list() == ["unverifiable", None]


def test_unknown_language_is_never_wrong_language():
    # A prompt without letters cannot be detected: mixing is measured against the trace's own script.
    df = pl.DataFrame([row("ru", ALL_RU, prompt="12 / 4 = ?", language=None)])
    j = reject_reasons(df, CurateConfig())
    assert j["target_language"].to_list() == ["unknown"]
    assert j["reject_reason"].to_list() == [None]


def test_curate_invariants(cases_df):
    kept, rejected, funnel = curate(cases_df, PER_ROW)
    ids_in = cases_df["id"].to_list()
    ids_out = kept["id"].to_list() + rejected["id"].to_list()
    assert sorted(ids_out) == sorted(ids_in)
    assert len(set(ids_out)) == len(ids_out)
    assert not set(kept["id"]) & set(rejected["id"])
    assert kept["reject_reason"].null_count() == kept.height
    assert rejected["reject_reason"].null_count() == 0
    for col in cases_df.columns:
        assert col in rejected.columns and col in kept.columns
    assert funnel["rows_in"] == cases_df.height
    assert funnel["kept"] == kept.height and funnel["rejected"] == rejected.height
    assert funnel["kept"] + funnel["rejected"] == funnel["rows_in"]
    assert sum(funnel["primary_reasons"].values()) == funnel["rejected"]
    assert list(funnel["reasons"]) == REASONS
    assert funnel["reasons"]["incorrect"] == 2  # "incorrect" + "truncated" (secondary there)
    assert funnel["primary_reasons"]["incorrect"] == 1
    # Input order is kept inside each part.
    assert kept["id"].to_list() == [i for i in ids_in if i in set(kept["id"])]


def test_score_idempotent_and_row_preserving(cases_df):
    once = score(cases_df)
    assert once.height == cases_df.height
    assert once["id"].to_list() == cases_df["id"].to_list()
    assert once.select(cases_df.columns).equals(cases_df)
    assert set(SCORE_COLUMNS) <= set(once.columns)
    twice = score(once)
    assert twice.equals(once)
    assert reject_reasons(reject_reasons(cases_df)).equals(reject_reasons(cases_df))


def test_empty_frame():
    empty = pl.DataFrame([row("a", GOOD_EN)]).clear()
    kept, rejected, funnel = curate(empty)
    assert kept.height == rejected.height == 0
    assert funnel["rows_in"] == 0


def test_curate_file_writes_three_files(tmp_path, cases_df):
    src = tmp_path / "traces.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for r, _, _ in CASES:
            f.write(json.dumps(r | {"extra": r["id"] + "!"}, ensure_ascii=False) + "\n")
    out = tmp_path / "curated"
    funnel = curate_file(src, out, PER_ROW)
    # the three names a user reads; they link into the hidden directory that published them together
    # (filters/output_set.py), which is all else the command leaves there
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["funnel.json", "kept.parquet", "rejected.parquet"]
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} <= {".curate-current", ".curate-lock"} | {
        p.name for p in out.glob(".curate-*") if p.is_dir() and not p.name.endswith(".tmp")}
    kept = pl.read_parquet(out / "kept.parquet")
    rejected = pl.read_parquet(out / "rejected.parquet")
    assert json.loads((out / "funnel.json").read_text()) == funnel
    assert funnel["kept"] == kept.height and funnel["rejected"] == rejected.height
    assert funnel["rows_in"] == len(CASES)
    assert sorted(kept["id"].to_list() + rejected["id"].to_list()) == sorted(r["id"] for r, _, _ in CASES)
    expected = {r["id"]: reason for r, reason, _ in CASES}
    assert dict(zip(rejected["id"], rejected["reject_reason"])) == {k: v for k, v in expected.items() if v}
    assert "extra" in kept.columns and "extra" in rejected.columns
    assert rejected.schema["reject_reasons"] == pl.List(pl.Utf8)


def test_curate_file_defaults_and_parquet(tmp_path):
    src = tmp_path / "t.parquet"
    pl.DataFrame({"id": ["a", "b"], "prompt": [EN_PROMPT] * 2, "completion": [GOOD_EN, NO_THINK]}).write_parquet(src)
    funnel = curate_file(src, tmp_path / "o")
    assert funnel["primary_reasons"]["bad_think_format"] == 1
    assert pl.read_parquet(tmp_path / "o" / "kept.parquet")["task"].to_list() == ["math"]


def test_curate_file_missing_column_names_it(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"'completion'.*") as e:
        curate_file(src, tmp_path / "o")
    assert "bad.jsonl" in str(e.value)
    assert not (tmp_path / "o").exists()


# --- measures ------------------------------------------------------------------------------------


def test_script_profile_ignores_non_language():
    assert script_profile("Let $x=1$: 北京 is big") == {"Latin": 8, "Han": 2}
    text = "$$\\sum_{i} \\alpha_i$$ \\(y\\) \\[z\\] `code_here()` ```py\nimport numpy\n``` https://example.com/path 3.14 x1"
    assert script_profile(text) == {}
    assert script_profile("Привет, world! θ") == {"Cyrillic": 6, "Latin": 5}
    assert script_profile("これはペンです") == {"Hiragana": 5, "Katakana": 2}
    assert "and" in strip_non_language("costs $5 and $10")  # currency is not inline math


def test_share_and_switches_edge_cases():
    assert target_lang_share("", "en") == 1.0
    assert target_lang_share("12 + 3 = 15", "zh") == 1.0
    assert target_lang_share("Это русский текст, совсем.", "ru") == 1.0
    assert target_lang_share("This is English text only.", "ru") == 0.0
    assert lang_switches("One sentence here. Another one there.", "en") == 0
    mixed = "This is English text. 这是一个中文句子。 Back to English again. 又回到中文句子了。"
    assert lang_switches(mixed, "en") == 3
    assert lang_switches("We visited 北京 and 上海 last year, it was fun.", "en") == 0
    assert expected_scripts("zh-CN") == frozenset({"Han"})
    assert expected_scripts("xx") is None
    assert normalize_lang("English") == "en" and normalize_lang(" ") is None


def test_detect_language_deterministic():
    assert detect_language("What is the sum of the first ten primes?") == "en"
    assert detect_language("求前十个质数的和。") == "zh"
    assert detect_language("最初の10個の素数の和はいくつですか？") == "ja"
    assert detect_language("12 + 3 = ?") == "unknown"
    assert detect_language("$$x$$") == "unknown"
    fr = "Quelle est la somme des dix premiers nombres premiers de la liste donnée ?"
    assert len({detect_language(fr) for _ in range(3)}) == 1


def test_readability_measures():
    assert think_format("<think>a</think>b", "math") is None
    assert think_format("a</think>b", "math") is None  # prefilled <think>
    assert think_format("no think", "math") == "no_think"
    assert think_format("<think>a", "math") == "no_think"
    assert think_format("<think>a</think><think>b</think>c", "math") == "multiple_think"
    assert think_format("<think> </think>b", "math") == "empty_think"
    assert think_format("<think>a</think>  ", "math") == "empty_answer"
    assert think_format("plain answer", "general") is None
    assert think_format("", "general") == "empty_answer"
    assert think_format(None, "math") == "no_think"
    assert max_paragraph_chars("ab\n\ncde\n  \nf") == 3
    assert max_paragraph_chars("x\n```\n" + "y" * 100 + "\n```\nz") == 1
    assert max_paragraph_chars("") == 0
    assert is_truncated("length", "<think>a</think>b")
    assert is_truncated("stop", "<think>a")
    assert is_truncated(None, "a</think>b <think>c")
    assert not is_truncated("stop", "<think>a</think>b")
    assert not is_truncated(None, "plain")


def test_config_fields_validate():
    assert CurateConfig().wrong_language_share == 0.5
    assert CurateConfig().max_lang_switches == 2
    with pytest.raises(RecipeError):
        recipe_from_dict({"name": "x", "curate": {"max_lang_switchs": 3}})
    with pytest.raises(RecipeError):
        recipe_from_dict({"name": "x", "curate": {"wrong_language_share": 2}})


# --- new measures: same-script languages, exemptions, repetition, chaos ----------------------------------

SENTENCES = Path(__file__).resolve().parent / "data" / "curation" / "sentences.jsonl"


def test_function_word_profile_never_mislabels_the_sentence_set():
    rows = [json.loads(line) for line in SENTENCES.read_text(encoding="utf-8").splitlines()]
    got = [classify(r["text"]) for r in rows]
    assert sum(g is not None and g != r["lang"] for g, r in zip(got, rows)) == 0
    assert sum(g == r["lang"] for g, r in zip(got, rows)) >= 75  # the rest abstain
    assert "the" in WORD_LANG and "la" not in WORD_LANG  # shared words ("la": fr, es, it) are left out
    assert "y" not in WORD_LANG  # an unaccented single letter is a variable name as often as a word


def test_latin_languages_within_one_script():
    en = "We need to divide the total by the number of people. "
    fr = "Il faut donc diviser le total par le nombre de personnes. "
    share, switches = latin_language_scores(en + fr + en + fr + en, "en")
    assert switches == 4 and 0.3 < share < 0.7
    assert latin_language_scores(fr * 3, "en") == (0.0, 0)
    assert latin_language_scores(fr * 3, "fr") == (1.0, 0)
    assert latin_language_scores(en + fr, "en", allowed={"fr"}) == (1.0, 0)
    # Spanish place names are not Spanish sentences.
    assert latin_language_scores("We drove from Los Angeles to Las Vegas and back to Los Angeles.", "en")[0] == 1.0


def test_translation_and_quoted_prompt_phrases_are_exempt():
    assert requested_languages("Translate into French: hello") == {"fr"}
    assert requested_languages("把这句话翻译成英文：你好") == {"en"}
    assert requested_languages("What is French cuisine?") == frozenset()
    text = 'The phrase "Je ne sais pas" means I do not know.'
    assert "Je ne sais" not in exempt_task_text(text, 'What does "Je ne sais pas" mean?', translation=False)
    assert "Je ne sais" in exempt_task_text(text, "What does it mean?", translation=False)
    assert "Je ne sais" not in exempt_task_text(text, "Translate it", translation=True)
    assert exempt_task_text("it's Bob's", "", translation=True) == "it's Bob's"  # apostrophes are not quotes


def test_repetition_scores():
    loop = "Let me check this once more to be sure.\n" * 15
    frac, repeats, ngram = repetition_scores("<think>\nFirst line of real reasoning here.\n" + loop + "</think>")
    assert repeats == 15 and frac > 0.7 and ngram > 0.5
    code = "```python\ndef area(w, h):\n    return w * h  # width times height\n```\n"
    twice = f"<think>\nDraft:\n{code}\nThat works.\n</think>\n\nFinal code:\n{code}"
    assert repetition_scores(twice)[0] == 0.0  # saying something twice is not a loop
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps near the warm fire "
    tail = " ".join(f"step {i} adds {i * 3} to the running total" for i in range(20)) + " " + words * 6
    assert repetition_scores(tail)[2] > 0.2  # a loop at the end of an otherwise fine text
    assert repetition_scores("")[2] == 0.0 and repetition_scores(None) == (0.0, 0, 0.0)


def test_chaos_scores():
    assert chaos_scores("```python\nx = 1\n")["fence_unbalanced"] is True
    assert chaos_scores("```python\nx = 1\n```")["fence_unbalanced"] is False
    assert chaos_scores("CafÃ© and naÃ¯ve â€™")["mojibake"] == 3
    assert chaos_scores("Café, naïve, Ärger, Ñandú, São Paulo, 25°C")["mojibake"] == 0
    assert chaos_scores("<div>a</div><br>&nbsp;")["markup_debris"] == 4
    assert chaos_scores("```html\n<div>a</div><br>\n```\nUse `<div>` here.")["markup_debris"] == 0
    assert chaos_scores("done<|im_end|> <｜end▁of▁sentence｜> [INST] </s>")["special_tokens"] == 4
    assert chaos_scores("}{)(*&^%#@!~ ok")["symbol_soup"] == 12
    assert chaos_scores("| a | b |\n|---|---|\n| 1 | 2 |\n$$\\frac{a}{b}^{(2)}_{[3]}$$")["symbol_soup"] == 0
    fragments = "\n".join(["apple", "pear", "twelve", "then four", "and more"] * 2)
    assert chaos_scores(fragments)["sentence_frac"] == 0.0
    equations = "\n".join([f"x = {i}" for i in range(12)] + ["So the value of x is eleven."])
    assert chaos_scores(equations)["sentence_frac"] == 1.0  # equations are not prose lines


def test_paragraph_length_counts_cjk_as_three():
    assert max_paragraph_chars("中文" * 10) == 60
    assert max_paragraph_chars("ab\n\n中文") == 6
