"""`report.html`: one self-contained page per run with inline SVG plots (no JavaScript, no network).

Plots: the funnel and the reject reasons, trace-length histograms per stage, the language distribution,
per-reward curves and completion length over GRPO steps, pass@k before and after SFT. Each plot is a
`<figure class="plot" data-plot=NAME>`; a plot without data says so (`data-empty="true"` and a
"no data" line naming what is missing) instead of drawing an empty frame.

`collect(run_dir, report)` reads what the plots need (report.json's dict plus the run's parquet files);
`render(data)` is pure, so it can be tested on hand-made data.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from distill.core.storage import read_table
from distill.report.quality import run_quality_section

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
W, H = 560, 260  # plot size in px
M = {"l": 150, "r": 20, "t": 16, "b": 40}  # margins (left wide enough for bar labels)

# the stages whose completions get a length histogram: (plot name, title, file or dir under the run)
LENGTH_STAGES = [
    ("length-sampled", "sampled (all traces)", "traces"),
    ("length-verified", "verified, by verdict", "verified/traces.parquet"),
    ("length-kept", "kept by curation", "curated/kept.parquet"),
    ("length-selected", "selected (rejection policy)", "selected/kept.parquet"),
    ("length-sft", "SFT set (reasoning + non-reasoning)", "sft_data/train.parquet"),
]

# every plot on the page, in order (tests check each is present)
PLOTS = ("funnel", "reject-reasons", *(name for name, _, _ in LENGTH_STAGES), "languages", "lang-share", "grpo-rewards", "grpo-length", "pass-at-k")


# --- data ---------------------------------------------------------------------------------------------


def _token_lengths(path: Path, by_verdict: bool = False) -> list[float] | dict[str, list[float]] | None:
    """Completion lengths in tokens (`completion_tokens`; else UTF-8 bytes / 4, as curation estimates);
    `by_verdict`: split into correct / incorrect / unverifiable."""
    if not path.exists():
        return None
    df = read_table(path) if path.is_dir() else pl.read_parquet(path)
    if by_verdict and "correct" in df.columns:
        parts = {"correct": df.filter(pl.col("correct") == True), "incorrect": df.filter(pl.col("correct") == False),  # noqa: E712
                 "unverifiable": df.filter(pl.col("correct").is_null())}
        return {k: _token_lengths_of(v) or [] for k, v in parts.items()}
    return _token_lengths_of(df)


def _token_lengths_of(df) -> list[float] | None:
    if "completion_tokens" in df.columns:
        return [float(x) for x in df["completion_tokens"].drop_nulls()]
    if "completion" in df.columns:
        col = df["completion"]
        if col.dtype == pl.Utf8:
            return [len(t.encode()) / 4 for t in col.drop_nulls()]
        # message lists (the merged SFT set): the assistant turns' text
        return [sum(len((m.get("content") or "").encode()) for m in msgs) / 4 for msgs in col.to_list() if msgs]
    return None


def _languages(run_dir: Path) -> tuple[dict[str, dict[str, int]], list[float]]:
    """Counts of each trace's target language, kept vs rejected by curation, and every target-language share."""
    counts: dict[str, dict[str, int]] = {}
    shares: list[float] = []
    for part in ("kept", "rejected"):
        p = run_dir / "curated" / f"{part}.parquet"
        if not p.is_file():
            continue
        df = pl.read_parquet(p)
        col = "target_language" if "target_language" in df.columns else "language" if "language" in df.columns else None
        if col:
            for lang, n in df.group_by(col).len().iter_rows():
                counts.setdefault(str(lang), {"kept": 0, "rejected": 0})[part] = int(n)
        if "target_lang_share" in df.columns:
            shares += [float(x) for x in df["target_lang_share"].drop_nulls()]
    return counts, shares


def collect(run_dir: Path, report: dict) -> dict[str, Any]:
    run_dir = Path(run_dir)
    stages = report.get("stages", {})
    verdicts = report.get("verdicts", {})
    mix = report.get("mix", {})

    def rows(stage: str, key: str = "rows_out") -> int | None:
        return stages[stage][key] if stage in stages else None

    funnel = [
        ("training prompts", rows("sample", "rows_in")),
        ("samples generated", rows("sample")),
        ("verified correct", verdicts.get("correct")),
        ("kept by curation", rows("curate")),
        ("selected", rows("select")),
        ("SFT rows: reasoning", mix.get("reasoning_rows")),
        ("SFT rows: non-reasoning", mix.get("non_reasoning_rows")),
    ]
    lengths = {}
    for name, title, rel in LENGTH_STAGES:
        lengths[name] = (title, _token_lengths(run_dir / rel, by_verdict=name == "length-verified"))
    langs, shares = _languages(run_dir)
    return {
        "report": report,
        "funnel": [(k, v) for k, v in funnel if v is not None],
        "reject_reasons": report.get("reject_reasons", {}),
        "lengths": lengths,
        "languages": langs,
        "lang_shares": shares,
        "quality": run_quality_section(run_dir),  # drop rate per source and reason, sampled traces with spans
    }


