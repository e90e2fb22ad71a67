"""Issue 16 points 1-3 and 7 on small hand-written cases: language identification (filters/langid.py),
language spans inside the chain of thought (filters/language_spans.py), the target language of mixed
prompts (filters/language.py), unfinished output (filters/readability.py) and the report's highlighted
spans (distill/report/quality.py)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from distill.config.curate import CurateConfig
from distill.report.quality import drop_rates, excerpt_html, label_metrics, quality_section
from filters.curate import curate
from filters.exemptions import requested_language
from filters.langid import identify
from filters.language import prompt_target
from filters.language_spans import paragraph_spans, script_spans
from filters.readability import truncation, unfinished_span

DATA = Path(__file__).resolve().parent / "data" / "curation" / "langid.jsonl"


# --- language identification -----------------------------------------------------------------------


def test_identify_hand_written_reasoning_sentences():
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert {r["lang"] for r in rows} >= {"en", "zh", "ja", "bn", "te", "th", "ru", "fr", "de", "es", "sw", "id", "vi"}
    wrong = [(r["id"], identify(r["text"])) for r in rows if identify(r["text"]) != r["lang"]]
    assert not wrong  # scripts/bench_langid.py: fastText alone gets 3 of 6 Swahili sentences wrong
    assert identify("12 + 3 = ?") == "unknown" and identify("$$x^2$$") == "unknown"
    assert identify(rows[0]["text"], backend="langdetect") == "en"


# --- target language --------------------------------------------------------------------------------

BANGLA_PROMPT = (
    "Below there is a Bangla multiple choice question with 4 options, you need to find the correct option.\n"
    "    Question in Bangla: 'প্রভাত' শব্দের সমার্থক শব্দ কোনটি?\n"
    "    Options in Bangla: {'A': 'সন্ধ্যা', 'B': 'সকাল', 'C': 'দুপুর', 'D': 'রাত্রি'}"
)


def test_target_of_a_mixed_prompt_is_its_instruction_or_a_request():
    assert prompt_target(BANGLA_PROMPT) == ("en", "instruction")
    assert prompt_target(BANGLA_PROMPT, rule="majority")[1] == "prompt"
    sw = "Je, ni kwa njia gani utawala huo ulibadilisha sera za nje?\nA. It criticized international organizations\nB. Ilipanua NATO"
    assert prompt_target(sw) == ("sw", "instruction")
    assert prompt_target("Quelle est la somme de 3 et 4 ?") == ("fr", "prompt")
    assert prompt_target("You are a tutor. Think in French.\nHow many minutes are in an hour?") == ("fr", "request")
    assert requested_language("Please reason step by step in Swahili.") == "sw"
    assert requested_language("I live in France and travel in Spain.") is None


def test_target_rule_is_a_recipe_setting_and_recorded_per_row():
    comp = "<think>\nThe word সকাল means morning, which is what প্রভাত means, so the answer is B.\n</think>\n\nB"
    df = pl.DataFrame({"id": ["a"], "prompt": [BANGLA_PROMPT], "completion": [comp]})
    kept, rejected, _ = curate(df, CurateConfig(dedup={"enabled": False}))
    row = pl.concat([kept, rejected]).row(0, named=True)
    assert (row["target_language"], row["target_language_from"]) == ("en", "instruction")
    with pytest.raises(ValueError):
        CurateConfig(target_language="whatever")


# --- spans inside the chain of thought --------------------------------------------------------------


def test_script_spans_find_slips_and_skip_the_prompt_terms_and_quotes():
    text = "But that seems间接的, and the policy needs economic结构调整 to work."
    spans = script_spans(text, "en")
    assert [text[a:b] for a, b in spans] == ["间接的", "结构调整"]
    # a name set apart, one or two words of a term, a quotation, and the prompt's own words do not count
    assert script_spans("The capital is Beijing (北京 in Chinese).", "en") == []
    assert script_spans("A vowel can be মৌলিক (basic) or যৌগিক (compound).", "en") == []
    assert script_spans('He wrote the novel "জোছনা ও জননীর গল্প" in 2004.', "en") == []
    quoted = "The question says: শব্দের সমার্থক শব্দ কোনটি, so we need a synonym."
    assert script_spans(quoted, "en", BANGLA_PROMPT) == []
    assert len(script_spans(quoted, "en", "What is a synonym?")) == 1
    # a prompt in decomposed Unicode (য + nukta) still matches the model's precomposed য়
    assert script_spans("It says বাড়ালে এর ক্ষেত্রফল here.", "en", "বাড\u09bc\u09be\u09b2ে এর ক্ষেত্রফল") == []
    # English phrases inside Chinese reasoning count from four words; a term does not
    assert script_spans("我们用 Python 来计算。", "zh") == []
    assert len(script_spans("我们先算一下。Let me check this again carefully. 所以答案是 6。", "zh")) == 1


def test_paragraph_spans_find_english_reasoning_on_a_swahili_prompt():
    english = (
        "Okay, let me figure this out. The question asks which option describes the function of roots, "
        "and the options are about photosynthesis, water, seeds and air.\n\nOption B says absorbing water "
        "and minerals from the soil, which is what roots do, so the answer is B."
    )
    spans, foreign, total, _ = paragraph_spans(english, "sw")
    assert len(spans) == 2 and foreign == total > 0
    swahili = (
        "Swali linauliza jua linachomoza upande gani. Kila siku jua huchomoza upande wa mashariki na kuzama "
        "upande wa magharibi, kwa sababu dunia inazunguka."
    )
    assert paragraph_spans(swahili, "sw")[0] == []


# --- unfinished output ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "This angular momentum is directed vertically, and any tilt",
        "Setting this equal to zero gives 2m =",
        "\\[\n\\begin{align*}\n0 \\rightarrow 1: & 1 \\\\\n1 \\rightarrow",
        "So, putting it all together, the analogy would be that just as",
    ],
)
def test_unfinished_endings(text):
    assert unfinished_span(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "The answer is $\\boxed{18}$",
        "So the correct option is C",
        "**Answer:** B. kuhusisha kisababishi rahisi wakati kisababishi ni tata zaidi",
        "The three states are:\n- Solid: ice\n- Liquid: tap water\n- Gas: steam",
        "```python\ndef f(x):\n    return x * x\n```",
        "The total is 42",
        "Answer: Paris",
        "| n | value |\n|---|---|\n| 1 | 3 |",
        "It is *Dream of the Red Chamber*",
    ],
)
def test_finished_endings(text):
    assert unfinished_span(text) is None


def test_truncation_closed_think_answer_cut_and_length():
    cut = "<think>\nfine reasoning.\n</think>\n\nThe top stays up because its angular momentum resists any tilt and"
    truncated, span = truncation(None, cut)
    assert truncated and cut[span[0] : span[1]].endswith("tilt and")
    assert truncation("length", "<think>\nok.\n</think>\n\nDone.")[0]
    assert truncation(None, "<think>\nWe need to divide 12 by 4. Let me think about")[0]
    # an unclosed think block ending on its boxed answer is a format defect, not a truncation
    assert truncation(None, "<think>\n15 * 3 = 45, plus 15 is 60.\n\\boxed{60}") == (False, None)
    assert truncation(None, "<think>\nok.\n</think>\n\nThe answer is $\\boxed{4}$") == (False, None)


# --- report -----------------------------------------------------------------------------------------


def test_report_highlights_the_triggering_span():
    assert excerpt_html("abc <def> ghi", (4, 9)) == "abc <mark>&lt;def&gt;</mark> ghi"
    rows = [
        {"id": "slip", "source": "m1", "prompt": "Explain the trade balance.",
         "completion": "<think>\nExports fell, so the economy needs结构调整 now.\n</think>\n\nThe balance worsens."},
        {"id": "cut", "source": "m1", "prompt": "Why does a top stay up?",
         "completion": "<think>\nAngular momentum.\n</think>\n\nIt stays up because its angular momentum resists the tilt and"},
        {"id": "ok", "source": "m2", "prompt": "What is 2 + 2?", "completion": "<think>\n2 + 2 = 4.\n</think>\n\nThe answer is 4."},
    ]  # fmt: skip
    kept, rejected, _ = curate(pl.DataFrame(rows), CurateConfig(dedup={"enabled": False}))
    judged = pl.concat([kept, rejected], how="diagonal_relaxed")
    reasons = dict(zip(judged["id"], judged["reject_reason"]))
    assert reasons == {"slip": "language_mixing", "cut": "truncated", "ok": None}
    page = quality_section(judged)
    assert "<mark>结构调整</mark>" in page and "the tilt and</mark>" in page
    rates = {r["source"]: r for r in drop_rates(judged)}
    assert rates["m1"]["drop_rate"] == 1.0 and rates["m2"]["drop_rate"] == 0.0
    m = label_metrics(judged, [{"id": "slip", "label": "drop", "category": "language_mixing"}, {"id": "ok", "label": "keep", "category": "good"}])
    assert (m["precision"], m["recall"], m["categories"]["language_mixing"]["hit"]) == (1.0, 1.0, 1)


def test_run_report_has_the_quality_section(tmp_path):
    from distill.report.html import collect, render

    rows = [
        {"id": "cut", "source": "teacher-a", "prompt": "Why does a top stay up?",
         "completion": "<think>\nAngular momentum.\n</think>\n\nIt stays up because its angular momentum resists the tilt and"},
        {"id": "ok", "source": "teacher-b", "prompt": "What is 2 + 2?", "completion": "<think>\n2 + 2 = 4.\n</think>\n\nThe answer is 4."},
    ]  # fmt: skip
    kept, rejected, _ = curate(pl.DataFrame(rows), CurateConfig(dedup={"enabled": False}))
    (tmp_path / "curated").mkdir()
    kept.write_parquet(tmp_path / "curated" / "kept.parquet")
    rejected.write_parquet(tmp_path / "curated" / "rejected.parquet")
    page = render(collect(tmp_path, {"stages": {}}))
    assert 'data-section="quality"' in page and "<td>teacher-a</td><td>1</td><td>1.000</td>" in page
    assert "the tilt and</mark>" in page
    assert 'data-section="quality"' not in render(collect(tmp_path / "empty", {"stages": {}}))


def test_mentions_do_not_switch_language_and_swahili_reasoning_on_an_english_prompt_is_wrong():
    from filters.language_spans import exempt_mentions

    comp = (
        "<think>\nThe options are A: সন্ধ্যা, B: সকাল, C: দুপুর and D: রাত্রি. The word প্রভাত means morning.\n"
        'Option B, সকাল, also means morning. A saying goes "ভোরের পাখি, সকালের আলো" here.\n'
        "Since সকাল matches, the answer is B.\n</think>\n\nB"
    )
    blanked = exempt_mentions(comp, "en", BANGLA_PROMPT)
    assert len(blanked) == len(comp) and "সকাল" not in blanked and "ভোরের" not in blanked and "প্রভাত" not in blanked
    sw = (
        "<think>\nSawa, acha nijaribu kutatua hili. Janet ana mayai 16 kila siku, anakula matatu asubuhi na "
        "anatumia manne kuoka mikate. Kwa hiyo anabaki na mayai tisa, na anayauza kwa dola mbili kila moja.\n</think>\n\n"
        "Janet makes $18 every day."
    )
    rows = [
        {"id": "quotes", "prompt": BANGLA_PROMPT, "completion": comp},
        {"id": "sw", "prompt": "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes with four. "
         "She sells the rest for $2 each. How much does she make every day?", "completion": sw},
    ]  # fmt: skip
    kept, rejected, _ = curate(pl.DataFrame(rows), CurateConfig(dedup={"enabled": False}))
    judged = pl.concat([kept, rejected], how="diagonal_relaxed")
    assert dict(zip(judged["id"], judged["reject_reason"])) == {"quotes": None, "sw": "wrong_language"}


def test_math_function_names_are_not_spanish_or_german():
    from filters.language_mixing import latin_language_scores

    cot = (
        "The amplitude is K = (2 pi G / P)^(1/3) * m_p sin i / M^(2/3). For the first planet K1 = m_p1 sin i and for "
        "the second K2 = m_p2 sin i. So the ratio of the periods follows from the sin i terms cancelling out. "
        "Then Im z is the imaginary part, and sin x = sin(135) for x = 45."
    )
    assert latin_language_scores(cot, "en") == (1.0, 0)


@pytest.mark.parametrize("text", ["**Answer:** B. Cu²+", "**সঠিক উত্তর:** D. 9050 erg", "Ответ: 210 минут", "Final Answer: 30"])
def test_a_stated_answer_is_finished_whatever_its_last_character(text):
    assert unfinished_span(text) is None
    assert unfinished_span("The correct answer is option B: '-11'. Setting this equal to zero gives 2m =") is not None


def test_identifiers_and_lists_of_names_are_not_another_language():
    from filters.language_mixing import latin_language_scores

    cot = "For cos(60 + A) = cos60 cosA - sin60 sinA. Similarly, expand cosA and sinA for the other term and add them."
    assert latin_language_scores(cot, "en") == (1.0, 0)
    names = (
        "Hydra: Cnidaria (radial)\nVolvox: Green algae (spherical, radial)\nMetridium: Cnidaria (radial)\n"
        "Ceoloplana: Ctenophora (biradial or bilateral?)"
    )
    assert paragraph_spans(names, "en")[0] == []
