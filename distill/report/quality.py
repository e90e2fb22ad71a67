"""Data quality of curated traces: drop rate per model/source and reason, precision/recall of "drop"
against labelled rows, and a sample of kept and dropped traces per reason with the span that
triggered the drop highlighted (`quality_section`, shown in report.html).

Everything here reads a judged frame (curation's score columns plus `reject_reason`); spans come from
the measures' `*_span` columns where a measure exposes one (character offsets into the completion).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from filters.registry import REASONS

KEPT = "(kept)"
# reason -> the score column holding [start, end) offsets of the text that triggered it
SPAN_COLUMNS: dict[str, str] = {
    "truncated": "truncation_span",
    "language_mixing": "language_span",
    "wrong_language": "language_span",
    "repetition": "repetition_span",
}


def drop_rates(judged: pl.DataFrame, by: str = "source") -> list[dict[str, Any]]:
    """Per value of `by` (then "all"): rows, kept, drop rate, and the share of rows per primary reason."""
    groups = sorted({str(v) for v in judged.get_column(by).to_list()}) if by in judged.columns else []
    out = []
    for name in [*groups, "all"]:
        g = judged if name == "all" else judged.filter(pl.col(by).cast(pl.Utf8) == name)
        reasons = g.get_column("reject_reason").drop_nulls().value_counts()
        counts = {r: int(n) for r, n in reasons.iter_rows()}
        n = g.height
        out.append(
            {
                by: name, "rows": n, "kept": n - sum(counts.values()), "drop_rate": sum(counts.values()) / n if n else 0.0,
                "reasons": {r: counts[r] / n for r in REASONS if counts.get(r)},
                "counts": {r: counts[r] for r in REASONS if counts.get(r)},
            }
        )  # fmt: skip
    return out


def format_drop_rates(rows: list[dict[str, Any]], by: str = "source") -> str:
    reasons = [r for r in REASONS if any(r in row["counts"] for row in rows)]
    head = f"| {by} | rows | drop rate | " + " | ".join(reasons) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(reasons)]
    for row in rows:
        cells = [f"{row['reasons'].get(r, 0):.3f}" if r in row["counts"] else "" for r in reasons]
        lines.append(f"| {row[by]} | {row['rows']} | {row['drop_rate']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def label_metrics(judged: pl.DataFrame, labels: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Precision and recall of "drop" against labelled rows ({id, label: keep/drop, category}), and the
    recall of each labelled category (the label's main `category`) with hits/rows."""
    got = dict(zip(judged.get_column("id").to_list(), judged.get_column("reject_reason").to_list()))
    tp = fp = fn = tn = 0
    cats: dict[str, list[int]] = {}
    misses: list[dict[str, Any]] = []
    for lab in labels:
        if lab["id"] not in got:
            raise KeyError(f"labelled row {lab['id']!r} is not in the judged frame")
        dropped, want = got[lab["id"]] is not None, lab["label"] == "drop"
        tp += dropped and want
        fp += dropped and not want
        fn += want and not dropped
        tn += not want and not dropped
        if want:
            c = cats.setdefault(lab["category"], [0, 0])
            c[0] += dropped
            c[1] += 1
        if dropped != want:
            misses.append({"id": lab["id"], "label": lab["label"], "category": lab["category"], "got": got[lab["id"]]})
    return {
        "rows": tp + fp + fn + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
        "categories": {c: {"hit": h, "rows": n, "recall": h / n} for c, (h, n) in sorted(cats.items())},
        "misses": misses,
    }  # fmt: skip


def format_label_metrics(name: str, m: Mapping[str, Any]) -> str:
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    cats = ", ".join(f"{c} {v['hit']}/{v['rows']}" for c, v in m["categories"].items())
    return f"| {name} | {m['rows']} | {f(m['precision'])} | {f(m['recall'])} | TP {m['tp']} FP {m['fp']} FN {m['fn']} | {cats} |"


LABEL_HEAD = "| rows | n | precision of drop | recall of drop | counts | recall per category |\n|---|---:|---:|---:|---|---|"


# --- samples with the triggering span ------------------------------------------------------------

CONTEXT = 300  # characters shown either side of a span


def span_of(row: Mapping[str, Any]) -> tuple[int, int] | None:
    """The [start, end) offsets into the completion of what triggered the row's primary reason, if the
    measure exposes one."""
    col = SPAN_COLUMNS.get(row.get("reject_reason") or "")
    span = row.get(col) if col else None
    if not span or len(span) != 2 or span[0] is None or span[1] is None or span[1] < span[0]:
        return None
    return int(span[0]), int(span[1])