# --- SVG primitives -----------------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _figure(name: str, title: str, body: str | None, empty_reason: str = "", note: str = "") -> str:
    if body is None:
        return (f'<figure class="plot" data-plot="{_e(name)}" data-empty="true"><figcaption>{_e(title)}</figcaption>'
                f'<div class="nodata">no data: {_e(empty_reason)}</div></figure>')
    note_html = f'<p class="note">{_e(note)}</p>' if note else ""
    return (f'<figure class="plot" data-plot="{_e(name)}" data-empty="false"><figcaption>{_e(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{_e(title)}">{body}</svg>{note_html}</figure>')


def hbars(items: list[tuple[str, float]], color: str = PALETTE[0]) -> str | None:
    """Horizontal bars, one per (label, value), value printed at the bar's end."""
    if not items:
        return None
    top = max(v for _, v in items) or 1
    inner_w = W - M["l"] - M["r"] - 50
    step = (H - M["t"] - 10) / len(items)
    bar_h = max(4.0, min(26.0, step * 0.7))
    out = []
    for i, (label, v) in enumerate(items):
        y = M["t"] + i * step
        w = max(1.0, inner_w * v / top) if v else 0.0
        out.append(f'<text x="{M["l"] - 6}" y="{y + bar_h * 0.75:.1f}" text-anchor="end" class="lbl">{_e(label)}</text>')
        if w:  # a zero gets its label and "0", no bar
            out.append(f'<rect class="mark" x="{M["l"]}" y="{y:.1f}" width="{w:.1f}" height="{bar_h:.1f}" fill="{color}"><title>{_e(label)}: {_e(v)}</title></rect>')
        out.append(f'<text x="{M["l"] + w + 4:.1f}" y="{y + bar_h * 0.75:.1f}" class="val">{_e(_fmt(v))}</text>')
    return "".join(out)


def nice_ticks(lo: float, hi: float, integer: bool = False, most: int = 6) -> list[float]:
    """At most `most` ticks on round values (1, 2 or 5 x 10^k) inside [lo, hi]; whole numbers only when
    `integer` (a count, a step, a token length): a narrow range gets fewer ticks, never a repeated label."""
    span = hi - lo
    if span <= 0:
        return [lo]
    step = 1.0
    for _ in range(2):  # the first guess may still give one tick too many
        raw = span / max(1, most - 1)
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
        if integer:
            step = max(1.0, float(round(step)))
        if math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1 <= most:
            break
        most -= 1
    return [round(i * step, 10) for i in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)] or [lo]


def tick_label(v: float, ticks: list[float]) -> str:
    """`v` with as many decimals as the tick spacing needs, so neighbouring labels differ."""
    step = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{v:,.{decimals}f}" if abs(v) >= 1000 else f"{v:.{decimals}f}"


