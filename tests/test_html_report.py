"""report.html: every plot drawn from a real run and checked in headless Chromium (Debian's package);
the no-data state on hand-made data; progress bars with ETA in the terminal output of a run."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distill.evaluate.evaluate import pass_at_k, pass_at_k_curve
from distill.report.html import PLOTS, render


class Plots(HTMLParser):
    """Each `figure.plot`: its name, data-empty flag, and the marks drawn inside its SVG with their sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, dict] = {}
        self._current: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "plot" in (a.get("class") or "").split():
            self._current = a["data-plot"]
            self.plots[self._current] = {"empty": a.get("data-empty"), "svg": False, "marks": [], "nodata": False}
        elif self._current and tag == "svg":
            self.plots[self._current]["svg"] = True
        elif self._current and "mark" in (a.get("class") or "").split():
            self.plots[self._current]["marks"].append((tag, a))
        elif self._current and a.get("class") == "nodata":
            self.plots[self._current]["nodata"] = True

    def handle_endtag(self, tag):
        if tag == "figure":
            self._current = None


def parse(html: str) -> dict[str, dict]:
    p = Plots()
    p.feed(html)
    return p.plots


def mark_has_size(tag: str, a: dict) -> bool:
    if tag == "rect":
        return float(a["width"]) > 0 and float(a["height"]) > 0
    if tag == "circle":
        return float(a["r"]) > 0
    if tag == "polyline":
        return len(a["points"].split()) >= 1
    return False


def synthetic(empty: bool) -> dict:
    report = {
        "recipe": {"name": "hand-made", "hash": "0" * 16},
        "created_at": "2026-01-01T00:00:00Z",
        "stages": {} if empty else {"curate": {"rows_in": 10, "rows_out": 6, "seconds": 1.0, "cached": False}},
        "teacher": {} if empty else {"trained": True, "reward_curve": [0.1, 0.4, 0.5], "reward_curves": {"accuracy": [0.0, 0.3, 0.4], "format": [0.2, 0.2, 0.2]},
                                     "completion_length_curve": [60, 48, 40]},
        "eval": {} if empty else {"student_before": {"pass@1": 0.2, "pass@k": {"1": 0.2, "2": 0.35, "4": 0.5}},
                                  "student_after": {"pass@1": 0.6, "pass@k": {"1": 0.6, "2": 0.75, "4": 0.9}}},
    }
    lengths = {"length-sampled": ("sampled", None if empty else [10, 20, 30, 30]),
               "length-verified": ("verified", None if empty else {"correct": [10, 20], "incorrect": [30], "unverifiable": []}),
               "length-kept": ("kept", [] if empty else [10, 20]), "length-selected": ("selected", None if empty else [10]),
               "length-sft": ("sft", None if empty else [5, 50])}
    return {"report": report, "funnel": [] if empty else [("samples generated", 10), ("kept by curation", 6)],
            "reject_reasons": {} if empty else {"language_mixing": 3, "truncated": 1, "repetition": 0},
            "lengths": lengths, "languages": {} if empty else {"en": {"kept": 6, "rejected": 3}, "zh": {"kept": 0, "rejected": 1}},
            "lang_shares": [] if empty else [1.0, 0.95, 0.4]}


def test_render_draws_every_plot_from_data():
    plots = parse(render(synthetic(empty=False)))
    assert tuple(plots) == PLOTS
    for name, p in plots.items():
        assert p["empty"] == "false" and p["svg"], name
        assert p["marks"] and all(mark_has_size(t, a) for t, a in p["marks"]), name
    # stacked verdicts: one bar segment per non-empty (bin, verdict)
    assert len(plots["length-verified"]["marks"]) == 3
    # 2 pass@k lines of 3 points: a polyline and 3 circles each
    assert [t for t, _ in plots["pass-at-k"]["marks"]].count("circle") == 6
    assert len(plots["reject-reasons"]["marks"]) == 2  # zero counts are not drawn