def excerpt_html(text: str, span: tuple[int, int] | None, context: int = CONTEXT) -> str:
    """The completion around `span` with the span in <mark>; without a span, its start and end."""
    text = text or ""
    if span is None:
        if len(text) <= 2 * context:
            return html.escape(text)
        return html.escape(text[:context]) + " <span class=gap>[…]</span> " + html.escape(text[-context:])
    a, b = max(0, min(span[0], len(text))), max(0, min(span[1], len(text)))
    lo, hi = max(0, a - context), min(len(text), b + context)
    mark = text[a:b]
    if len(mark) > 2 * context:  # a long span (a loop): its two ends
        mark_html = html.escape(mark[:context]) + "</mark> <span class=gap>[…]</span> <mark>" + html.escape(mark[-context:])
    else:
        mark_html = html.escape(mark)
    return (
        ("[…] " if lo else "") + html.escape(text[lo:a]) + "<mark>" + mark_html + "</mark>"
        + html.escape(text[b:hi]) + (" […]" if hi < len(text) else "")
    )  # fmt: skip


def samples(judged: pl.DataFrame, per_reason: int = 3, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Up to `per_reason` rows per primary reason (KEPT for kept rows), picked reproducibly."""
    out: dict[str, list[dict[str, Any]]] = {}
    reason = judged.get_column("reject_reason").fill_null(KEPT)
    for r in [KEPT, *REASONS]:
        g = judged.filter(reason == r)
        if g.height:
            out[r] = g.sample(min(per_reason, g.height), seed=seed).to_dicts()
    return out


def quality_section(judged: pl.DataFrame, by: str = "source", per_reason: int = 3) -> str:
    """HTML: the drop-rate table per `by` and reason, then sampled kept and dropped traces per reason with
    the triggering span highlighted."""
    rates = drop_rates(judged, by)
    reasons = [r for r in REASONS if any(r in row["counts"] for row in rates)]
    head = "".join(f"<th>{html.escape(r)}</th>" for r in reasons)
    body = "".join(
        f"<tr><td>{html.escape(str(row[by]))}</td><td>{row['rows']}</td><td>{row['drop_rate']:.3f}</td>"
        + "".join(f"<td>{row['reasons'].get(r, 0):.3f}</td>" for r in reasons)
        + "</tr>"
        for row in rates
    )
    parts = [
        '<section class="quality" data-section="quality"><style>section.quality pre{white-space:pre-wrap;'
        "font-size:12px;background:#f7f7f7;padding:6px}section.quality mark{background:#ffd54f}</style>"
        f"<h2>Data quality: drop rate per {html.escape(by)} and reason</h2>",
        f"<table><tr><th>{html.escape(by)}</th><th>rows</th><th>drop rate</th>{head}</tr>{body}</table>",
    ]
    for r, rows in samples(judged, per_reason).items():
        parts.append(f'<h3 data-reason="{html.escape(r)}">{html.escape(r)}</h3>')
        for row in rows:
            span = span_of(row)
            meta = f"{html.escape(str(row.get('id')))} · {html.escape(str(row.get(by, '')))}"
            if span:
                meta += f" · span {span[0]}–{span[1]}"
            parts.append(
                f'<details class="trace"><summary>{meta}</summary>'
                f"<pre>{excerpt_html(row.get('completion') or '', span)}</pre></details>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def run_quality_section(run_dir: Path, per_reason: int = 3) -> str:
    """The quality section of a run's report from its curated/{kept,rejected}.parquet ("" when curation
    has not run). Reads the small columns of every row and the completions of the sampled rows only."""
    files = [Path(run_dir) / "curated" / f"{part}.parquet" for part in ("kept", "rejected")]
    files = [f for f in files if f.is_file()]
    if not files:
        return ""
    lazy = pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed")
    names = lazy.collect_schema().names()
    if "reject_reason" not in names or "completion" not in names:
        return ""
    by = next((c for c in ("source", "model") if c in names), None)
    cols = ["id", "reject_reason", *([by] if by else []), *(c for c in dict.fromkeys(SPAN_COLUMNS.values()) if c in names)]
    small = lazy.select(cols).collect()
    if by is None:
        small = small.with_columns(pl.lit("all rows").alias("source"))
        by = "source"
    picked = {r["id"] for rows in samples(small, per_reason).values() for r in rows}
    texts = lazy.filter(pl.col("id").is_in(list(picked))).select("id", "completion").collect().unique("id")
    judged = small.join(texts, on="id", how="left").with_columns(pl.col("completion").fill_null(""))
    return quality_section(judged, by, per_reason)
