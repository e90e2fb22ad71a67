"""Curation: score every trace, then let the recipe's thresholds turn scores into reject reasons.

Score first, threshold later (as in data-juicer and datatrove): `score` only adds columns and never
drops or reorders rows, so a threshold can be changed and re-applied without re-measuring, and every
rejected row says why. `reject_reasons` applies a `CurateConfig` (and deduplicates across the frame);
`curate` splits kept from rejected and counts the funnel. `curate_file` does the same from and to
files, streaming in batches over worker processes (filters/streaming.py), for inputs of millions of rows.

Columns added by `score` (SCORE_COLUMNS), by measure:
  format       think_format (null when well formed, else a code), truncated
  language     target_language (the row's `language`, normalised, else detected from the prompt),
               target_lang_share, lang_switches (filters/language.py, filters/function_words.py)
  readability  max_paragraph_chars, completion_chars, n_tokens (`completion_tokens`, else UTF-8 bytes/4)
  repetition   dup_line_frac, max_line_repeats, dup_ngram_frac (filters/repetition.py)
  chaos        fence_unbalanced, mojibake, markup_debris, special_tokens, symbol_soup, sentence_frac
               (filters/chaos.py)
  decontam     contam_prompt_hits, contam_response_hits, contam_benchmarks (filters/decontam.py)
Added by `reject_reasons`: dup_cluster, dup_cluster_prompts, duplicate_of (filters/dedup.py), then
`reject_reasons` (list[str], empty when kept) and `reject_reason` (the first in REASONS order, null when
kept).
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

from distill.config.recipe import CurateConfig
from filters.chaos import chaos_frame
from filters.decontam import ContaminationIndex
from filters.dedup import REASON_NAMES, DedupIndex, MinHasher, normalize_expr, numbers_expr
from filters.function_words import PROFILED_LANGS, foreign_words_pattern
from filters.language import (
    LANG_SCRIPTS,
    QUOTE_CHARS,
    detect_language,
    exempt_task_text,
    is_translation_prompt,
    language_scores,
    latin_language_scores,
    normalize_lang,
    requested_languages,
)
from filters.ngrams import tokenize
from filters.readability import REASONING_TASKS, is_truncated, max_paragraph_chars, think_format
from filters.repetition import line_repetition, ngram_loop_shares

# Primary-reason precedence: a row's `reject_reason` is the first of these that applies.
REASONS: list[str] = [
    "contaminated",
    "truncated",
    "bad_think_format",
    "wrong_language",
    "language_mixing",
    "repetition",
    "chaotic",
    "long_paragraph",
    "too_long",
    "too_short",
    "incorrect",
    "unverifiable",
    "duplicate",
    "near_duplicate",
]
# Which measure gives which reasons, in precedence order (the funnel's steps).
MEASURES: dict[str, tuple[str, ...]] = {
    "decontam": ("contaminated",),
    "format": ("truncated", "bad_think_format"),
    "language": ("wrong_language", "language_mixing"),
    "repetition": ("repetition",),
    "chaos": ("chaotic",),
    "readability": ("long_paragraph", "too_long", "too_short"),
    "correctness": ("incorrect", "unverifiable"),
    "dedup": ("duplicate", "near_duplicate"),
}
SCORE_COLUMNS: tuple[str, ...] = (
    "target_language",
    "think_format",
    "truncated",
    "target_lang_share",
    "lang_switches",
    "max_paragraph_chars",
    "completion_chars",
    "n_tokens",
    "dup_line_frac",
    "max_line_repeats",
    "dup_ngram_frac",
    "fence_unbalanced",
    "mojibake",
    "markup_debris",
    "special_tokens",
    "symbol_soup",
    "sentence_frac",
    "contam_prompt_hits",
    "contam_response_hits",
    "contam_benchmarks",
)
DEDUP_COLUMNS: tuple[str, ...] = ("dup_cluster", "dup_cluster_prompts", "duplicate_of")
REASON_COLUMNS: tuple[str, ...] = ("reject_reasons", "reject_reason")
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "prompt", "completion")
DEFAULT_TASK = "math"
# Foreign function words in a trace before its sentences are checked one by one (see _language).
LATIN_GATE_HITS = 3
# Rows tokenised at once for the n-gram measures (~1,000 tokens each: ~10 MB of arrays per 1,000 rows).
TOKEN_CHUNK = 2000


def _column(df: pl.DataFrame, name: str) -> list[Any]:
    return df.get_column(name).to_list() if name in df.columns else [None] * df.height


def _prompt_text(prompt: Any) -> str:
    """A prompt as text; chat-style prompts (a list of {"role", "content"} messages) are joined."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        return _prompt_text(prompt.get("content"))
    if isinstance(prompt, (list, tuple)):
        return "\n".join(_prompt_text(p) for p in prompt)
    return str(prompt)


