"""The curate stage's section: reject thresholds, deduplication and benchmark decontamination."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.config.base import Section


class BenchmarkSpec(Section):
    """A benchmark to decontaminate against: a `datasets` Hub name (kind "hf") or a local JSONL/parquet
    file (kind "file"; a `split` column, if any, is filtered on)."""

    name: str
    path: str
    kind: Literal["hf", "file"] = "hf"
    config: str | None = None
    split: str = "test"
    fields: list[str] = Field(default_factory=lambda: ["problem", "question", "prompt"])  # texts compared


class DecontamConfig(Section):
    """N-gram overlap with benchmark items; no benchmarks listed means no check (filters/decontam.py)."""

    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    prompt_ngram: int = Field(8, ge=2)  # open-r1's decontamination n
    response_ngram: int = Field(13, ge=2)  # GPT-3's
    min_prompt_hits: int = Field(1, ge=1)  # matching n-grams that make a prompt contaminated
    min_response_hits: int = Field(3, ge=1)  # 3 13-grams: 15 consecutive words of a benchmark item
    boilerplate_items: int = Field(5, ge=1)  # n-grams in more items than this are instructions, not content


class DedupConfig(Section):
    """Exact and near-duplicate prompts, best samples kept per cluster (filters/dedup.py)."""

    enabled: bool = True
    near_duplicates: bool = True  # MinHash + LSH; off: exact (normalised) duplicates only
    completions: bool = True  # identical completions of one prompt: keep one
    threshold: float = Field(0.7, gt=0, le=1)  # estimated Jaccard similarity of word 3-gram shingles
    same_numbers: bool = True  # near duplicates must hold the same numbers (12+7 vs 13+7 differ)
    samples_per_prompt: int | None = Field(None, ge=1)  # rows kept per cluster; None: its largest prompt group
    num_perm: int = Field(120, ge=8)
    # 20 bands of 6 rows: a pair at similarity 0.7 becomes a candidate with probability 0.92, at 0.5 with
    # 0.27, at 0.3 with 0.014 (candidates are then verified on the whole signature)
    bands: int = Field(20, ge=1)
    shingle: int = Field(3, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _bands_divide(self) -> "DedupConfig":
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class CurateConfig(Section):
    """Thresholds that turn curation scores into reject reasons (filters/curate.py lists the rules).

    Every measure is on by default with thresholds for R1-style traces; `distill curate` without a
    recipe uses exactly these.
    """

    require_think: bool = True  # reasoning tasks must have exactly one non-empty think block
    reject_truncated: bool = True
    reject_incorrect: bool = True  # rows whose verdict is false; unverifiable rows are rejected too
    # language
    min_target_lang_share: float = Field(0.9, ge=0, le=1)
    # Below this target-language share a trace is "wrong_language" (mostly another language); from it
    # up to min_target_lang_share, "language_mixing". The lower of the two is used if they cross.
    wrong_language_share: float = Field(0.5, ge=0, le=1)
    # More switches than this between target-language and foreign sentences: "language_mixing".
    # None turns the check off (the share check still applies).
    max_lang_switches: int | None = Field(2, ge=0)
    # More spans than this where the reasoning leaves its target language (filters/language_spans.py:
    # a Chinese word in English reasoning, a paragraph in another language; the prompt's own words
    # quoted do not count): "language_mixing". None turns the check off.
    max_foreign_spans: int | None = Field(0, ge=0)
    # The target language of a prompt without a `language` column. An explicit request ("think in X")
    # always decides. "instruction": a prompt that mixes languages (an English instruction around a
    # Bangla question) targets its instruction's language, its first line that has a language;
    # "majority": the language of most of the prompt (the rule before issue 16).
    target_language: Literal["instruction", "majority"] = "instruction"
    # The language identifier for prompts and paragraphs in shared scripts (filters/langid.py):
    # "fasttext" (lid.176.ftz, langdetect only where it is unsure) or "langdetect" alone.
    language_id: Literal["fasttext", "langdetect"] = "fasttext"
    # readability
    max_paragraph_chars: int = Field(3000, ge=1)  # a CJK character counts 3 (as much text as 3 letters)
    max_dup_line_frac: float = Field(0.25, ge=0, le=1)  # characters in 3rd+ copies of a line
    max_line_repeats: int = Field(12, ge=1)  # occurrences of the most repeated line (>= 20 chars)
    max_dup_ngram_frac: float = Field(0.2, ge=0, le=1)  # 3rd+ copies of word 10-grams (whole or tail)
    reject_unbalanced_fences: bool = True
    max_mojibake: int = Field(1, ge=0)
    max_markup_debris: int = Field(3, ge=0)  # HTML tags/entities outside code
    max_special_tokens: int = Field(0, ge=0)  # leaked <|im_end|>, [INST], </s>, ...
    max_symbol_soup: int = Field(24, ge=0)  # characters in symbol runs, control and private-use chars
    min_sentence_frac: float = Field(0.3, ge=0, le=1)  # prose in sentence-like lines
    # length in tokens: `completion_tokens` where the row has it, else an estimate (UTF-8 bytes / 4)
    max_completion_tokens: int | None = Field(32768, ge=1)  # R1's generation limit
    min_completion_tokens: int | None = Field(None, ge=0)
    # "too_long_for_sft": prompt + completion (+ template) over this many tokens, which SFT would cut (answer and
    # EOS lost). The curate stage sets the smallest student max_length (with_sft_length); None: no check.
    max_sft_tokens: int | None = Field(None, ge=1, exclude_if=lambda v: v is None)
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()


SFT_DEFAULT_MAX_LENGTH = 1024  # TRL 1.16 SFTConfig.max_length, for a student that sets none


def with_sft_length(cfg: CurateConfig, max_lengths: list[int | None]) -> CurateConfig:
    """`cfg` with max_sft_tokens set to the smallest of the students' SFT max_length (None in the list: TRL's
    default; an explicit `max_length: null` in training_args means no truncation and is skipped), unless the
    recipe set max_sft_tokens itself."""
    if cfg.max_sft_tokens is not None or not max_lengths:
        return cfg
    limits = [n for n in max_lengths if n is not None]
    return cfg.model_copy(update={"max_sft_tokens": min(limits)}) if limits else cfg
