"""The hand-written labelled set (tests/data/curation/labelled.yaml): the exact primary reason of every
case under the default thresholds, and precision/recall of "drop" per category.

    .venv/bin/python tests/test_curation_labelled.py      # prints the per-category table
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import yaml

DATA = Path(__file__).resolve().parent / "data" / "curation"
sys.path.insert(0, str(DATA.parents[2]))  # run as a script from anywhere

from distill.config.curate import CurateConfig  # noqa: E402
from filters.curate import REASONS, curate  # noqa: E402

CATEGORIES = {
    "good_en", "good_zh", "good_other", "hard_keep", "mixing", "wrong_language", "wall", "chaotic", "loop",
    "truncated", "bad_format", "duplicate", "near_duplicate", "contaminated", "correctness", "length",
}  # fmt: skip
DEFAULTS = {"task": "math", "finish_reason": "stop", "correct": True, "answer": "see trace", "source": "hand"}


def load_cases() -> list[dict]:
    cases = yaml.safe_load((DATA / "labelled.yaml").read_text(encoding="utf-8"))
    return [{**DEFAULTS, "prompt_id": c["id"], **c} for c in cases]


def config() -> CurateConfig:
    """The defaults, plus the local benchmark file for decontamination."""
    bench = {"name": "mini-bench", "path": str(DATA / "benchmark.jsonl"), "kind": "file"}
    return CurateConfig(decontam={"benchmarks": [bench]})


def judge(cases: list[dict]) -> pl.DataFrame:
    """Every case curated together (dedup is across rows), with `expect` and `got` (None: kept)."""
    columns = ["id", "prompt_id", "prompt", "completion", "answer", "task", "language", "finish_reason", "correct", "source"]
    rows = [{k: c.get(k) for k in columns} | {"completion_tokens": c.get("completion_tokens")} for c in cases]
    df = pl.DataFrame(rows, schema_overrides={"answer": pl.Utf8, "language": pl.Utf8, "completion_tokens": pl.Int64}, infer_schema_length=None)
    kept, rejected, _ = curate(df, config())
    got = dict(zip(rejected["id"], rejected["reject_reason"])) | {i: None for i in kept["id"]}
    return pl.DataFrame(
        {
            "id": [c["id"] for c in cases],
            "category": [c["category"] for c in cases],
            "expect": [None if c["expect"] == "keep" else c["expect"] for c in cases],
            "got": [got[c["id"]] for c in cases],
        }
    )


def drop_metrics(judged: pl.DataFrame) -> list[dict]:
    """Per category and overall: cases, expected drops, TP/FP/FN of "drop", precision, recall, and how
    many cases got exactly the expected outcome (reason or keep)."""
    out = []
    groups = [(c, judged.filter(pl.col("category") == c)) for c in sorted(set(judged["category"]))]
    for name, g in [*groups, ("overall", judged)]:
        exp = g["expect"].is_not_null()
        got = g["got"].is_not_null()
        tp, fp, fn = int((exp & got).sum()), int((~exp & got).sum()), int((exp & ~got).sum())
        exact = int(((g["expect"] == g["got"]) | (g["expect"].is_null() & g["got"].is_null())).sum())
        out.append(
            {
                "category": name, "cases": g.height, "expected_drops": int(exp.sum()), "tp": tp, "fp": fp, "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
                "exact": exact,
            }
        )  # fmt: skip
    return out


def format_table(rows: list[dict]) -> str:
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| category | cases | drops expected | TP | FP | FN | precision | recall | exact reason |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['category']} | {r['cases']} | {r['expected_drops']} | {r['tp']} | {r['fp']} | {r['fn']} | "
            f"{f(r['precision'])} | {f(r['recall'])} | {r['exact']}/{r['cases']} |"
        )
    return "\n".join(lines)


CASES = load_cases()


@pytest.fixture(scope="module")
def judged() -> pl.DataFrame:
    return judge(CASES)


def test_labelled_set_is_complete():
    assert len(CASES) >= 60
    assert {c["category"] for c in CASES} == CATEGORIES
    assert len({c["id"] for c in CASES}) == len(CASES)
    for c in CASES:
        assert c["expect"] == "keep" or c["expect"] in REASONS, c["id"]
    counts = Counter(c["category"] for c in CASES)
    assert all(n >= 1 for n in counts.values())


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_exact_reason(judged, case):
    row = judged.filter(pl.col("id") == case["id"]).row(0, named=True)
    assert row["got"] == row["expect"], f"{case['id']} ({case['category']}): expected {row['expect']}, got {row['got']}"


def test_drop_precision_and_recall(judged):
    overall = drop_metrics(judged)[-1]
    assert overall["precision"] >= 0.95 and overall["recall"] >= 0.95, format_table(drop_metrics(judged))


if __name__ == "__main__":
    table = drop_metrics(judge(CASES))
    print(format_table(table))