def test_render_says_no_data_instead_of_an_empty_frame():
    html = render(synthetic(empty=True))
    plots = parse(html)
    assert tuple(plots) == PLOTS
    for name, p in plots.items():
        assert p["empty"] == "true" and p["nodata"] and not p["svg"] and not p["marks"], name
    assert "no data: the teacher was not trained in this run" in html
    assert "no data: stage not run" in html and "no data: no rows at this stage" in html


def test_pass_at_k_is_unbiased_and_monotone():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    curve = pass_at_k_curve([(4, 1), (4, 0), (4, 2)], 4)
    assert list(curve) == ["1", "2", "3", "4"]
    assert curve["1"] == pytest.approx((0.25 + 0 + 0.5) / 3, abs=1e-4)
    assert all(curve[str(k)] <= curve[str(k + 1)] for k in range(1, 4))
    assert pass_at_k_curve([(2, 1), (4, 1)], 4).keys() == {"1", "2"}  # up to the fewest samples per prompt


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian's chromium is needed to render report.html: scripts/setup.sh installs it (apt-get install chromium)")
    return exe


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_every_plot(tiny_run):
    run_dir: Path = tiny_run["run_dir"]
    page = (run_dir / "report.html").resolve()
    assert page.is_file()
    assert not re.search(r"<script|https?://(?!www\.w3\.org/2000/svg)", page.read_text()), "the page must be self-contained"
    exe = chromium()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={run_dir / '.chromium'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    plots = parse(dom.stdout)  # the DOM as Chromium built it, not the file we wrote
    assert tuple(plots) == PLOTS
    for name, p in plots.items():
        assert p["empty"] == "false", f"plot {name} has no data in the tiny run"
        assert p["svg"] and p["marks"] and all(mark_has_size(t, a) for t, a in p["marks"]), name

    shot = run_dir / "report.png"
    out = subprocess.run([*flags, "--window-size=1200,3200", f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 3200)
    # the plots' fill colours are on the page: the palette's blue (funnel) and red (reject reasons)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert (0x4E, 0x79, 0xA7) in colours and (0xE1, 0x57, 0x59) in colours


@pytest.mark.slow
def test_long_stages_show_progress_bars_with_eta(tiny_run):
    text = tiny_run["log"].replace("\r", "\n")
    eta = r"\[\d\d:\d\d<\d\d:\d\d"  # elapsed<remaining
    for desc in ("sample traces", "curate: score", "curate: judge and write", "eval teacher/", "eval student_before/", "eval student_after/"):
        assert re.search(rf"{re.escape(desc)}[^:\n]*: +\d+%\|.*{eta}", text), f"no progress bar with ETA for {desc!r}"
    # the trainers' own bars (cold start, GRPO, SFT): step counters with ETA, no description
    assert len(set(re.findall(rf"^ *100%\|[^|]*\| (\d+/\d+) {eta}", text, re.M))) >= 2


# --- chart geometry: ticks, share axis, legends (issue 17) ------------------------------------------------------


def svg_of(html: str, plot: str) -> str:
    m = re.search(rf'data-plot="{plot}".*?<svg(.*?)</svg>', html, re.S)
    assert m, f"no svg in plot {plot}"
    return m.group(1)


def ticks(svg: str, axis: str) -> list[str]:
    """Tick labels: under the x axis centred, left of the y axis right-aligned."""
    anchor = {"x": "middle", "y": "end"}[axis]
    return re.findall(rf'text-anchor="{anchor}" class="tick[^"]*">([^<]*)<', svg)


def test_tick_labels_are_unique_and_whole_numbers_on_a_narrow_integer_range():
    data = synthetic(empty=False)
    data["lengths"]["length-sampled"] = ("sampled", [44.0, 44.0, 45.0, 46.0, 46.0, 45.0, 44.0])  # 44 44 45 46 46 before
    html = render(data)
    for name in PLOTS:
        svg = svg_of(html, name)
        for axis in ("x", "y"):
            labels = ticks(svg, axis)
            assert len(labels) == len(set(labels)), (name, axis, labels)
    assert ticks(svg_of(html, "length-sampled"), "x") == ["44", "45", "46"]
    # counts are whole numbers: no 0.5 on a count axis
    assert all(float(t).is_integer() for t in ticks(svg_of(html, "length-sampled"), "y"))


def test_language_share_axis_stays_within_zero_and_one():
    data = synthetic(empty=False)
    data["lang_shares"] = [1.0, 1.0, 1.0]  # every trace all in its language: the axis ran 1..2 before
    svg = svg_of(render(data), "lang-share")
    xs = [float(t) for t in ticks(svg, "x")]
    assert xs and max(xs) <= 1.0 and min(xs) >= 0.0
    data["lang_shares"] = [1.0000001, -0.2, 0.5]  # out-of-range noise is clamped, not widening the axis
    assert max(float(t) for t in ticks(svg_of(render(data), "lang-share"), "x")) <= 1.0


def plot_and_legend_boxes(svg: str) -> tuple[tuple[float, float, float, float], list[float]]:
    area = re.search(r'<rect class="plotarea" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', svg)
    assert area, "no plot area"
    leg = re.search(r'<g class="legend">(.*?)</g>', svg, re.S)
    assert leg, "no legend"
    return tuple(float(v) for v in area.groups()), [float(x) for x in re.findall(r'<rect x="([\d.]+)"', leg.group(1))]


@pytest.mark.parametrize("plot", ["grpo-rewards", "pass-at-k", "length-verified"])
def test_legends_sit_outside_the_plot_area(plot):
    svg = svg_of(render(synthetic(empty=False)), plot)
    (x, _, w, _), legend_xs = plot_and_legend_boxes(svg)
    assert legend_xs and min(legend_xs) >= x + w, (plot, x + w, legend_xs)
    # every mark lies inside the plot area
    for cx in re.findall(r'<circle class="mark" cx="([\d.]+)"', svg):
        assert x <= float(cx) <= x + w


BOXES_JS = """<script>
const out = [];
document.querySelectorAll('figure.plot svg').forEach(svg => {
  const a = svg.querySelector('rect.plotarea'), g = svg.querySelector('g.legend');
  if (!a || !g) return;
  const A = a.getBBox(), L = g.getBBox(), W = svg.viewBox.baseVal.width;
  out.push([svg.closest('figure').dataset.plot, A.x, A.y, A.width, A.height, L.x, L.y, L.width, L.height, W].join(','));
});
document.body.setAttribute('data-boxes', out.join(';'));
</script>"""


@pytest.mark.slow
def test_rendered_legends_clear_the_plot_area_and_ticks_are_unique(tiny_run):
    """Chromium's own text metrics: each legend's box lies right of its plot area and inside the SVG."""
    run_dir: Path = tiny_run["run_dir"]
    html = (run_dir / "report.html").read_text()
    for name in PLOTS:
        if f'data-plot="{name}" data-empty="false"' in html:
            for axis in ("x", "y"):
                labels = ticks(svg_of(html, name), axis)
                assert len(labels) == len(set(labels)), (name, axis, labels)
    probe = run_dir / ".boxes.html"
    probe.write_text(html.replace("</body>", BOXES_JS + "</body>"))
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={run_dir / '.chromium-boxes'}"]
    dom = subprocess.run([*flags, "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    boxes = re.search(r'data-boxes="([^"]*)"', dom.stdout).group(1).split(";")
    names = {b.split(",")[0] for b in boxes}
    assert {"grpo-rewards", "pass-at-k"} <= names, names
    for b in boxes:
        name, *v = b.split(",")
        ax, ay, aw, ah, lx, ly, lw, lh, width = map(float, v)
        assert lx >= ax + aw, f"{name}: legend starts at {lx}, inside the plot area (right edge {ax + aw})"
        assert lx + lw <= width + 0.5, f"{name}: legend runs past the SVG ({lx + lw} > {width})"