def _axes(x0: float, x1: float, y0: float, y1: float, xlabel: str, ylabel: str, integer_x: bool = False,
          integer_y: bool = False, legend_w: int = 0) -> tuple[str, Any, Any]:
    """Axes with round ticks; returns (svg, sx, sy) mapping data to pixels. `legend_w`: room kept right of
    the plot area for a legend (drawn by the caller at x = W - M["r"] - legend_w + 10), so it covers no data."""
    left, right, top, bottom = 60, W - M["r"] - legend_w, M["t"], H - M["b"]
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 == y0:  # a flat line: give it room (from 0 up when it is 0, as rewards and rates are)
        y0, y1 = (0.0, 1.0) if y0 == 0 else (y0 - abs(y0) * 0.1, y1 + abs(y1) * 0.1)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    out = [f'<rect class="plotarea" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none"/>',
           f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" class="axis"/>']
    yt = nice_ticks(y0, y1, integer_y, most=5)
    for yv in yt:
        out.append(f'<line x1="{left}" y1="{sy(yv):.1f}" x2="{right}" y2="{sy(yv):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end" class="tick ytick">{_e(tick_label(yv, yt))}</text>')
    xt = nice_ticks(x0, x1, integer_x, most=6)
    for xv in xt:
        out.append(f'<text x="{sx(xv):.1f}" y="{bottom + 14}" text-anchor="middle" class="tick xtick">{_e(tick_label(xv, xt))}</text>')
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{H - 6}" text-anchor="middle" class="axlbl">{_e(xlabel)}</text>')
    out.append(f'<text x="12" y="{(top + bottom) / 2:.0f}" text-anchor="middle" class="axlbl" transform="rotate(-90 12 {(top + bottom) / 2:.0f})">{_e(ylabel)}</text>')
    return "".join(out), sx, sy


def legend_width(labels: list[str]) -> int:
    """Room for a legend column: a swatch and the longest label (~6 px a character at 11 px)."""
    return min(200, 30 + 6 * max((len(t) for t in labels), default=0)) if any(labels) else 0


def legend(entries: list[tuple[str, str]], width: int) -> str:
    """(colour, label) swatches in a column right of the plot area (see `_axes`' legend_w)."""
    x = W - M["r"] - width + 10
    out = ['<g class="legend">']
    for i, (colour, label) in enumerate(entries):
        ly = M["t"] + 4 + 14 * i
        out.append(f'<rect x="{x}" y="{ly}" width="10" height="10" fill="{colour}"/><text x="{x + 15}" y="{ly + 9}" class="lbl">{_e(label)}</text>')
    return "".join(out) + "</g>"


def histogram(values: list[float] | dict[str, list[float]] | None, xlabel: str, bins: int = 20, color: str = PALETTE[0],
              bounds: tuple[float, float] | None = None) -> str | None:
    """A histogram; a dict of series is stacked (one colour each, with a legend beside the plot). `bounds`:
    a fixed x range that values are clamped into (a share: (0, 1)); else the data's."""
    series = values if isinstance(values, dict) else {"": values or []}
    colours = {k: PALETTE[j % len(PALETTE)] for j, k in enumerate(series)}  # fixed per series, drawn or not
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    if bounds:
        series = {k: [min(bounds[1], max(bounds[0], v)) for v in vals] for k, vals in series.items()}
    every = [v for vals in series.values() for v in vals]
    lo, hi = bounds or (min(every), max(every))
    if hi == lo:
        hi = lo + 1
    width = (hi - lo) / bins
    counts = {k: [0] * bins for k in series}
    for k, vals in series.items():
        for v in vals:
            counts[k][min(bins - 1, int((v - lo) / width))] += 1
    entries = [(colours[k], f"{k} ({len(series[k])})") for k in series if k]
    lw = legend_width([t for _, t in entries])
    integer_x = bounds is None and all(float(v).is_integer() for v in every)
    axes, sx, sy = _axes(lo, hi, 0, max(sum(c[i] for c in counts.values()) for i in range(bins)), xlabel, "count",
                         integer_x=integer_x, integer_y=True, legend_w=lw)
    out = [axes]
    base = [0] * bins
    for k, cs in counts.items():
        col = color if len(colours) == 1 else colours[k]
        for i, c in enumerate(cs):
            if not c:
                continue
            x, x2 = sx(lo + i * width), sx(lo + (i + 1) * width)
            y_top, y_bot = sy(base[i] + c), sy(base[i])
            out.append(f'<rect class="mark" x="{x:.1f}" y="{y_top:.1f}" width="{max(1.0, x2 - x - 1):.1f}" height="{y_bot - y_top:.1f}" '
                       f'fill="{col}"><title>{_e(k)} {_fmt(lo + i * width)}–{_fmt(lo + (i + 1) * width)}: {c}</title></rect>')
            base[i] += c
    return "".join(out) + (legend(entries, lw) if entries else "")


def lines(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, integer_x: bool = True) -> str | None:
    """One line with point markers per series; a legend beside the plot area (one series: none, the title says it)."""
    series = {k: [(x, y) for x, y in pts if y is not None and not (isinstance(y, float) and math.isnan(y))] for k, pts in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    lw = legend_width(list(series)) if len(series) > 1 else 0
    axes, sx, sy = _axes(min(xs), max(xs), min(0.0, min(ys)), max(ys), xlabel, ylabel, integer_x, legend_w=lw)
    out = [axes]
    for i, (name, pts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="mark" points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"><title>{_e(name)} @ {_fmt(x)}: {_fmt(y)}</title></circle>')
    return "".join(out) + (legend([(PALETTE[i % len(PALETTE)], name) for i, name in enumerate(series)], lw) if lw else "")


# --- page ---------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.grid2{display:flex;flex-wrap:wrap;gap:12px}
figure.plot{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px;background:#fff}
figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
.nodata{width:540px;height:60px;display:flex;align-items:center;justify-content:center;color:#888;background:#f7f7f7;font-style:italic}
svg text{font-size:11px;fill:#333}svg .tick{fill:#666;font-size:10px}svg .axlbl{fill:#444}
svg .axis{stroke:#888}svg .grid{stroke:#eee}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.note{font-size:12px;color:#666;margin:4px 0 0}
"""


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pass_at_k_series(ev: dict) -> dict[str, list[tuple[float, float]]]:
    series = {}
    for name, r in ev.items():
        curve = r.get("pass@k")  # {"1": p, "2": p, ...} (distill.evaluate); older results: pass@1 only
        pts = sorted((int(k), float(v)) for k, v in curve.items()) if curve else [(1, float(r["pass@1"]))]
        series[name] = pts
    return series


def render(data: dict[str, Any]) -> str:
    rep = data["report"]
    recipe = rep.get("recipe", {})
    t = rep.get("teacher", {})
    ev = rep.get("eval", {})
    figs: dict[str, list[str]] = {}

    figs["Funnel"] = [
        _figure("funnel", "Rows through the pipeline", hbars([(k, float(v)) for k, v in data["funnel"]]),
                "no stage manifests in this run"),
        _figure("reject-reasons", "Rejected traces by primary reason",
                hbars(sorted(((k, float(v)) for k, v in data["reject_reasons"].items() if v), key=lambda kv: -kv[1]), PALETTE[3]),
                "curation rejected nothing" if "curate" in rep.get("stages", {}) else "no curation in this run"),
    ]
    figs["Trace length per stage (tokens)"] = [
        _figure(name, title, histogram(vals, "completion tokens", color=PALETTE[i % len(PALETTE)]),
                "stage not run" if vals is None else "no rows at this stage")
        for i, (name, (title, vals)) in enumerate(data["lengths"].items())
    ]
    langs = data["languages"]
    lang_items = [(f"{lang} ({part})", float(c[part])) for lang, c in sorted(langs.items()) for part in ("kept", "rejected") if c[part]]
    figs["Language"] = [
        _figure("languages", "Traces per target language, kept / rejected by curation", hbars(lang_items, PALETTE[4]),
                "no curated traces"),
        _figure("lang-share", "Share of each trace in its target language", histogram(data["lang_shares"], "target-language share", bins=20, color=PALETTE[2], bounds=(0.0, 1.0)),
                "no curated traces with a language share"),
    ]
    rc = {name: list(enumerate(vals, 1)) for name, vals in (t.get("reward_curves") or {}).items()}
    if t.get("reward_curve"):
        rc = {"mean (weighted sum)": list(enumerate(t["reward_curve"], 1)), **rc}
    why = "the teacher was not trained in this run (no GRPO history)" if not t.get("trained") else "the GRPO run logged no steps"
    figs["Teacher (GRPO)"] = [
        _figure("grpo-rewards", "Reward per GRPO step, per reward function", lines(rc, "GRPO step", "mean reward"), why),
        _figure("grpo-length", "Mean completion length per GRPO step",
                lines({"completion length": list(enumerate(t.get("completion_length_curve") or [], 1))}, "GRPO step", "tokens"), why),
    ]
    figs["Evaluation"] = [
        _figure("pass-at-k", "pass@k on held-out prompts: teacher, student before and after SFT",
                lines(_pass_at_k_series(ev), "k (samples per prompt)", "pass@k"), "evaluation did not run",
                note="unbiased pass@k from k samples per prompt (Chen et al. 2021); pass@1 is the mean over samples"),
    ]

    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>r1-distill run {_e(recipe.get('name'))}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>r1-distill run <code>{_e(recipe.get('name'))}</code></h1>",
             f"<p>Recipe hash <code>{_e(recipe.get('hash'))}</code>; created {_e(rep.get('created_at'))}; "
             f"{_e(rep.get('total_seconds'))} s of stage time this pass.</p>"]
    stages = rep.get("stages", {})
    parts.append("<h2>Stages</h2>" + _table(["stage", "rows in", "rows out", "seconds", "reused"],
                                            ([k, s["rows_in"], s["rows_out"], s["seconds"], "yes" if s.get("cached") else ""] for k, s in stages.items())))
    for section, items in figs.items():
        parts.append(f"<h2>{_e(section)}</h2><div class=\"grid2\">{''.join(items)}</div>")
        if section == "Evaluation" and ev:
            parts.append(_table(["model", "pass@1", "95% CI", "cons@k", "format rate", "prompts", "k"],
                                ([n, r.get("pass@1"), r.get("pass@1_ci95"), next((v for key, v in r.items() if key.startswith("cons@")), ""),
                                  r.get("format_rate"), r.get("n_prompts"), r.get("k")] for n, r in ev.items())))
    g = rep.get("generation") or {}
    if g:
        parts.append("<h2>Generation</h2>" + _table(["engine", "tokens", "tok/s", "GPU-hours", "cost USD", "accepted samples"],
                                                    [[g.get("engine"), g.get("total_completion_tokens", g.get("completion_tokens")), g.get("tokens_per_second"),
                                                      g.get("gpu_hours"), g.get("cost_usd"), g.get("accepted_samples")]]))
    parts.append(data.get("quality", ""))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(run_dir: Path, report: dict) -> Path:
    path = Path(run_dir) / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(collect(Path(run_dir), report)), encoding="utf-8")
    tmp.replace(path)
    return path