def _prompt_series(df: pl.DataFrame) -> pl.Series:
    col = df.get_column("prompt")
    if col.dtype == pl.Utf8:
        return col.fill_null("")
    return pl.Series("prompt", [_prompt_text(p) for p in col.to_list()], dtype=pl.Utf8)


def _task(value: Any) -> str:
    return str(value).strip().lower() if value is not None and str(value).strip() else DEFAULT_TASK


def prepare(df: pl.DataFrame) -> pl.DataFrame:
    """The input as curation reads it: `task` defaults to "math"."""
    if "task" not in df.columns:
        return df.with_columns(pl.lit(DEFAULT_TASK, dtype=pl.Utf8).alias("task"))
    if df.schema["task"] in (pl.Utf8, pl.Null):
        return df.with_columns(pl.col("task").cast(pl.Utf8).fill_null(DEFAULT_TASK))
    return df


def check_columns(columns: list[str], source: Any) -> None:
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            raise ValueError(
                f"{source}: missing required column {col!r} (curate needs {', '.join(REQUIRED_COLUMNS)}; "
                f"found {', '.join(columns)})"
            )


class Timings:
    """Seconds spent per measure (summed over batches and processes)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def __call__(self, measure: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[measure] += time.perf_counter() - t0


class Scorer:
    """Computes the score columns for batches of rows. Holds what is built once per process: the
    contamination index and the MinHash permutations."""

    def __init__(self, cfg: CurateConfig | None = None, benchmark_items: dict[str, list[list[str]]] | None = None):
        self.cfg = cfg or CurateConfig()
        if benchmark_items is not None:
            self.index = ContaminationIndex.from_items(benchmark_items, self.cfg.decontam) if benchmark_items else None
        else:
            self.index = ContaminationIndex.from_config(self.cfg.decontam)
        d = self.cfg.dedup
        self.hasher = MinHasher(d.num_perm, d.bands, d.shingle, d.seed)
        self.timings = Timings()

    # --- measures ------------------------------------------------------------------------------

    def _targets(self, df: pl.DataFrame, prompts: list[str]) -> list[str]:
        """`language` where given, else the prompt's detected language (once per distinct prompt)."""
        cache: dict[str, str] = {}
        out = []
        for lang, prompt in zip(_column(df, "language"), prompts):
            code = normalize_lang(lang)
            if code is None:
                code = cache.get(prompt)
                if code is None:
                    code = cache[prompt] = detect_language(prompt)
            out.append(code)
        return out

    def _latin_gate(self, completions: pl.Series, targets: list[str]) -> np.ndarray:
        """Rows whose target is a profiled Latin language and whose text holds at least LATIN_GATE_HITS
        function words of other profiled languages (a vectorised count, so most rows skip the
        per-sentence pass)."""
        gate = np.zeros(len(targets), dtype=bool)
        tarr = np.array(targets, dtype=object)
        for lang in PROFILED_LANGS:
            idx = np.flatnonzero(tarr == lang)
            if len(idx):
                hits = completions.gather(idx).str.count_matches(foreign_words_pattern(lang)).to_numpy()
                gate[idx] = hits >= LATIN_GATE_HITS
        return gate

    def _language(self, df: pl.DataFrame, completions: list[str], prompts: list[str]) -> dict[str, pl.Series]:
        targets = self._targets(df, prompts)
        gate = self._latin_gate(df.get_column("completion").cast(pl.Utf8).fill_null(""), targets)
        tasks: dict[str, tuple[bool, frozenset[str]]] = {}  # prompt -> (translation task, languages asked for)
        shares, switches = [], []
        for text, target, prompt, gated in zip(completions, targets, prompts, gate):
            share, sw = language_scores(text, target)
            allowed: frozenset[str] = frozenset()
            if (share < 1.0 or sw or gated) and prompt:
                task = tasks.get(prompt)
                if task is None:
                    task = tasks[prompt] = (is_translation_prompt(prompt), requested_languages(prompt))
                translation, allowed = task
                if translation or any(q in text for q in QUOTE_CHARS):
                    text = exempt_task_text(_measured_part(text, translation), prompt, translation)
                    share, sw = language_scores(text, target, allowed=allowed)
            if gated:
                lshare, lsw = latin_language_scores(text, target, allowed)
                share, sw = share * lshare, sw + lsw
            shares.append(share)
            switches.append(sw)
        return {
            "target_language": pl.Series(targets, dtype=pl.Utf8),
            "target_lang_share": pl.Series(shares, dtype=pl.Float64),
            "lang_switches": pl.Series(switches, dtype=pl.Int64),
        }

    def score(self, df: pl.DataFrame) -> pl.DataFrame:
        """Add the score columns (see module doc). Rows are neither dropped nor reordered; scoring an
        already scored frame replaces the columns with the same values."""
        t = self.timings
        df = df.drop([c for c in (*SCORE_COLUMNS, *DEDUP_COLUMNS, *REASON_COLUMNS) if c in df.columns])
        completions = [c if isinstance(c, str) else "" for c in _column(df, "completion")]
        prompt_series = _prompt_series(df)
        prompts = prompt_series.to_list()
        cols: dict[str, pl.Series] = {}
        with t("format"):
            tasks = [_task(x) for x in _column(df, "task")]
            cols["think_format"] = pl.Series([think_format(c, k) for c, k in zip(completions, tasks)], dtype=pl.Utf8)
            finish = _column(df, "finish_reason")
            cols["truncated"] = pl.Series([is_truncated(f, c) for f, c in zip(finish, completions)], dtype=pl.Boolean)
        with t("language"):
            cols.update(self._language(df, completions, prompts))
        comp = df.get_column("completion").cast(pl.Utf8).fill_null("")
        with t("readability"):
            cols["max_paragraph_chars"] = pl.Series([max_paragraph_chars(c) for c in completions], dtype=pl.Int64)
            cols["completion_chars"] = comp.str.len_chars().cast(pl.Int64)
            estimate = ((comp.str.len_bytes().cast(pl.Int64) + 3) // 4).alias("n_tokens")
            if "completion_tokens" in df.columns:
                given = df.get_column("completion_tokens").cast(pl.Int64, strict=False)
                cols["n_tokens"] = given.fill_null(estimate).alias("n_tokens")
            else:
                cols["n_tokens"] = estimate
        cols.update(self._ngram_measures(comp, completions, prompt_series))
        with t("chaos"):
            chaos = chaos_frame(comp)
            cols.update({name: chaos.get_column(name) for name in chaos.columns})
        return df.with_columns(**{name: cols[name].alias(name) for name in SCORE_COLUMNS})

    def _ngram_measures(self, comp: pl.Series, completions: list[str], prompts: pl.Series) -> dict[str, pl.Series]:
        """Repetition and decontamination: both read the completions' word n-grams, TOKEN_CHUNK rows at
        a time (bounded memory)."""
        t = self.timings
        n = len(completions)
        with t("repetition"):
            lines = [line_repetition(c) for c in completions]
        loops = np.zeros(n)
        r_hits = np.zeros(n, dtype=np.int64)
        r_mask = np.zeros(n, dtype=np.int64)
        for start in range(0, n, TOKEN_CHUNK):
            chunk = comp.slice(start, TOKEN_CHUNK)
            end = start + len(chunk)
            with t("repetition"):
                loops[start:end] = ngram_loop_shares(tokenize(chunk, normalize=False))
            if self.index is not None:
                with t("decontam"):
                    r_hits[start:end], r_mask[start:end] = self.index.scan_responses(tokenize(chunk))
        cols = {
            "dup_line_frac": pl.Series([x[0] for x in lines], dtype=pl.Float64),
            "max_line_repeats": pl.Series([x[1] for x in lines], dtype=pl.Int64),
            "dup_ngram_frac": pl.Series(loops, dtype=pl.Float64),
        }
        with t("decontam"):
            if self.index is None:
                zeros = pl.Series(np.zeros(n, dtype=np.int64))
                cols.update(contam_prompt_hits=zeros, contam_response_hits=zeros, contam_benchmarks=pl.Series([None] * n, dtype=pl.Utf8))
            else:
                distinct = prompts.unique(maintain_order=True)
                p_hits, p_mask = self.index.scan_prompts(distinct)
                found = pl.DataFrame({"p": distinct, "h": p_hits, "m": p_mask})
                joined = pl.DataFrame({"p": prompts}).join(found, on="p", how="left", maintain_order="left")
                mask = joined.get_column("m").to_numpy() | r_mask
                names = {int(m): self.index.names_of(int(m)) for m in np.unique(mask)}
                cols.update(
                    contam_prompt_hits=joined.get_column("h").cast(pl.Int64),
                    contam_response_hits=pl.Series(r_hits, dtype=pl.Int64),
                    contam_benchmarks=pl.Series([names[int(m)] for m in mask], dtype=pl.Utf8),
                )
        return cols

    # --- what dedup needs from a batch ---------------------------------------------------------

    def dedup_inputs(self, judged: pl.DataFrame) -> dict[str, Any]:
        """Per-row keys and the batch's distinct prompts with their MinHash signatures, for DedupIndex.
        `judged` carries `reject_reasons` from the other measures (rows rejected anyway rank last)."""
        with self.timings("dedup"):
            prompt = _prompt_series(judged)
            keys = pl.DataFrame({"norm": prompt}).with_columns(normalize_expr(pl.col("norm")).alias("norm"))
            keys = keys.with_columns(pl.col("norm").hash(seed=3).alias("prompt"))
            if "prompt_id" in judged.columns:
                pid = judged.get_column("prompt_id").cast(pl.Utf8)
                group = pl.Series(pid.hash(seed=5)).zip_with(pid.is_not_null(), keys.get_column("prompt"))
            else:
                group = keys.get_column("prompt")
            correct = judged.get_column("correct") if "correct" in judged.columns else pl.Series([None] * judged.height)
            verdict = [0 if v is True else 2 if v is False else 1 for v in map(_as_bool, correct.to_list())]
            rows = {
                "prompt_hash": keys.get_column("prompt").to_numpy(),
                "group_hash": group.to_numpy(),
                "completion_hash": judged.get_column("completion").fill_null("").str.strip_chars().hash(seed=9).to_numpy(),
                "verdict": np.array(verdict, dtype=np.int8),
                "length": judged.get_column("completion_chars").to_numpy(),
                "rejected": (judged.get_column("reject_reasons").list.len() > 0).to_numpy(),
            }
            prompts: dict[str, Any] = {}
            if self.cfg.dedup.enabled and self.cfg.dedup.near_duplicates:
                distinct = keys.unique(subset="prompt", keep="first", maintain_order=True)
                distinct = distinct.with_columns(numbers_expr(pl.col("norm")).alias("numbers"))
                sig = self.hasher.signatures(distinct.get_column("norm"))
                prompts = {
                    "prompt_hash": distinct.get_column("prompt").to_numpy(),
                    "numbers_hash": distinct.get_column("numbers").to_numpy(),
                    "sig": sig,
                    "bands": self.hasher.band_keys(sig),
                }
        return {"rows": rows, "prompts": prompts}


def _measured_part(text: str, translation: bool) -> str:
    """For a translation task the answer is in the requested language by design: only the reasoning
    is measured (when there is a think block)."""
    if not translation:
        return text
    from distill.core.schema import split_think

    split = split_think(text)
    return split.reasoning if split.has_think and split.reasoning else text


def score(df: pl.DataFrame, cfg: CurateConfig | None = None) -> pl.DataFrame:
    """Add the score columns (see module doc) with a fresh `Scorer`."""
    return Scorer(cfg).score(df)


def _as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def _has_reference(answer: Any) -> bool:
    if answer is None:
        return False
    if isinstance(answer, str):
        return bool(answer.strip())
    if isinstance(answer, (list, tuple, dict)):
        return len(answer) > 0
    return True


def _rules(df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
    """Every reason but the dedup ones, as boolean expressions over a scored frame."""
    task = pl.Series([_task(t) for t in _column(df, "task")], dtype=pl.Utf8)
    share = pl.col("target_lang_share")
    switching = (
        pl.col("lang_switches") > cfg.max_lang_switches if cfg.max_lang_switches is not None else pl.lit(False)
    )
    wrong = (
        (share < min(cfg.wrong_language_share, cfg.min_target_lang_share))
        & pl.col("target_language").is_in(list(LANG_SCRIPTS))
        & ~switching
    )
    mixing = ((share < cfg.min_target_lang_share) & ~wrong) | switching

    rules: dict[str, pl.Expr] = {}
    dc = cfg.decontam
    rules["contaminated"] = (pl.col("contam_prompt_hits") >= dc.min_prompt_hits) | (
        pl.col("contam_response_hits") >= dc.min_response_hits
    )
    if cfg.reject_truncated:
        rules["truncated"] = pl.col("truncated")
    if cfg.require_think:
        rules["bad_think_format"] = pl.lit(task).is_in(list(REASONING_TASKS)) & pl.col("think_format").is_not_null()
    rules["wrong_language"] = wrong
    rules["language_mixing"] = mixing
    rules["repetition"] = (
        (pl.col("dup_line_frac") > cfg.max_dup_line_frac)
        | (pl.col("max_line_repeats") > cfg.max_line_repeats)
        | (pl.col("dup_ngram_frac") > cfg.max_dup_ngram_frac)
    )
    rules["chaotic"] = (
        (pl.col("fence_unbalanced") & pl.lit(cfg.reject_unbalanced_fences))
        | (pl.col("mojibake") > cfg.max_mojibake)
        | (pl.col("markup_debris") > cfg.max_markup_debris)
        | (pl.col("special_tokens") > cfg.max_special_tokens)
        | (pl.col("symbol_soup") > cfg.max_symbol_soup)
        | (pl.col("sentence_frac") < cfg.min_sentence_frac)
    )
    rules["long_paragraph"] = pl.col("max_paragraph_chars") > cfg.max_paragraph_chars
    if cfg.max_completion_tokens is not None:
        rules["too_long"] = pl.col("n_tokens") > cfg.max_completion_tokens
    if cfg.min_completion_tokens is not None:
        rules["too_short"] = pl.col("n_tokens") < cfg.min_completion_tokens
    if cfg.reject_incorrect and "correct" in df.columns:
        correct = [_as_bool(v) for v in _column(df, "correct")]
        has_ref = [_has_reference(a) for a in _column(df, "answer")]
        rules["incorrect"] = pl.lit(pl.Series([c is False for c in correct], dtype=pl.Boolean))
        rules["unverifiable"] = pl.lit(
            pl.Series([c is None and r for c, r in zip(correct, has_ref)], dtype=pl.Boolean)
        )
    return rules


def local_reasons(df: pl.DataFrame, cfg: CurateConfig) -> pl.DataFrame:
    """`reject_reasons` from every measure but dedup (which needs all rows), in REASONS order."""
    rules = _rules(df, cfg)
    parts = [pl.when(rules[r]).then(pl.lit(r)).otherwise(pl.lit(None, dtype=pl.Utf8)) for r in REASONS if r in rules]
    if parts and df.height:
        return df.with_columns(pl.concat_list(parts).list.drop_nulls().alias("reject_reasons"))
    return df.with_columns(pl.Series("reject_reasons", [[] for _ in range(df.height)], dtype=pl.List(pl.Utf8)))


def add_dedup(
    df: pl.DataFrame, reason: np.ndarray, duplicate_of: pl.Series, cluster: np.ndarray, cluster_prompts: np.ndarray
) -> pl.DataFrame:
    """Append the dedup reason to `reject_reasons`, add the dedup columns and `reject_reason`."""
    names = pl.Series([REASON_NAMES.get(int(r)) for r in reason], dtype=pl.Utf8)
    extra = pl.when(names.is_not_null()).then(pl.concat_list(names)).otherwise(pl.lit([], dtype=pl.List(pl.Utf8)))
    return df.with_columns(
        pl.Series("dup_cluster", cluster, dtype=pl.Int64),
        pl.Series("dup_cluster_prompts", cluster_prompts, dtype=pl.Int64),
        duplicate_of.cast(pl.Utf8).alias("duplicate_of"),
        pl.concat_list(pl.col("reject_reasons"), extra).alias("reject_reasons"),
    ).with_columns(pl.col("reject_reasons").list.first().alias("reject_reason"))


def no_dedup(df: pl.DataFrame) -> pl.DataFrame:
    n = df.height
    return add_dedup(
        df, np.zeros(n, dtype=np.int8), pl.Series([None] * n, dtype=pl.Utf8), np.full(n, -1), np.zeros(n, dtype=np.int64)
    )


def reject_reasons(df: pl.DataFrame, cfg: CurateConfig | None = None, scorer: Scorer | None = None) -> pl.DataFrame:
    """Add `reject_reasons` (every reason that applies, in REASONS order) and `reject_reason`.

    Scores the frame first if its score columns are missing. Rules (thresholds from `cfg`):
      contaminated      contam_prompt_hits >= decontam.min_prompt_hits, or contam_response_hits >=
                        decontam.min_response_hits (only with benchmarks listed)
      truncated         cfg.reject_truncated and `truncated`
      bad_think_format  cfg.require_think, task "math" or "code" (default "math"), think_format set
      wrong_language    target_lang_share < min(cfg.wrong_language_share, cfg.min_target_lang_share),
                        for languages whose script is known (an "unknown" target cannot be wrong), and
                        the trace does not switch back and forth (that is mixing, whatever the share)
      language_mixing   lang_switches > cfg.max_lang_switches, or share below
                        cfg.min_target_lang_share but not wrong_language
      repetition        dup_line_frac > max_dup_line_frac, max_line_repeats > max_line_repeats, or
                        dup_ngram_frac > max_dup_ngram_frac
      chaotic           unbalanced fences (reject_unbalanced_fences), or mojibake, markup_debris,
                        special_tokens, symbol_soup above their maximum, or sentence_frac below
                        min_sentence_frac
      long_paragraph    max_paragraph_chars > cfg.max_paragraph_chars
      too_long/too_short n_tokens above max_completion_tokens / below min_completion_tokens
      incorrect         cfg.reject_incorrect and `correct` is false
      unverifiable      cfg.reject_incorrect, `correct` is null and the row has a reference `answer`
      duplicate, near_duplicate   cfg.dedup (filters/dedup.py): dropped from a prompt cluster
    The two language reasons never apply together: a trace consistently in another language is
    wrong_language; one that alternates, or is only partly foreign, is language_mixing.
    Without a `correct` column rows are taken as not verified: incorrect and unverifiable are skipped.
    """
    return judge(df, cfg, scorer)[0]


def judge(df: pl.DataFrame, cfg: CurateConfig | None = None, scorer: Scorer | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`reject_reasons` and the dedup counts, over one in-memory frame."""
    cfg = cfg or CurateConfig()
    scorer = scorer or Scorer(cfg)
    if any(c not in df.columns for c in SCORE_COLUMNS):
        df = scorer.score(df)
    df = df.drop([c for c in (*DEDUP_COLUMNS, *REASON_COLUMNS) if c in df.columns])
    judged = local_reasons(df, cfg)
    if not cfg.dedup.enabled or judged.height == 0:
        return no_dedup(judged), {}
    inputs = scorer.dedup_inputs(judged)
    index = DedupIndex(cfg.dedup)
    index.add_rows(**inputs["rows"])
    if inputs["prompts"]:
        index.add_prompts(**inputs["prompts"])
    with scorer.timings("dedup"):
        result = index.decide()
    dup_of = duplicate_ids(judged.get_column("id"), result.duplicate_of)
    return add_dedup(judged, result.reason, dup_of, result.cluster, result.cluster_prompts), result.stats


def duplicate_ids(ids: pl.Series, duplicate_of: np.ndarray) -> pl.Series:
    """The id of row `duplicate_of[i]`, null where it is -1."""
    ids = ids.cast(pl.Utf8)
    if not len(ids):
        return pl.Series([], dtype=pl.Utf8)
    picked = ids.gather(np.maximum(duplicate_of, 0))
    return picked.zip_with(pl.Series(duplicate_of >= 0), pl.Series([None] * len(ids), dtype=pl.Utf8))


def curate(df: pl.DataFrame, cfg: CurateConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Split traces into (kept, rejected, funnel). Both frames keep every input column plus the score
    and reason columns, in input order; kept + rejected are exactly the input rows."""
    from filters.funnel import Funnel

    cfg = cfg or CurateConfig()
    scorer = Scorer(cfg)
    judged, dedup_stats = judge(df, cfg, scorer)
    is_kept = judged.get_column("reject_reason").is_null()
    funnel = Funnel(cfg, scorer.index)
    funnel.add(judged)
    return judged.filter(is_kept), judged.filter(~is_kept), funnel.result(scorer.timings.seconds, dedup_stats)


def curate_file(
    input_path: str | Path,
    output_dir: str | Path,
    cfg: CurateConfig | None = None,
    *,
    batch_rows: int = 10_000,
    workers: int | None = None,
) -> dict[str, Any]:
    """Curate a JSONL/parquet file (or a directory of parquet shards) of traces into `output_dir`/
    {kept.parquet, rejected.parquet, funnel.json} (each written atomically); return the funnel.

    Streams in batches of `batch_rows` over `workers` processes (None: one per core, up to 8, and none
    for inputs of up to two batches), so memory stays flat however large the input (parquet; JSONL is
    read whole). Results do not depend on either setting. Workers are spawned, so a script calling
    this with workers needs the usual `if __name__ == "__main__":` guard.

    Required columns: id, prompt, completion. Optional: answer, task (default "math"), language,
    finish_reason, correct, completion_tokens, prompt_id (samples of one prompt share it; dedup keeps
    that many per cluster), source (the funnel counts per source); any other column is carried through.
    """
    from filters.streaming import curate_stream

    return curate_stream(Path(input_path), Path(output_dir), cfg or CurateConfig(), batch_rows=batch_rows, workers=workers)


_LANGUAGE_SCORER: Scorer | None = None


def language_measures(texts: list[str], prompts: list[str], languages: list[str | None]) -> dict[str, pl.Series]:
    """`target_language`, `target_lang_share` and `lang_switches` of each text, measured exactly as the
    curate stage scores them (for callers without a table: the RL language-consistency reward)."""
    global _LANGUAGE_SCORER
    if _LANGUAGE_SCORER is None:
        _LANGUAGE_SCORER = Scorer(CurateConfig())
    df = pl.DataFrame({"completion": texts, "language": languages}, schema={"completion": pl.Utf8, "language": pl.Utf8})
    return _LANGUAGE_SCORER._language(df, list(texts), list(prompts))
